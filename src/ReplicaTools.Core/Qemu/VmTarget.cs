using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Qemu;

/// <summary>
/// Which VM an operation acts on: its host, its back end and its address there (a libvirt domain name with the libvirt
/// connection URI, or the QMP socket path of a bare QEMU). The one place where the VM parameters every VM cmdlet takes
/// (-VMName, -QmpSocket, -LibvirtUri) are validated, and the one place that picks the back end (<see cref="Open"/>).
/// </summary>
public sealed record VmTarget
{
    private VmTarget(ReplicaSession session, VmBackend backend, string name, string? libvirtUri)
    {
        Session = session;
        Backend = backend;
        Name = name;
        LibvirtUri = libvirtUri;
    }

    /// <summary>The VM host.</summary>
    public ReplicaSession Session { get; }

    public VmBackend Backend { get; }

    /// <summary>The libvirt domain name, or the QMP socket path (absolute, on the VM host).</summary>
    public string Name { get; }

    /// <summary>The libvirt connection URI on the VM host (default <see cref="LibvirtVirtualMachine.DefaultUri"/>); null for a bare QEMU.</summary>
    public string? LibvirtUri { get; }

    /// <summary>The libvirt domain; null for a bare QEMU.</summary>
    public string? VMName => Backend == VmBackend.Libvirt ? Name : null;

    /// <summary>The QMP socket of a bare QEMU; null for a libvirt domain.</summary>
    public string? QmpSocket => Backend == VmBackend.Qmp ? Name : null;

    /// <summary>The VM host as the module's objects name it (<see cref="ReplicaSession.HostName"/>: "localhost" for this machine).</summary>
    public string HostName => Session.HostName;

    /// <summary>How messages name the VM: "VM 'vm1' on host 'kvm1'", with the URI when it is not the default one.</summary>
    public string DisplayName => Backend == VmBackend.Libvirt
        ? $"VM '{Name}'{(LibvirtUri == LibvirtVirtualMachine.DefaultUri ? string.Empty : $" ({LibvirtUri})")} on host '{Session.Host.Name}'"
        : $"QEMU VM at '{Name}' on host '{Session.Host.Name}'";

    /// <summary>A stable text that tells VMs apart (back end, URI, name): the source of lock and scratch file names.</summary>
    public string Identity => Backend == VmBackend.Libvirt ? $"libvirt\n{LibvirtUri}\n{Name}" : $"qmp\n{Name}";

    /// <summary>A libvirt domain; <paramref name="libvirtUri"/> null or empty means the default URI.</summary>
    /// <exception cref="ArgumentException">The domain name is empty.</exception>
    public static VmTarget Libvirt(ReplicaSession session, string domainName, string? libvirtUri = null)
    {
        ArgumentNullException.ThrowIfNull(session);
        if (string.IsNullOrEmpty(domainName))
        {
            throw new ArgumentException("-VMName (the libvirt domain) is empty.", "VMName");
        }

        return new VmTarget(session, VmBackend.Libvirt, domainName, string.IsNullOrEmpty(libvirtUri) ? LibvirtVirtualMachine.DefaultUri : libvirtUri);
    }

    /// <summary>A bare QEMU by its QMP socket.</summary>
    /// <exception cref="ArgumentException">The path is empty or not absolute.</exception>
    public static VmTarget Qmp(ReplicaSession session, string socketPath)
    {
        ArgumentNullException.ThrowIfNull(session);
        if (string.IsNullOrEmpty(socketPath) || !socketPath.StartsWith('/'))
        {
            throw new ArgumentException($"-QmpSocket '{socketPath}' must be an absolute path on host '{session.Host.Name}'.", "QmpSocket");
        }

        return new VmTarget(session, VmBackend.Qmp, socketPath, null);
    }

    /// <summary>
    /// The VM from the parameters every VM cmdlet takes: exactly one of -VMName (a libvirt domain, with an optional
    /// -LibvirtUri) and -QmpSocket (a bare QEMU). Null and empty mean "not given", as piped objects carry them.
    /// </summary>
    /// <exception cref="ArgumentException">Neither or both are given, -LibvirtUri comes with -QmpSocket, or the socket path is relative.</exception>
    public static VmTarget FromParameters(ReplicaSession session, string? vmName, string? qmpSocket, string? libvirtUri)
    {
        var hasName = !string.IsNullOrEmpty(vmName);
        var hasSocket = !string.IsNullOrEmpty(qmpSocket);
        if (hasName && hasSocket)
        {
            throw new ArgumentException("Give either -VMName (a libvirt domain) or -QmpSocket (a bare QEMU's QMP socket), not both.");
        }

        if (hasSocket && !string.IsNullOrEmpty(libvirtUri))
        {
            throw new ArgumentException($"-LibvirtUri '{libvirtUri}' applies to libvirt domains (-VMName), not to a bare QEMU (-QmpSocket).", "LibvirtUri");
        }

        return hasName ? Libvirt(session, vmName!, libvirtUri)
            : hasSocket ? Qmp(session, qmpSocket!)
            : throw new ArgumentException("Name the VM: -VMName for a libvirt domain, or -QmpSocket for the QMP socket path of a bare QEMU.");
    }

    /// <summary>The VM behind this target: the single place that picks the back end.</summary>
    public VirtualMachine Open() => Backend == VmBackend.Libvirt ? new LibvirtVirtualMachine(this) : new QmpVirtualMachine(this);

    public override string ToString() => DisplayName;
}
