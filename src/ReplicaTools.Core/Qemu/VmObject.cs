using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Qemu;

/// <summary>
/// Base of every output that describes a drive of a VM (mirror jobs, clone results, checkpoints, failover start
/// results, and the disks of features to come): the identity properties by which it pipes into every VM cmdlet
/// (-Session, -HostName, -VMName or -QmpSocket, -LibvirtUri, -Drive), with one meaning everywhere. Exactly one of
/// <see cref="VMName"/> and <see cref="QmpSocket"/> is set; the other is null, so it binds nothing.
/// </summary>
public abstract record VmObject
{
    protected VmObject(VmTarget target)
    {
        ArgumentNullException.ThrowIfNull(target);
        Target = target;
    }

    /// <summary>The libvirt domain; null for a bare QEMU.</summary>
    public string? VMName => Target.VMName;

    /// <summary>The QMP socket path of a bare QEMU; null for a libvirt domain.</summary>
    public string? QmpSocket => Target.QmpSocket;

    /// <summary>The libvirt connection URI on the VM host (libvirt only; the default URI spelt out).</summary>
    public string? LibvirtUri => Target.LibvirtUri;

    /// <summary>The drive: the libvirt target (vda) or the QEMU device id (virtio0).</summary>
    public required string Drive { get; init; }

    public VmBackend Backend => Target.Backend;

    /// <summary>The VM host's session.</summary>
    public ReplicaSession Session => Target.Session;

    /// <summary>The VM host ("localhost" for this machine).</summary>
    public string HostName => Target.HostName;

    /// <summary>How tables name the VM: the domain, or the QMP socket.</summary>
    public string VM => Target.Name;

    /// <summary>The VM this object describes (not a public property: PowerShell would bind it to -Target aliases).</summary>
    internal VmTarget Target { get; init; }
}
