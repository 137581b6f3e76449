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
        var session = ResolveSession();
        var backend = OpenBackend(session);
        if (!ShouldProcess(TargetName(session), "Resume the mirror job"))
        {
            return;
        }

        var job = TryRun(token => backend.ResumeAsync(DriveOrNull, token), TargetName(session));
        if (job is not null && PassThru)
        {
            WriteObject(job);
        }
    }
}
