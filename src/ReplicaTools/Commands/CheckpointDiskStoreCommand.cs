using System.Management.Automation;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsData.Checkpoint, "DiskStore", SupportsShouldProcess = true)]
[OutputType(typeof(DiskStoreCheckpoint))]
public sealed class CheckpointDiskStoreCommand : HostCmdlet
{
    /// <summary>The store (a btrfs subvolume).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("FullName")]
    public string Path { get; set; } = string.Empty;

    /// <summary>Where the snapshot goes (default: the sibling directory STORE.checkpoints).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? CheckpointDirectory { get; set => field = Given(value); }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Path, nameof(Path)))
        {
            return;
        }

        var session = ResolveSession();
        var path = StorageCmdletHelpers.ResolvePath(this, session, Path);
        var directory = CheckpointDirectory is null ? null : StorageCmdletHelpers.ResolvePath(this, session, CheckpointDirectory);
        var service = DiskStoreService.For(session);
        var plan = TryRun(token => service.PlanCheckpointAsync(path, directory, null, token), path);
        if (plan is null || !ShouldProcess(plan.Target, StorageCmdletHelpers.Describe(plan, $"Take the read-only snapshot {plan.CheckpointPath}")))
        {
            return;
        }

        var checkpoint = TryRun(token => service.CheckpointAsync(plan, token), path);
        if (checkpoint is not null)
        {
            WriteObject(checkpoint);
        }
    }
}
