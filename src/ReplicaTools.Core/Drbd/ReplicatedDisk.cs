using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Drbd;

/// <summary>Where a node's export of a replicated disk stands.</summary>
public enum ReplicatedDiskExportState
{
    /// <summary>The disk has no export (-Export None), or the node could not be asked.</summary>
    None,

    /// <summary>The node serves the disk now (nbd-server runs, or tgtd serves the target).</summary>
    Running,

    /// <summary>Configured but not running: what the secondary keeps, ready for Switch-ReplicatedDisk.</summary>
    Standby,

    /// <summary>The disk should have an export here but neither a running one nor its standby configuration was found.</summary>
    Missing,
}

/// <summary>One node of a replicated disk, as that node reports it (or, when it could not be asked, as its peer sees it).</summary>
public sealed class ReplicatedDiskHost
{
    /// <summary>The host as the module names it (the session's host name).</summary>
    public required string HostName { get; init; }

    /// <summary>The host's kernel host name (uname -n): the name of its <c>on</c> section in the resource file.</summary>
    public required string NodeName { get; init; }

    public ReplicaSession? Session { get; init; }

    /// <summary>True when the values come from the host itself; false when they are its peer's view of it (host not given or not reachable).</summary>
    public bool Queried { get; init; }

    /// <summary>Primary, Secondary, Unknown (not reachable, not up), or Down (reachable, resource not up).</summary>
    public string Role { get; init; } = "Unknown";

    /// <summary>DRBD's disk state of the node's backing disk: UpToDate, Inconsistent, Outdated, Diskless, DUnknown ...</summary>
    public string DiskState { get; init; } = "DUnknown";

    /// <summary>The node's connection to its peer: Connected, Connecting, StandAlone ... (Unknown when not known).</summary>
    public string ConnectionState { get; init; } = "Unknown";

    /// <summary>The node's replication state towards its peer: Established, SyncSource, SyncTarget, Off ...</summary>
    public string ReplicationState { get; init; } = "Off";

    /// <summary>
    /// How much of the disk this node reports in sync with its peer, 0-100 (drbdsetup's percent-resync-done while a
    /// resync runs, else percent-in-sync); null when not known.
    /// </summary>
    public double? SyncPercent { get; init; }

    /// <summary>What this node knows to be out of sync with its peer, in bytes (drbdsetup's out-of-sync, KiB × 1024).</summary>
    public long? OutOfSyncBytes { get; init; }

    /// <summary>drbdsetup's estimate of the seconds a running resync still needs.</summary>
    public double? EstimatedSecondsToFinish { get; init; }

    /// <summary>The backing device.</summary>
    public required string Disk { get; init; }

    /// <summary>The replication address.</summary>
    public required string Address { get; init; }

    public ReplicatedDiskExportState ExportState { get; init; }

    /// <summary>The running export's URI on this node.</summary>
    public string? ExportUri { get; init; }

    /// <summary>Why the node could not be asked, or why its values are incomplete.</summary>
    public string? Problem { get; init; }

    public override string ToString() => $"{HostName}: {Role}/{DiskState}, {ConnectionState}, export {ExportState}";
}

/// <summary>
/// A DRBD-replicated disk on two storage hosts: the resource, each node's state, and which node exports it over what.
/// It carries no Session or HostName of its own (it spans two hosts), so piping it into a cmdlet that acts on a VM
/// host never binds a storage host there; <see cref="StorageHost"/> binds the replicated-disk cmdlets.
/// </summary>
public sealed class ReplicatedDisk
{
    /// <summary>The DRBD resource name.</summary>
    public required string Name { get; init; }

    /// <summary>/dev/drbdMINOR on both nodes.</summary>
    public required string Device { get; init; }

    public int Minor { get; init; }

    /// <summary>The replication TCP port.</summary>
    public int Port { get; init; }

    public DrbdProtocol Protocol { get; init; }

    /// <summary>The two nodes, in the resource file's order.</summary>
    public required IReadOnlyList<ReplicatedDiskHost> Hosts { get; init; }

    /// <summary>The sessions of the nodes that were asked, for the other replicated-disk cmdlets (-StorageHost).</summary>
    public required IReadOnlyList<ReplicaSession> StorageHost { get; init; }

    /// <summary>The host that is Primary, or null.</summary>
    public string? Primary => Hosts.FirstOrDefault(h => h.Role == "Primary")?.HostName;

    /// <summary>The other host.</summary>
    public string? Secondary => Primary is null ? null : Hosts.FirstOrDefault(h => h.HostName != Primary)?.HostName;

    /// <summary>What the disk is exported over.</summary>
    public ReplicatedDiskExport ExportProtocol { get; init; }

    /// <summary>The host whose export runs now, or null.</summary>
    public string? ExportHost => Hosts.FirstOrDefault(h => h.ExportState == ReplicatedDiskExportState.Running)?.HostName;

    /// <summary>Where clients reach the disk now (nbd://HOST:PORT/NAME or iscsi://HOST:PORT/IQN/LUN), or null when no export runs.</summary>
    public string? Uri => Hosts.FirstOrDefault(h => h.ExportState == ReplicatedDiskExportState.Running)?.ExportUri;

    /// <summary>The NBD export name (NBD exports).</summary>
    public string? ExportName { get; init; }

    /// <summary>The iSCSI target (iSCSI exports).</summary>
    public string? Iqn { get; init; }

    /// <summary>The lowest SyncPercent either node reports.</summary>
    public double? SyncPercent => Hosts.Where(h => h.SyncPercent is not null).Select(h => h.SyncPercent).Min();

    /// <summary>The most out-of-sync data either node reports, in bytes.</summary>
    public long? OutOfSyncBytes => Hosts.Where(h => h.OutOfSyncBytes is not null).Select(h => h.OutOfSyncBytes).Max();

    /// <summary>Both nodes UpToDate and connected: every write reaches both disks.</summary>
    public bool InSync => Hosts.Count == 2 && Hosts.All(h => h.DiskState == "UpToDate" && h.ConnectionState == "Connected");

    /// <summary>The resource file on the nodes (e.g. /etc/drbd.d/r0.res).</summary>
    public string? ConfigFile { get; init; }

    public override string ToString() => $"{Name} ({string.Join(", ", Hosts.Select(h => $"{h.HostName} {h.Role}/{h.DiskState}"))})";
}
