using ReplicaTools.Core.Qemu;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// A point in time from which changed blocks are tracked on a disk: a libvirt checkpoint, or a QEMU dirty bitmap of a
/// bare QEMU. Invoke-NbdClone names its checkpoints rtclone-CHAIN-GENERATION.
/// </summary>
public sealed record DiskCheckpoint : VmObject
{
    public DiskCheckpoint(VmTarget target)
        : base(target)
    {
    }

    /// <summary>The checkpoint's name (rtclone-CHAIN-GENERATION for Invoke-NbdClone's).</summary>
    public required string Name { get; init; }

    /// <summary>The dirty bitmap behind it (libvirt names it after the checkpoint).</summary>
    public string? Bitmap { get; init; }

    /// <summary>Bytes written since the checkpoint (the bitmap's dirty count); null when the bitmap is missing or inconsistent.</summary>
    public long? DirtyBytes { get; init; }

    /// <summary>False when the bitmap is missing, inconsistent (QEMU was killed) or disabled: an incremental from it would be wrong.</summary>
    public bool Usable { get; init; }

    /// <summary>Whether the bitmap records writes (disabled bitmaps of an interrupted rotation do not).</summary>
    public bool? Recording { get; init; }

    public bool? Persistent { get; init; }

    public long? Granularity { get; init; }

    public DateTimeOffset? CreationTime { get; init; }

    public string? Parent { get; init; }

    /// <summary>Why the checkpoint is not usable (or, when <see cref="Orphaned"/>, why it is of no use and how to remove it).</summary>
    public string? Problem { get; set; }

    /// <summary>The clone destination this checkpoint belongs to, "HOST:PATH" (Invoke-NbdClone checkpoints, from the VM host's chain record).</summary>
    public string? Destination { get; set; }

    /// <summary>
    /// True when the clone destination it belongs to no longer exists (or no longer is that clone): nothing will ever read
    /// the checkpoint, and its dirty bitmap grows with every guest write. False when the destination was found; null when
    /// unknown (not a clone checkpoint, no chain record, or the destination host is not reachable through an open session).
    /// </summary>
    public bool? Orphaned { get; set; }

    /// <summary>True for checkpoints Invoke-NbdClone created (rtclone-CHAIN-GENERATION).</summary>
    public bool IsCloneCheckpoint => Chain is not null;

    public string? Chain => CloneNames.TryParseCheckpoint(Name, out var chain, out _) ? chain : null;

    public long Generation => CloneNames.TryParseCheckpoint(Name, out _, out var generation) ? generation : 0;

    public override string ToString() => $"{VM}/{Drive}: {Name}";
}
