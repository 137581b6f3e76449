using System.Management.Automation;
using ReplicaTools.Core.Mirror;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Suspend, "DriveMirror", SupportsShouldProcess = true)]
[OutputType(typeof(DriveMirrorJob))]
public sealed class SuspendDriveMirrorCommand : MirrorCmdlet
{
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        var backend = OpenBackend();
        var target = TargetName(backend.VirtualMachine.Target);
        if (!ShouldProcess(target, "Pause the mirror job (guest writes are still tracked)"))
        {
            return;
        }

        var job = TryRun(token => backend.SuspendAsync(DriveOrNull, token), target);
        if (job is not null && PassThru)
        {
            WriteObject(job);
        }
    }
}
