using System.Management.Automation;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Remove, "DiskImage", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class RemoveDiskImageCommand : HostCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    [Alias("FullName")]
    public string[] Path { get; set; } = Array.Empty<string>();

    /// <summary>Remove an image even when a running QEMU holds its lock.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Path, nameof(Path)))
        {
            return;
        }

        var session = ResolveSession();
        var service = DiskImageService.For(session);
        foreach (var item in Path)
        {
            var path = StorageCmdletHelpers.ResolvePath(this, session, item);
            var plan = TryRun(token => service.PlanRemoveAsync(path, Force, token), path);
            if (plan is null)
            {
                continue;
            }

            var what = plan.InUse ? "Remove the image although a running QEMU holds it (-Force)" : "Remove the image";
            if (ShouldProcess(plan.Target, StorageCmdletHelpers.Describe(plan, what)))
            {
                TryRun(token => service.RemoveAsync(plan, token), path);
            }
        }
    }
}
