using System.Management.Automation;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "DiskStoreCheckpoint")]
[OutputType(typeof(DiskStoreCheckpoint))]
public sealed class GetDiskStoreCheckpointCommand : HostCmdlet
{
    /// <summary>The store whose checkpoints to list.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("FullName")]
    public string Path { get; set; } = string.Empty;

    [Parameter(Position = 1)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[]? Name { get; set; }

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
        var checkpoints = TryRun(token => service.GetCheckpointsAsync(path, directory, token), path);
        if (checkpoints is null)
        {
            return;
        }

        var selection = new WildcardSelection(Name, "CheckpointNotFound",
            name => $"On host '{session.Host.Name}', the store '{path}' has no checkpoint named '{name}'. Get-DiskStoreCheckpoint -Path {path} lists them.");
        WriteObject(selection.Select(this, checkpoints, c => c.Name), enumerateCollection: true);
    }
}
