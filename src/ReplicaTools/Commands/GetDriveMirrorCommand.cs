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
        var session = ResolveSession();
        var backend = OpenBackend(session);
        var jobs = TryRun(token => backend.GetAsync(DriveOrNull, !NoStallCheck, token), TargetName(session));
        if (jobs is null)
        {
            return;
        }

        if (jobs.Count == 0 && DriveOrNull is not null)
        {
            WriteError(ToErrorRecord(new ReplicaTools.Core.ReplicaException("MirrorNotFound", ReplicaTools.Core.ReplicaErrorCategory.ObjectNotFound,
                $"{TargetName(session)} has no mirror job.", session.Host.Name, TargetName(session))));
            return;
        }

        foreach (var job in jobs)
        {
            WarnIfUnhealthy(job);
            WriteObject(job);
        }
    }
}
