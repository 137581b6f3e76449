using System.Management.Automation;
using ReplicaTools.Core.Libvirt;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsData.Mount, "ReplicatedDisk", SupportsShouldProcess = true)]
[OutputType(typeof(AttachedDisk))]
public sealed class MountReplicatedDiskCommand : VmCmdlet
{
    /// <summary>nbd:// or iscsi:// URI of the export: the Uri of a ReplicatedDisk (or NbdExport, IscsiTarget, LibvirtDiskXml).</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Uri { get; set; } = string.Empty;

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public LibvirtDiskBus Bus { get; set; } = LibvirtDiskBus.Virtio;

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    public string[]? InitiatorName { get; set; }

    /// <summary>Also add the disk to the domain's persistent definition (virsh attach-device --config).</summary>
    [Parameter]
    public SwitchParameter Config { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Uri, nameof(Uri)))
        {
            return;
        }

        var vm = OpenVm();
        var initiator = ConvertToLibvirtDiskXmlCommand.InitiatorOf(this, Uri, InitiatorName);
        var plan = TryRun(token => NetworkDiskAttacher.PlanAsync(vm, Uri, Bus, DriveOrNull, initiator, Config, token), Uri);
        if (plan is null)
        {
            return;
        }

        if (plan.Step is null)
        {
            WriteVerbose(plan.Describe());
        }
        else if (!ShouldProcess($"{vm.DisplayName}, new drive {plan.Disk.TargetDev}", $"Attach {Uri} with this command:{Environment.NewLine}{plan.Describe()}"))
        {
            return;
        }

        var attached = TryRun(token => NetworkDiskAttacher.AttachAsync(plan, token), Uri);
        if (attached is not null)
        {
            WriteObject(attached);
        }
    }
}
