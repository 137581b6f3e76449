using ReplicaTools.Core.Qemu;

namespace ReplicaTools.Core.Quorum;

/// <summary>What is known about one replica of a running quorum disk.</summary>
public enum QuorumReplicaHealth
{
    /// <summary>No bad report since it joined (or was last repaired), and its storage answers.</summary>
    Healthy,

    /// <summary>QEMU reported reads where it disagreed with the majority (QUORUM_REPORT_BAD without an error): its data differs.</summary>
    Corrupt,

    /// <summary>QEMU reported I/O errors on it (QUORUM_REPORT_BAD with an error): its storage fails requests.</summary>
    Failing,

    /// <summary>Its storage does not answer (NFS or NBD server down, file gone) when the module probes it.</summary>
    Unreachable,

    /// <summary>The record names it, but it is no longer a child of the quorum node (taken out and not put back).</summary>
    Detached,
}

/// <summary>The state of a quorum disk as a whole.</summary>
public enum QuorumDiskState
{
    /// <summary>Every replica is healthy.</summary>
    Healthy,

    /// <summary>Some replica is not healthy, but at least vote-threshold replicas are: reads still succeed.</summary>
    Degraded,

    /// <summary>Fewer than vote-threshold replicas are healthy: reads where the rest disagree fail (QUORUM_FAILURE).</summary>
    NoQuorum,
}

/// <summary>A QUORUM_REPORT_BAD or QUORUM_FAILURE event (QEMU QAPI, block-core.json), with sectors turned into bytes.</summary>
public sealed record QuorumEvent
{
    public const string ReportBad = "QUORUM_REPORT_BAD";
    public const string Failure = "QUORUM_FAILURE";

    /// <summary>When QEMU emitted it (QEMU's own timestamp).</summary>
    public required DateTimeOffset Timestamp { get; init; }

    /// <summary>QUORUM_REPORT_BAD (one replica) or QUORUM_FAILURE (no majority: the guest's request failed).</summary>
    public required string Name { get; init; }

    /// <summary>The replica's node for QUORUM_REPORT_BAD; the quorum node ("reference") for QUORUM_FAILURE.</summary>
    public required string NodeName { get; init; }

    /// <summary>read, write or flush (QUORUM_REPORT_BAD only).</summary>
    public string? Type { get; init; }

    /// <summary>The I/O error (QUORUM_REPORT_BAD of a failing replica); null when the replica returned data that was outvoted.</summary>
    public string? Error { get; init; }

    /// <summary>Start of the guest request, in bytes (QEMU reports 512-byte sectors).</summary>
    public long Offset { get; init; }

    /// <summary>Length of the guest request, in bytes.</summary>
    public long Length { get; init; }

    /// <summary>Where the module saw it: "recorder" (the event file on the VM host) or "monitor" (this cmdlet's own QMP connection).</summary>
    public string Source { get; init; } = "recorder";

    public override string ToString() => $"{Timestamp:u} {Name} {NodeName} {Type} {Offset}+{Length}{(Error is null ? string.Empty : " " + Error)}";
}

/// <summary>One replica of a running quorum disk (Get-QuorumDisk), with its health. Pipes into Repair-QuorumDisk (NodeName binds -Replica).</summary>
public sealed record QuorumReplica : VmObject
{
    public QuorumReplica(VmTarget target)
        : base(target)
    {
    }

    /// <summary>The quorum node this replica belongs to.</summary>
    public required string QuorumNode { get; init; }

    /// <summary>Its position in the module's record, from 1.</summary>
    public int Index { get; init; }

    /// <summary>QEMU's name for the edge from the quorum node ("children.1"); null when detached.</summary>
    public string? Child { get; init; }

    /// <summary>The replica's format node, the quorum's child.</summary>
    public required string NodeName { get; init; }

    /// <summary>Where the image lives (path on the VM host, nfs:// or NBD URL).</summary>
    public required string Location { get; init; }

    public QuorumTransport Transport { get; init; }

    /// <summary>The NFS or NBD server; the VM host for a path.</summary>
    public string? StorageHost { get; init; }

    public string? Format { get; init; }

    public QuorumReplicaHealth Health { get; init; }

    /// <summary>Why it is not healthy, in words (empty when healthy).</summary>
    public string Reason { get; init; } = string.Empty;

    /// <summary>QUORUM_REPORT_BAD events without error (outvoted data) since <see cref="Since"/>.</summary>
    public int BadReports { get; init; }

    /// <summary>QUORUM_REPORT_BAD events with an I/O error since <see cref="Since"/>.</summary>
    public int ErrorReports { get; init; }

    /// <summary>The latest report about it, if any.</summary>
    public QuorumEvent? LastReport { get; init; }

    /// <summary>When it joined the quorum or was last repaired; older events do not count.</summary>
    public DateTimeOffset? Since { get; init; }
}

/// <summary>A quorum disk attached to a running VM (New-QuorumDisk, Get-QuorumDisk). Pipes into Test- and Repair-QuorumDisk.</summary>
public sealed record QuorumDisk : VmObject
{
    public QuorumDisk(VmTarget target)
        : base(target)
    {
    }

    /// <summary>The quorum block node.</summary>
    public required string QuorumNode { get; init; }

    /// <summary>The guest device on the quorum node (qdev id), null when the node is left for the user's own device.</summary>
    public string? DeviceId { get; init; }

    public int VoteThreshold { get; init; }

    public QuorumReadPattern ReadPattern { get; init; }

    public bool RewriteCorrupted { get; init; }

    public bool Blkverify { get; init; }

    public QuorumDiskState State { get; init; }

    public required IReadOnlyList<QuorumReplica> Replicas { get; init; }

    /// <summary>Replicas whose health is Healthy.</summary>
    public int HealthyReplicas => Replicas.Count(r => r.Health == QuorumReplicaHealth.Healthy);

    /// <summary>QUORUM_FAILURE events: guest requests that failed because fewer than vote-threshold replicas agreed.</summary>
    public IReadOnlyList<QuorumEvent> Failures { get; init; } = Array.Empty<QuorumEvent>();

    /// <summary>Every quorum event the module has for this disk, oldest first.</summary>
    public IReadOnlyList<QuorumEvent> Events { get; init; } = Array.Empty<QuorumEvent>();

    /// <summary>Where the events came from, in words: the event file the recorder keeps on the VM host, or only this cmdlet's connection.</summary>
    public string EventSource { get; init; } = string.Empty;

    /// <summary>The -blockdev JSON of the disk's nodes, as QEMU has them now (replicas first).</summary>
    public IReadOnlyList<string> BlockdevJson => Definition.BlockdevJson;

    /// <summary>The libvirt &lt;qemu:commandline&gt; snippet that recreates the disk when the domain starts.</summary>
    public string LibvirtXml => Definition.LibvirtXml;

    /// <summary>The definition the disk was created from (updated by repairs).</summary>
    public required QuorumDefinition Definition { get; init; }
}

/// <summary>
/// The result of comparing one replica with the majority (Test-QuorumDisk): whether it agrees everywhere, and where it
/// first does not. Pipes into Repair-QuorumDisk (NodeName binds -Replica).
/// </summary>
public sealed record QuorumComparison : VmObject
{
    public QuorumComparison(VmTarget target)
        : base(target)
    {
    }

    public required string QuorumNode { get; init; }

    public required string NodeName { get; init; }

    public required string Location { get; init; }

    /// <summary>True when the replica holds the majority's data wherever a majority exists.</summary>
    public bool InMajority { get; init; }

    /// <summary>The first byte (offset from the start of the disk) where it differs from the majority; null when it never does.</summary>
    public long? FirstDifference { get; init; }

    /// <summary>How much of it differs from the majority, in bytes, counted in 512-byte sectors.</summary>
    public long DifferingBytes { get; init; }

    /// <summary>Runs of adjacent differing sectors.</summary>
    public int DifferingRegions { get; init; }

    /// <summary>The first offset where no vote-threshold replicas agree (the guest's reads there fail); null when there is none.</summary>
    public long? NoMajorityAt { get; init; }

    /// <summary>The disk's size in bytes (the smallest replica's, if they differ).</summary>
    public long Size { get; init; }

    /// <summary>Bytes read and compared (ranges every replica reports as zero are skipped by block status).</summary>
    public long ComparedBytes { get; init; }
}
