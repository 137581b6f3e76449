using System.Management.Automation;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsData.ConvertTo, "LibvirtDiskXml")]
[OutputType(typeof(LibvirtDiskXml))]
public sealed class ConvertToLibvirtDiskXmlCommand : ReplicaCmdlet
{
    /// <summary>nbd:// or iscsi:// URI: the Uri of a ReplicatedDisk, NbdExport or IscsiTarget.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Uri { get; set; } = string.Empty;

    [Parameter]
    public LibvirtDiskBus Bus { get; set; } = LibvirtDiskBus.Virtio;

    /// <summary>The guest device name; default the first free name of the bus given -UsedTargetDev.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? TargetDev { get; set; }

    /// <summary>Device names the VM already has (e.g. vda), so the default -TargetDev is the next free one.</summary>
    [Parameter]
    public string[] UsedTargetDev { get; set; } = Array.Empty<string>();

    /// <summary>The iSCSI initiator IQN the VM's QEMU logs in with (one of a target's allowed names).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    public string[]? InitiatorName { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Uri, nameof(Uri)))
        {
            return;
        }

        var initiator = InitiatorOf(this, Uri, InitiatorName);
        LibvirtDiskXml disk;
        try
        {
            disk = LibvirtDiskXmlBuilder.FromUri(Uri, Bus, TargetDev, UsedTargetDev, initiator);
        }
        catch (ArgumentException ex)
        {
            WriteError(ToErrorRecord(ex, Uri));
            return;
        }

        // libvirt's own schema has the last word; without virt-xml-validate here, say the check was skipped.
        string? complaint;
        try
        {
            complaint = Run(token => LibvirtDiskXmlBuilder.ValidateAsync(LocalHost.Instance, disk, token));
        }
        catch (ProgramNotFoundException)
        {
            WriteWarning("virt-xml-validate is not installed on this machine (package libvirt-clients); the element was not checked against libvirt's schema.");
            complaint = null;
        }

        if (complaint is not null)
        {
            WriteError(new ErrorRecord(new InvalidDataException($"libvirt's schema (virt-xml-validate) rejects the disk element for {Uri}: {complaint}"), "LibvirtDiskXmlInvalid", ErrorCategory.InvalidData, disk.Xml));
            return;
        }

        WriteObject(disk);
    }

    /// <summary>
    /// The initiator name for an iSCSI URI from -InitiatorName (an IscsiTarget's allow list binds here): none for NBD or
    /// an open target, the one name given, and a clear error when a list of several leaves the choice open.
    /// </summary>
    internal static string? InitiatorOf(ReplicaCmdlet cmdlet, string uri, string[]? names)
    {
        var given = names?.Where(n => !string.IsNullOrEmpty(n)).Distinct().ToArray() ?? Array.Empty<string>();
        if (!uri.StartsWith("iscsi://", StringComparison.OrdinalIgnoreCase) || given.Length == 0)
        {
            return null;
        }

        if (given.Length > 1)
        {
            cmdlet.ThrowTerminatingError(new ErrorRecord(
                new ArgumentException($"The target allows several initiators ({string.Join(", ", given)}); give -InitiatorName with the one the VM's host logs in as."),
                "InitiatorNameAmbiguous", ErrorCategory.InvalidArgument, given));
        }

        return given[0];
    }
}
