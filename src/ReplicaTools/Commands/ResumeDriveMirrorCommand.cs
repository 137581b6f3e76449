using System.Management.Automation;
using ReplicaTools.Core.Mirror;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Resume, "DriveMirror", SupportsShouldProcess = true)]
[OutputType(typeof(DriveMirrorJob))]
public sealed class ResumeDriveMirrorCommand : MirrorCmdlet
{
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        var backend = OpenBackend();
        var target = TargetName(backend.VirtualMachine.Target);
        if (!ShouldProcess(target, "Resume the mirror job"))
        {
            return;
        }

        var job = TryRun(token => backend.ResumeAsync(DriveOrNull, token), target);
        if (job is not null && PassThru)
        {
            WriteObject(job);
        }
    }
}
