using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

public enum CloneMode
{
    /// <summary>Every allocated block of the point-in-time image was copied.</summary>
    Full,

    /// <summary>Only the blocks written since the previous clone's checkpoint were copied into the existing destination.</summary>
    Incremental,
}

/// <summary>What Invoke-NbdClone was asked to do.</summary>
public sealed class CloneRequest
{
    public required VirtualMachine VirtualMachine { get; init; }

    /// <summary>The disk (target, device id or node name); null for the VM's only disk.</summary>
    public string? Drive { get; init; }

    /// <summary>Absolute path of the clone on the destination host: a regular file (raw image) or a block device.</summary>
    public required string Destination { get; init; }

    public required ReplicaSession DestinationSession { get; init; }

    public bool Incremental { get; init; }

    public bool Verify { get; init; }

    /// <summary>NBD connections (and copier threads); null lets the copier choose.</summary>
    public int? Connections { get; init; }

    /// <summary>Address the NBD export listens on and the destination connects to; null picks one (see <see cref="ExportAddressResolver"/>).</summary>
    public string? ExportAddress { get; init; }

    /// <summary>Directory on the VM host for the point-in-time scratch image (old data of blocks the guest overwrites during the copy).</summary>
    public string ScratchDirectory { get; init; } = "/var/tmp";

    /// <summary>Where the per-VM and per-destination lock files live on the hosts (flock; they stay as empty files).</summary>
    public string LockDirectory { get; init; } = "/tmp";

    /// <summary>Directory on the VM host for the records of which destination each checkpoint chain belongs to (see <see cref="CloneChainRecord"/>).</summary>
    public string StateDirectory { get; init; } = CloneChainRecord.DefaultStateDirectory;

    /// <summary>Clean up stale state of an interrupted earlier run (commit, never discard guest writes) before cloning.</summary>
    public bool Repair { get; init; }

    /// <summary>Upper bound for the copy step (the copier is killed on the destination after it).</summary>
    public TimeSpan CopyTimeout { get; init; } = TimeSpan.FromHours(24);

    /// <summary>NBD ports tried for the export (random order, retried on "Address already in use").</summary>
    public (int First, int Last) PortRange { get; init; } = (10900, 11899);

    public void Validate()
    {
        if (!Destination.StartsWith('/'))
        {
            throw new ArgumentException($"-Destination '{Destination}' must be an absolute path on host '{DestinationSession.HostName}'.");
        }

        if (Destination.EndsWith('/'))
        {
            throw new ArgumentException($"-Destination '{Destination}' names a directory; give the path of the clone file (or block device).");
        }

        if (!ScratchDirectory.StartsWith('/'))
        {
            throw new ArgumentException($"-ScratchDirectory '{ScratchDirectory}' must be an absolute path on the VM host.");
        }

        if (Connections is < 1 or > 64)
        {
            throw new ArgumentException($"-Connections {Connections} is outside 1-64.");
        }

        if (PortRange.First < 1 || PortRange.Last > 65535 || PortRange.First > PortRange.Last)
        {
            throw new ArgumentException($"The NBD port range {PortRange.First}-{PortRange.Last} is not valid.");
        }
    }
}

/// <summary>The outcome of one Invoke-NbdClone run.</summary>
public sealed record CloneResult : VmObject
{
    public CloneResult(VmTarget target)
        : base(target)
    {
    }

    /// <summary>The clone's path on the destination host.</summary>
    public required string Destination { get; init; }

    public required string DestinationHost { get; init; }

    public required CloneMode Mode { get; init; }

    /// <summary>The checkpoint (libvirt) or persistent dirty bitmap (QMP) the clone corresponds to; the next -Incremental starts from it. Null for disks that cannot hold one (raw).</summary>
    public string? Checkpoint { get; init; }

    /// <summary>Why an -Incremental run copied everything instead, if it did.</summary>
    public string? FallbackReason { get; init; }

    /// <summary>Virtual size of the disk.</summary>
    public long BytesTotal { get; init; }

    /// <summary>Bytes read from the export and written to the destination (allocated data for a full clone, dirty extents for an incremental).</summary>
    public long BytesCopied { get; init; }

    /// <summary>
    /// Incremental clones: bytes of written blocks that read as zero (the guest zeroed or discarded them) and were zeroed on
    /// the destination (a punched hole in a file) instead of copied as data. 0 for full clones, which skip zeros.
    /// </summary>
    public long BytesZeroed { get; init; }

    /// <summary>Bytes not written at all: holes and zeros of a full clone, clean blocks of an incremental. Copied + zeroed + skipped = total.</summary>
    public long BytesSkipped { get; init; }

    /// <summary>Wall time of the whole run, from the stale-state check to the release of the point in time.</summary>
    public TimeSpan Duration { get; init; }

    /// <summary>Wall time of the copy step alone.</summary>
    public TimeSpan CopyDuration { get; init; }

    /// <summary>Virtual size processed per second of the whole run, in MiB/s (the usual way disk copiers are compared).</summary>
    public double ThroughputMBps { get; init; }

    /// <summary>True when -Verify compared the point-in-time source and the destination and they matched.</summary>
    public bool Verified { get; init; }

    /// <summary>The checksum both sides had (sha256 over 1 MiB chunk digests), when verified.</summary>
    public string? Checksum { get; init; }

    /// <summary>The copier that ran: nbdcopy, qemu-img or the dirty-extent copier.</summary>
    public string? Copier { get; init; }

    public long Generation { get; init; }

    public DateTimeOffset StartTime { get; init; }

    public ReplicaSession? DestinationSession { get; init; }

    public override string ToString() => $"{VM}/{Drive} -> {DestinationHost}:{Destination} ({Mode}, {ByteSizeText(BytesCopied)} copied)";

    private static string ByteSizeText(long bytes) => $"{bytes / 1048576.0:0.#} MiB";
}
