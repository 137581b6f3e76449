using System.Management.Automation;
using ReplicaTools.Core.Mirror;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "DriveMirror")]
[OutputType(typeof(DriveMirrorJob))]
public sealed class GetDriveMirrorCommand : MirrorCmdlet
{
    /// <summary>Skip the 2-second second look (and destination probe) that tells a stalled copy from a running one.</summary>
    [Parameter]
    public SwitchParameter NoStallCheck { get; set; }

    protected override void ProcessRecord()
    {
        var backend = OpenBackend();
        var target = TargetName(backend.VirtualMachine.Target);
        var jobs = TryRun(token => backend.GetAsync(DriveOrNull, !NoStallCheck, token), target);
        if (jobs is null)
        {
            return;
        }

        if (jobs.Count == 0 && DriveOrNull is not null)
        {
            WriteError(ToErrorRecord(new ReplicaTools.Core.ReplicaException("MirrorNotFound", ReplicaTools.Core.ReplicaErrorCategory.ObjectNotFound,
                $"{target} has no mirror job.", backend.VirtualMachine.Host.Name, target)));
            return;
        }

        foreach (var job in jobs)
        {
            WarnIfUnhealthy(job);
            WriteObject(job);
        }
    }
}
