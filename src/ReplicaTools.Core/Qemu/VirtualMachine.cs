using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Qemu;

public enum VmBackend
{
    /// <summary>A libvirt domain, driven through virsh so libvirt keeps ownership of it.</summary>
    Libvirt,

    /// <summary>A bare QEMU process, driven through its QMP socket.</summary>
    Qmp,
}

public enum VmRunState
{
    Running,
    Paused,
    ShutOff,
    Other,
}

/// <summary>A disk of a VM as the block layer sees it.</summary>
public sealed class VmDisk
{
    /// <summary>The name operators use: the libvirt target (vda) or the QEMU device id (virtio0); a node name for a disk without device.</summary>
    public required string Drive { get; init; }

    /// <summary>The QEMU block node block jobs act on (libvirt: libvirt-N-format when known).</summary>
    public string? NodeName { get; init; }

    /// <summary>The qdev id / libvirt alias of the device, if any.</summary>
    public string? DeviceId { get; init; }

    /// <summary>The image: a path on the VM host or a URL such as nfs://server/export/file.</summary>
    public string? Source { get; init; }

    public string? Format { get; init; }

    /// <summary>The disk's size as the guest sees it, when known.</summary>
    public long? VirtualSize { get; init; }

    public override string ToString() => $"{Drive} ({Source ?? "no medium"}{(Format is null ? string.Empty : ", " + Format)})";
}

/// <summary>
/// A running VM on a host, opened from its <see cref="VmTarget"/>. Two implementations: <see cref="LibvirtVirtualMachine"/>
/// (-VMName) and <see cref="QmpVirtualMachine"/> (-QmpSocket). Each is the single place that creates the VM's mirror
/// back end and its point-in-time source; features (mirror, clone) build on this.
/// </summary>
public abstract class VirtualMachine
{
    protected VirtualMachine(VmTarget target)
    {
        ArgumentNullException.ThrowIfNull(target);
        Target = target;
    }

    /// <summary>Which VM this is: host, back end, name or socket, libvirt URI.</summary>
    public VmTarget Target { get; }

    public ReplicaSession Session => Target.Session;

    public IReplicaHost Host => Session.Host;

    public VmBackend Backend => Target.Backend;

    /// <summary>The domain name, or the QMP socket path.</summary>
    public string Name => Target.Name;

    /// <summary>How messages name this VM: "VM 'vm1' on host 'kvm1'".</summary>
    public string DisplayName => Target.DisplayName;

    /// <summary>The VM from the parameters every VM cmdlet takes (see <see cref="VmTarget.FromParameters"/>).</summary>
    /// <exception cref="ArgumentException">The parameters do not name exactly one VM.</exception>
    public static VirtualMachine Open(ReplicaSession session, string? vmName, string? qmpSocket, string? libvirtUri = null) =>
        VmTarget.FromParameters(session, vmName, qmpSocket, libvirtUri).Open();

    public abstract Task<VmRunState> GetStateAsync(CancellationToken cancellationToken = default);

    public abstract Task<IReadOnlyList<VmDisk>> GetDisksAsync(CancellationToken cancellationToken = default);

    /// <summary>Fails unless the VM is running or paused (a paused VM still serves block jobs).</summary>
    public async Task EnsureRunningAsync(CancellationToken cancellationToken = default)
    {
        var state = await GetStateAsync(cancellationToken).ConfigureAwait(false);
        if (state is not (VmRunState.Running or VmRunState.Paused))
        {
            throw new VmNotRunningException(this, state);
        }
    }

    /// <summary>
    /// The disk named <paramref name="drive"/> (target, device id or node name); with no name, the VM's only disk.
    /// Errors list the disks there are.
    /// </summary>
    public async Task<VmDisk> ResolveDiskAsync(string? drive, CancellationToken cancellationToken = default) =>
        ResolveDisk(await GetDisksAsync(cancellationToken).ConfigureAwait(false), drive);

    /// <summary>Picks <paramref name="drive"/> out of <paramref name="disks"/> (see <see cref="ResolveDiskAsync"/>).</summary>
    public VmDisk ResolveDisk(IReadOnlyList<VmDisk> disks, string? drive)
    {
        if (string.IsNullOrEmpty(drive))
        {
            return disks.Count switch
            {
                1 => disks[0],
                0 => throw new ReplicaException("VmHasNoDisk", ReplicaErrorCategory.ObjectNotFound, $"{DisplayName} has no disk.", Host.Name, Name),
                _ => throw new ReplicaException("DriveAmbiguous", ReplicaErrorCategory.InvalidArgument,
                    $"{DisplayName} has {disks.Count} disks; name one with -Drive: {string.Join(", ", disks)}.", Host.Name, Name),
            };
        }

        return disks.FirstOrDefault(d => d.Drive == drive)
            ?? disks.FirstOrDefault(d => d.DeviceId == drive || d.NodeName == drive)
            ?? throw new ReplicaException("DriveNotFound", ReplicaErrorCategory.ObjectNotFound,
                $"{DisplayName} has no disk '{drive}'. Its disks: {(disks.Count == 0 ? "none" : string.Join(", ", disks))}.", Host.Name, drive)
            {
                RecommendedAction = "Pass one of the listed names to -Drive.",
            };
    }

    /// <summary>The live-mirror operations for this kind of VM (QMP drive-mirror, or libvirt blockcopy).</summary>
    public abstract Mirror.DriveMirrorBackend CreateMirrorBackend();

    /// <summary>The clone's point-in-time source for this kind of VM (QMP fleecing, or a libvirt pull-mode backup).</summary>
    /// <param name="scratchDirectory">Directory on the VM host for the scratch image.</param>
    public abstract Clone.PointInTimeSource CreatePointInTimeSource(string scratchDirectory);

    public override string ToString() => DisplayName;
}

public sealed class VmNotFoundException : ReplicaException
{
    public VmNotFoundException(string hostName, string vmName, string detail)
        : base("VmNotFound", ReplicaErrorCategory.ObjectNotFound, $"There is no VM '{vmName}' on host '{hostName}': {detail}", hostName, vmName)
    {
    }
}

public sealed class VmNotRunningException : ReplicaException
{
    public VmNotRunningException(VirtualMachine vm, VmRunState state, string? detail = null)
        : base("VmNotRunning", ReplicaErrorCategory.ResourceUnavailable, $"{vm.DisplayName} is not running (state: {state}){(detail is null ? "." : ": " + detail)}", vm.Host.Name, vm.Name)
    {
        RecommendedAction = "Start the VM first; live operations need a running (or paused) VM.";
    }
}
