using System.Management.Automation;
using ReplicaTools.Core.Mirror;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Wait, "DriveMirror")]
[OutputType(typeof(DriveMirrorJob))]
public sealed class WaitDriveMirrorCommand : MirrorCmdlet
{
    /// <summary>Give up after this many seconds (the job keeps running). 0 = wait as long as the copy progresses.</summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int TimeoutSeconds { get; set; }

    /// <summary>No progress for this many seconds ends the wait with a MirrorStalled error, even if the destination answers.</summary>
    [Parameter]
    [ValidateRange(5, int.MaxValue)]
    public int StallTimeoutSeconds { get; set; } = 120;

    protected override void ProcessRecord()
    {
        var backend = OpenBackend();
        var target = TargetName(backend.VirtualMachine.Target);
        var options = new MirrorWaitOptions
        {
            Timeout = TimeoutSeconds > 0 ? TimeSpan.FromSeconds(TimeoutSeconds) : null,
            StallTimeout = TimeSpan.FromSeconds(StallTimeoutSeconds),
            ProbeAfter = TimeSpan.FromSeconds(Math.Min(10, StallTimeoutSeconds)),
        };
        var job = TryRun(token => backend.WaitAsync(DriveOrNull, options, token), target);
        if (job is not null)
        {
            WriteObject(job);
        }
    }
}
