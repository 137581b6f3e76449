using System.Management.Automation;
using ReplicaTools.Core.Qemu;

namespace ReplicaTools;

/// <summary>
/// A cmdlet that acts on a drive of a VM: the only place that declares -VMName, -LibvirtUri (parameter set Libvirt),
/// -QmpSocket (parameter set Qmp) and -Drive. All bind by property name, so every output that describes a VM
/// (<see cref="VmObject"/>) pipes in: it carries exactly one of VMName and QmpSocket, and the binder picks the set
/// from the one that is set. There is no default set on purpose: it would be preferred while binding piped objects and
/// make the null one of the two bind as well.
/// </summary>
public abstract class VmCmdlet : HostCmdlet
{
    /// <summary>A libvirt domain: -VMName (and -LibvirtUri).</summary>
    public const string LibvirtSet = "Libvirt";

    /// <summary>A bare QEMU: -QmpSocket.</summary>
    public const string QmpSet = "Qmp";

    /// <summary>The libvirt domain.</summary>
    [Parameter(ParameterSetName = LibvirtSet, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("Domain")]
    public string? VMName { get; set; }

    /// <summary>The libvirt connection URI on the VM host (default qemu:///system).</summary>
    [Parameter(ParameterSetName = LibvirtSet, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string? LibvirtUri { get; set; }

    /// <summary>The QMP socket of a bare QEMU, on the VM host.</summary>
    [Parameter(ParameterSetName = QmpSet, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string? QmpSocket { get; set; }

    /// <summary>The drive (libvirt target, QEMU device id or node name); null or empty for the VM's only disk.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string? Drive { get; set; }

    protected string? DriveOrNull => string.IsNullOrEmpty(Drive) ? null : Drive;

    /// <summary>
    /// The VM this invocation targets, per the one rule (<see cref="VmTarget.FromParameters"/>). A parameter mistake is
    /// a terminating error: the same mistake would repeat for every piped object.
    /// </summary>
    protected VmTarget ResolveVm()
    {
        var session = ResolveSession();
        try
        {
            var target = VmTarget.FromParameters(session, VMName, QmpSocket, LibvirtUri);
            WriteVerbose($"Target: {target.DisplayName}, drive '{DriveOrNull ?? "(its only disk)"}'.");
            return target;
        }
        catch (ArgumentException ex)
        {
            ThrowTerminating(ex, string.IsNullOrEmpty(VMName) ? QmpSocket : VMName);
            throw;
        }
    }

    /// <summary>The VM this invocation targets, opened (<see cref="ResolveVm"/>).</summary>
    protected VirtualMachine OpenVm() => ResolveVm().Open();

    /// <summary>How -WhatIf and errors name the VM and drive: "vm1:vda on kvm1".</summary>
    protected string TargetName(VmTarget vm) => $"{vm.Name}{(DriveOrNull is null ? string.Empty : ":" + DriveOrNull)} on {vm.Session.Host.Name}";
}
