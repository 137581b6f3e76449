using System.Management.Automation;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Remove, "DiskStoreCheckpoint", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class RemoveDiskStoreCheckpointCommand : HostCmdlet
{
    /// <summary>The checkpoint (snapshot) path, as Get-DiskStoreCheckpoint outputs it.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    public string[] Path { get; set; } = Array.Empty<string>();

    protected override void ProcessRecord()
    {
        if (!HasArgument(Path, nameof(Path)))
        {
            return;
        }

        var session = ResolveSession();
        var service = DiskStoreService.For(session);
        foreach (var item in Path)
        {
            var path = StorageCmdletHelpers.ResolvePath(this, session, item);
            var plan = TryRun(token => service.PlanRemoveCheckpointAsync(path, token), path);
            if (plan is not null && ShouldProcess(plan.Target, StorageCmdletHelpers.Describe(plan, "Delete the read-only checkpoint")))
            {
                TryRun(token => service.RemoveCheckpointAsync(plan, token), path);
            }
        }
    }
}
