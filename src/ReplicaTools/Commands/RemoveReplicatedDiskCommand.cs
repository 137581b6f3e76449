using System.Management.Automation;
using ReplicaTools.Core.Drbd;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Remove, "ReplicatedDisk", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class RemoveReplicatedDiskCommand : ReplicatedDiskCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Name { get; set; } = string.Empty;

    /// <summary>Also erase DRBD's metadata from the backing disks.</summary>
    [Parameter]
    public SwitchParameter WipeMetadata { get; set; }

    /// <summary>Remove the iSCSI target even while initiators are logged in.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Name, nameof(Name)))
        {
            return;
        }

        var hosts = StorageHosts;
        var plan = TryRun(token => Manager.PlanRemoveAsync(hosts, Name, WipeMetadata, Force, token), Name);
        if (plan is null)
        {
            return;
        }

        WriteWarnings(plan);
        if (ShouldProcess($"replicated disk '{Name}'", Action(WipeMetadata ? "Remove it and wipe its DRBD metadata" : "Remove it (the backing disks keep their data and DRBD metadata)", plan)))
        {
            TryRun(token => Manager.RunAsync(plan, token), Name);
        }
    }
}
