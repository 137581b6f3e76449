using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Storage;

/// <summary>Image formats New-DiskImage creates (Get-DiskImage reports whatever qemu-img finds).</summary>
public enum DiskImageFormat
{
    Raw,
    Qcow2,
    Vdi,
}

public static class DiskImageFormats
{
    /// <summary>The name qemu-img uses (-f/-O).</summary>
    public static string ToQemuName(this DiskImageFormat format) => format switch
    {
        DiskImageFormat.Raw => "raw",
        DiskImageFormat.Qcow2 => "qcow2",
        DiskImageFormat.Vdi => "vdi",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
    };

    public static DiskImageFormat Parse(string name) => name.ToLowerInvariant() switch
    {
        "raw" => DiskImageFormat.Raw,
        "qcow2" => DiskImageFormat.Qcow2,
        "vdi" => DiskImageFormat.Vdi,
        _ => throw new ArgumentException($"Image format '{name}' is not one New-DiskImage creates; use raw, qcow2 or vdi.", nameof(name)),
    };
}

/// <summary>A persistent dirty bitmap stored in a qcow2 image (qemu-img info: format-specific.data.bitmaps).</summary>
public sealed class DirtyBitmap
{
    public DirtyBitmap(string name, long granularity, IReadOnlyList<string> flags)
    {
        Name = name;
        Granularity = granularity;
        Flags = flags;
    }

    public string Name { get; }

    /// <summary>Bytes tracked per bit.</summary>
    public long Granularity { get; }

    /// <summary>The raw flags: "in-use", "auto", "inconsistent".</summary>
    public IReadOnlyList<string> Flags { get; }

    /// <summary>A QEMU process has the image open and owns the bitmap (or crashed while it did).</summary>
    public bool InUse => Flags.Contains("in-use");

    /// <summary>QEMU marks a bitmap auto when it tracks writes by itself while the image is open.</summary>
    public bool Auto => Flags.Contains("auto");

    /// <summary>The bitmap cannot be trusted (QEMU was not shut down cleanly): an incremental copy based on it is unsafe.</summary>
    public bool Inconsistent => Flags.Contains("inconsistent");

    public override string ToString() => $"{Name} ({ByteSizeText(Granularity)}{(Flags.Count > 0 ? ", " + string.Join(',', Flags) : string.Empty)})";

    private static string ByteSizeText(long bytes) => Text.ByteSize.Format(bytes);
}

/// <summary>A disk image on a host (or on an NFS server reached by URL), as qemu-img info reports it.</summary>
public sealed class DiskImage
{
    /// <summary>The path or nfs:// URL, as given.</summary>
    public required string Path { get; init; }

    /// <summary>qemu-img's format name: raw, qcow2, vdi, ...</summary>
    public required string Format { get; init; }

    /// <summary>The size the guest sees, in bytes.</summary>
    public long VirtualSize { get; init; }

    /// <summary>Bytes allocated on the storage (null where qemu-img cannot tell, e.g. some NFS servers).</summary>
    public long? ActualSize { get; init; }

    public long? ClusterSize { get; init; }

    public string? BackingFile { get; init; }

    public string? BackingFormat { get; init; }

    public IReadOnlyList<DirtyBitmap> DirtyBitmaps { get; init; } = Array.Empty<DirtyBitmap>();

    /// <summary>qcow2/vdi dirty flag: the image was not closed cleanly.</summary>
    public bool? DirtyFlag { get; init; }

    /// <summary>
    /// The btrfs No_COW attribute ('C' in lsattr): true or false on btrfs, null where it does not apply or is unknown
    /// (other file systems, images reached by nfs:// URL).
    /// </summary>
    public bool? NoCow { get; init; }

    /// <summary>The file system type of the image's directory (stat -f), null for nfs:// URLs.</summary>
    public string? FileSystemType { get; init; }

    /// <summary>
    /// True when a running QEMU (a VM, qemu-nbd, qemu-storage-daemon; any format, however opened) holds QEMU's image
    /// locks on the file (see <see cref="ImageLocks"/>): it was read with qemu-img's -U (force share), so sizes and
    /// bitmaps may be stale while the VM writes, and the cmdlets that delete or overwrite images refuse it.
    /// </summary>
    public bool InUse { get; init; }

    /// <summary>Who holds the image and how, when <see cref="InUse"/>: "qemu-system-x86_64 (pid 4711) holds consistent-read, write and does not share write".</summary>
    public string? InUseBy { get; init; }

    public bool IsNfsUrl => Path.StartsWith("nfs://", StringComparison.OrdinalIgnoreCase);

    /// <summary>The host whose tools read the image (for nfs:// URLs: the host that ran qemu-img).</summary>
    public required string HostName { get; init; }

    /// <summary>The session the image was read through; pipes into the next cmdlet (null when read through a bare host object).</summary>
    public ReplicaSession? Session { get; init; }

    public override string ToString() => $"[{HostName}] {Path} ({Format}, {Text.ByteSize.Format(VirtualSize)})";
}
