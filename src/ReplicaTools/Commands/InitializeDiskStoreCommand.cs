using System.Management.Automation;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsData.Initialize, "DiskStore", SupportsShouldProcess = true)]
[OutputType(typeof(DiskStore))]
public sealed class InitializeDiskStoreCommand : HostCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("FullName")]
    public string Path { get; set; } = string.Empty;

    protected override void ProcessRecord()
    {
        if (!HasArgument(Path, nameof(Path)))
        {
            return;
        }

        var session = ResolveSession();
        var path = StorageCmdletHelpers.ResolvePath(this, session, Path);
        var service = DiskStoreService.For(session);
        var plan = TryRun(token => service.PlanInitializeAsync(path, token), path);
        if (plan is null || !ShouldProcess(plan.Target, StorageCmdletHelpers.Describe(plan, "Create a btrfs subvolume for disk images with No_COW")))
        {
            return;
        }

        var store = TryRun(token => service.InitializeAsync(plan, token), path);
        if (store is not null)
        {
            WriteObject(store);
        }
    }
}
