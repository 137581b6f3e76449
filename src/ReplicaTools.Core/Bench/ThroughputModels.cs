using System.Globalization;

namespace ReplicaTools.Core.Bench;

/// <summary>What a measurement does to the target: fio's rw=read/write (randread/randwrite with <see cref="AccessPattern.Random"/>).</summary>
public enum ThroughputOperation
{
    Read,
    Write,
}

/// <summary>Where consecutive requests go: one after the other (fio rw=read/write) or at random offsets (rw=randread/randwrite).</summary>
public enum AccessPattern
{
    Sequential,
    Random,
}

/// <summary>The tool that generates the load.</summary>
public enum ThroughputEngine
{
    /// <summary>fio for files, block devices and nbd:// URLs; qemu-img bench for every other URL (iscsi://, nfs://, ...).</summary>
    Auto,

    /// <summary>fio (package fio), JSON output: libaio/io_uring for files and devices, its nbd engine for nbd:// URLs.</summary>
    Fio,

    /// <summary><c>qemu-img bench</c> (package qemu-utils): any image or URL QEMU opens; sequential only, no latency percentiles.</summary>
    QemuImgBench,
}

/// <summary>What a target is, as far as the load generator is concerned.</summary>
public enum ThroughputTargetKind
{
    File,
    BlockDevice,

    /// <summary>An nbd://, nbds://, nbd+unix:// or nbds+unix:// URI (the NBD URI specification).</summary>
    NbdUri,

    /// <summary>Any other URL QEMU's block layer opens: iscsi://, nfs://, ssh://, ...</summary>
    QemuUrl,
}

/// <summary>What to measure and how; the input of <see cref="ThroughputMeter"/>.</summary>
public sealed class ThroughputRequest
{
    public static readonly IReadOnlyList<long> DefaultBlockSizes = new long[] { 512, 1 << 20 };

    public const int DefaultDurationSeconds = 10;

    public const long DefaultScratchSize = 1L << 30;

    /// <summary>Bytes per request, each measured separately. Default 512 B and 1 MiB, the seed's columns.</summary>
    public IReadOnlyList<long> BlockSizes { get; init; } = DefaultBlockSizes;

    /// <summary>Default read and write; reads of a block size run before its writes.</summary>
    public IReadOnlyList<ThroughputOperation> Operations { get; init; } = new[] { ThroughputOperation.Read, ThroughputOperation.Write };

    public AccessPattern Pattern { get; init; } = AccessPattern.Sequential;

    /// <summary>Requests in flight (fio iodepth, qemu-img bench -d). Default 1, as dd and the seed's figures.</summary>
    public int QueueDepth { get; init; } = 1;

    /// <summary>How long each measurement runs, in seconds.</summary>
    public int DurationSeconds { get; init; } = DefaultDurationSeconds;

    public ThroughputEngine Engine { get; init; } = ThroughputEngine.Auto;

    /// <summary>fio's ioengine for files and block devices: libaio (default) or io_uring.</summary>
    public string IoEngine { get; init; } = "libaio";

    /// <summary>Go through the page cache (fio direct=0, qemu-img bench without -n) instead of direct I/O.</summary>
    public bool Buffered { get; init; }

    /// <summary>Write to a target even though it holds data (destroying it).</summary>
    public bool Force { get; init; }

    /// <summary>Size of the scratch file created when a target path does not exist yet, in bytes.</summary>
    public long ScratchSize { get; init; } = DefaultScratchSize;

    /// <summary>Keep the scratch file afterwards (it is removed by default).</summary>
    public bool KeepScratch { get; init; }
}

/// <summary>A target as given (a path or URL, optionally with what the object it came from knows about it).</summary>
public sealed class ThroughputTargetSpec
{
    public ThroughputTargetSpec(string location)
    {
        Location = location ?? string.Empty;
    }

    /// <summary>Absolute path on the load-generating host, or a URL (nbd://, iscsi://, ...).</summary>
    public string Location { get; }

    /// <summary>The source says the target is read-only (an NbdExport made with -ReadOnly): it is only read.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>The program serving the target when known (qemu-nbd, nbd-server, tgt), for the table's Server column.</summary>
    public string? Server { get; init; }

    public override string ToString() => Location;
}

/// <summary>A target after probing on the load-generating host.</summary>
public sealed class ThroughputTarget
{
    public required string Location { get; init; }

    public ThroughputTargetKind Kind { get; init; }

    /// <summary>Direct (a local file or device), NBD, iSCSI, or the URL scheme of another QEMU URL.</summary>
    public required string Protocol { get; init; }

    public string? Server { get; init; }

    /// <summary>Size in bytes (virtual size of an export or LUN).</summary>
    public long Size { get; init; }

    /// <summary>Only reads are allowed: the source or the server says read-only.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>Why writes are refused, or null when they are allowed.</summary>
    public string? WriteRefusal { get; init; }

    /// <summary>The cmdlet created this file for the measurement (and removes it unless asked to keep it).</summary>
    public bool IsScratch { get; init; }

    /// <summary>Direct I/O (O_DIRECT, fio direct=1) is used for this target.</summary>
    public bool DirectIo { get; init; }

    /// <summary>The smallest request alignment direct I/O needs here (512 or 4096 bytes), null when direct I/O is not used.</summary>
    public int? DirectIoAlignment { get; init; }

    /// <summary>Why direct I/O is not used (the file system refuses O_DIRECT, -Buffered, a URL), or null.</summary>
    public string? DirectIoNote { get; init; }

    public override string ToString() => Location;
}

/// <summary>One measurement: a target, a block size and an operation. Throughput is in MB/s (10^6 bytes per second), as fio and dd print it.</summary>
public sealed class ThroughputSample
{
    /// <summary>The host that generated the load.</summary>
    public required string HostName { get; init; }

    /// <summary>Direct, NBD, iSCSI, or the URL scheme of another QEMU URL.</summary>
    public required string Protocol { get; init; }

    /// <summary>The server program when known (qemu-nbd, nbd-server, tgt); null for direct targets and plain URLs.</summary>
    public string? Server { get; init; }

    /// <summary>The path or URL measured.</summary>
    public required string Target { get; init; }

    /// <summary>Bytes per request.</summary>
    public long BlockSize { get; init; }

    public ThroughputOperation Operation { get; init; }

    public AccessPattern Pattern { get; init; }

    public int QueueDepth { get; init; }

    /// <summary>Throughput in MB/s (10^6 bytes per second).</summary>
    public double MBps { get; init; }

    /// <summary>Requests completed per second.</summary>
    public double Iops { get; init; }

    /// <summary>Mean completion latency in microseconds (fio lat_ns.mean; for qemu-img bench derived as queue depth / IOPS).</summary>
    public double? LatencyAvgUs { get; init; }

    /// <summary>99th percentile completion latency in microseconds (fio clat_ns percentile 99; null for qemu-img bench).</summary>
    public double? LatencyP99Us { get; init; }

    public ThroughputEngine Engine { get; init; }

    /// <summary>fio's ioengine (libaio, io_uring, nbd) or qemu-img bench's AIO mode.</summary>
    public string? IoEngine { get; init; }

    public bool DirectIo { get; init; }

    /// <summary>How long the load ran (fio job runtime; qemu-img bench "Run completed in").</summary>
    public TimeSpan Runtime { get; init; }

    /// <summary>Bytes transferred during <see cref="Runtime"/>.</summary>
    public long Bytes { get; init; }

    public DateTimeOffset Timestamp { get; init; }

    /// <summary>The exact command that produced the figures, to rerun it by hand.</summary>
    public string CommandLine { get; init; } = string.Empty;

    /// <summary>The block size as the seed's table labels it: 512, 4K, 1MB (binary units).</summary>
    public string BlockSizeLabel => BlockSizes.Label(BlockSize);

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"[{HostName}] {Protocol} {Target} {BlockSizeLabel} {Pattern} {Operation}: {MBps:0.0} MB/s, {Iops:0} IOPS");
}

/// <summary>Block-size labels as the seed's table writes them.</summary>
public static class BlockSizes
{
    /// <summary>512 → "512", 4096 → "4K", 1048576 → "1MB" (binary units, as PowerShell's 1MB).</summary>
    public static string Label(long bytes) => bytes switch
    {
        >= 1 << 30 when bytes % (1 << 30) == 0 => $"{bytes >> 30}GB",
        >= 1 << 20 when bytes % (1 << 20) == 0 => $"{bytes >> 20}MB",
        >= 1 << 10 when bytes % (1 << 10) == 0 => $"{bytes >> 10}K",
        _ => bytes.ToString(CultureInfo.InvariantCulture),
    };
}
