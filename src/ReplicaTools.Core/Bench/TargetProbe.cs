using System.Globalization;
using System.Text.Json;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Bench;

/// <summary>What a path is on its host, from <see cref="TargetProbe.PathScript"/>.</summary>
public sealed record PathFacts(string Kind, long Size, bool ReadOnly, IReadOnlyList<string> MissingTools, string? Parent, long? FreeBytes);

/// <summary>
/// Finds out, with read-only commands on the load-generating host, what a target is: kind, size, whether it is
/// reachable and writable, whether it holds data, and whether direct I/O works on it.
/// </summary>
public static class TargetProbe
{
    /// <summary>At most this many bytes of a target's allocated extents are read to decide whether it holds data.</summary>
    public const long DataCheckBudget = 64L << 20;

    public const long DataCheckChunk = 1L << 20;

    internal static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Network probes (nbdinfo, qemu-img info) give up after this: a black-holed address is "unreachable", not a hang.</summary>
    internal static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(20);

    /// <summary>
    /// sh script: $1 the path, then tool names. Prints missing=TOOL per absent tool, then kind=device|file|other|missing
    /// and size=, ro= (device: blockdev --getsize64/--getro; file: stat, test -w) or, for a missing path, parent= and free=.
    /// </summary>
    public const string PathScript = """
        p=$1; shift
        for t; do command -v "$t" >/dev/null 2>&1 || echo "missing=$t"; done
        if [ -b "$p" ]; then
          echo kind=device; echo "size=$(blockdev --getsize64 "$p")"; echo "ro=$(blockdev --getro "$p")"
        elif [ -f "$p" ]; then
          echo kind=file; echo "size=$(stat -L -c %s -- "$p")"; if [ -w "$p" ]; then echo ro=0; else echo ro=1; fi
        elif [ -e "$p" ]; then
          echo kind=other
        else
          echo kind=missing; d=$(dirname -- "$p")
          if [ -d "$d" ] && [ -w "$d" ]; then echo parent=writable; elif [ -d "$d" ]; then echo parent=readonly; else echo parent=missing; fi
          echo "free=$(df -P -k -- "$d" 2>/dev/null | awk 'NR==2 { print $4 * 1024 }')"
        fi
        """;

    /// <summary>sh script: $1 the path. Prints direct=512 or direct=4096 (the smallest O_DIRECT read that works) or direct=none and dd's complaint.</summary>
    public const string DirectIoScript = """
        for a in 512 4096; do
          if dd if="$1" of=/dev/null bs=$a count=1 iflag=direct 2>/dev/null; then echo "direct=$a"; exit 0; fi
        done
        echo direct=none; dd if="$1" of=/dev/null bs=4096 count=1 iflag=direct 2>&1 | tail -n 1
        """;

    /// <summary>sh script: $1..: tool names; prints missing=TOOL for each one not on PATH.</summary>
    public const string ToolsScript = """for t; do command -v "$t" >/dev/null 2>&1 || echo "missing=$t"; done""";

    /// <summary>Classifies a location: an absolute path, an NBD URI, or another URL QEMU opens.</summary>
    /// <exception cref="ReplicaException">TargetInvalid when it is neither.</exception>
    public static ThroughputTargetKind Classify(string location, string hostName)
    {
        var scheme = SchemeOf(location);
        if (scheme is null)
        {
            if (location.StartsWith('/') && !location.Contains('\n') && !location.Contains('\0'))
            {
                return ThroughputTargetKind.File;
            }

            throw new ReplicaException("TargetInvalid", ReplicaErrorCategory.InvalidArgument,
                $"-Target '{location}' is neither an absolute path on host '{hostName}' nor a URL (nbd://, iscsi://, ...). Give the full path of a file or block device, or a URL.",
                hostName, location);
        }

        return scheme is "nbd" or "nbds" or "nbd+unix" or "nbds+unix" ? ThroughputTargetKind.NbdUri : ThroughputTargetKind.QemuUrl;
    }

    /// <summary>The protocol column: Direct for paths, NBD, iSCSI, or the URL scheme.</summary>
    public static string ProtocolOf(string location) => SchemeOf(location) switch
    {
        null => "Direct",
        "nbd" or "nbds" or "nbd+unix" or "nbds+unix" => "NBD",
        "iscsi" or "iser" => "iSCSI",
        var other => other,
    };

    /// <summary>The lower-case URL scheme, or null for a path.</summary>
    public static string? SchemeOf(string location)
    {
        var colon = location.IndexOf("://", StringComparison.Ordinal);
        if (colon <= 0)
        {
            return null;
        }

        var scheme = location[..colon];
        return scheme.All(c => char.IsAsciiLetterOrDigit(c) || c is '+' or '-' or '.') ? scheme.ToLowerInvariant() : null;
    }

    /// <summary>Parses <see cref="PathScript"/>'s output.</summary>
    public static PathFacts ParsePathFacts(string output)
    {
        var missing = new List<string>();
        string kind = "other";
        long size = 0;
        var readOnly = false;
        string? parent = null;
        long? free = null;
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = line.IndexOf('=');
            if (eq <= 0)
            {
                continue;
            }

            var (key, value) = (line[..eq], line[(eq + 1)..]);
            switch (key)
            {
                case "missing": missing.Add(value); break;
                case "kind": kind = value; break;
                case "size": size = long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var s) ? s : 0; break;
                case "ro": readOnly = value == "1"; break;
                case "parent": parent = value; break;
                case "free": free = long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var f) ? f : null; break;
            }
        }

        return new PathFacts(kind, size, readOnly, missing, parent, free);
    }

    /// <summary>Throws ProgramNotFound naming the first missing tool and its Debian package.</summary>
    public static void RequireTools(string hostName, IReadOnlyList<string> missing, string why)
    {
        if (missing.Count == 0)
        {
            return;
        }

        var tool = missing[0];
        var package = PackageOf(tool);
        throw new ReplicaException("ProgramNotFound", ReplicaErrorCategory.NotInstalled,
            $"On host '{hostName}', {tool} is not installed (not on PATH), and it is needed {why}. Install the package '{package}' on that host (e.g. apt-get install {package}). Nothing was written.",
            hostName, tool)
        {
            RecommendedAction = $"Install '{package}' on '{hostName}', or measure from another host with -Session.",
        };
    }

    /// <summary>The Debian/Ubuntu package of a tool the measurements use.</summary>
    public static string PackageOf(string tool) => tool switch
    {
        "fio" => "fio",
        "qemu-img" or "qemu-io" or "qemu-nbd" => "qemu-utils",
        "nbdinfo" or "nbdcopy" => "libnbd-bin",
        "ping" => "iputils-ping",
        "blockdev" or "dd" => "util-linux / coreutils",
        "drbdadm" => "drbd-utils",
        "tgtd" or "tgtadm" => "tgt",
        "nbd-server" => "nbd-server",
        "qemu-system-x86_64" => "qemu-system-x86",
        "virsh" => "libvirt-clients",
        _ => tool,
    };

    /// <summary>Parses <see cref="DirectIoScript"/>'s output: the alignment, or null and the reason.</summary>
    public static (int? Alignment, string? Reason) ParseDirectIo(string output)
    {
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var first = lines.FirstOrDefault() ?? string.Empty;
        return first switch
        {
            "direct=512" => (512, null),
            "direct=4096" => (4096, null),
            _ => (null, lines.Length > 1 ? lines[^1] : "O_DIRECT reads failed"),
        };
    }

    /// <summary>
    /// The regions to read to decide whether a target holds data: every extent that may hold data when they total at most
    /// <see cref="DataCheckBudget"/>; otherwise the first and last MiB of them and evenly spaced MiBs in between.
    /// </summary>
    /// <param name="dataExtents">Extents (offset, length in bytes) that qemu-img map does not report as zero, in order.</param>
    public static IReadOnlyList<(long Offset, long Length)> DataCheckRegions(IReadOnlyList<(long Offset, long Length)> dataExtents)
    {
        var total = dataExtents.Sum(e => e.Length);
        var regions = new List<(long, long)>();
        if (total <= DataCheckBudget)
        {
            foreach (var (offset, length) in dataExtents)
            {
                for (var done = 0L; done < length; done += 8 * DataCheckChunk)
                {
                    regions.Add((offset + done, Math.Min(8 * DataCheckChunk, length - done)));
                }
            }

            return regions;
        }

        var count = (int)(DataCheckBudget / DataCheckChunk);
        var seen = new HashSet<long>();
        for (var i = 0; i < count; i++)
        {
            // Position i of count along the concatenated data, the last one ending exactly at its end.
            var position = (long)((double)(total - DataCheckChunk) * i / (count - 1));
            var remaining = position;
            foreach (var (offset, length) in dataExtents)
            {
                if (remaining < length)
                {
                    var start = offset + remaining;
                    var take = Math.Min(DataCheckChunk, offset + length - start);
                    if (seen.Add(start))
                    {
                        regions.Add((start, take));
                    }

                    break;
                }

                remaining -= length;
            }
        }

        return regions;
    }

    /// <summary>Extents of <c>qemu-img map --output=json</c> that may hold data (not reported as reading zero).</summary>
    public static IReadOnlyList<(long Offset, long Length)> ParseMap(string json)
    {
        using var document = JsonDocument.Parse(json);
        var extents = new List<(long, long)>();
        foreach (var extent in document.RootElement.EnumerateArray())
        {
            var zero = extent.TryGetProperty("zero", out var z) && z.ValueKind == JsonValueKind.True;
            if (!zero)
            {
                extents.Add((extent.GetProperty("start").GetInt64(), extent.GetProperty("length").GetInt64()));
            }
        }

        return extents;
    }

    /// <summary>
    /// Whether the target holds data: null when every byte checked reads as zero, else where non-zero bytes were found.
    /// Reads through QEMU (qemu-img map, then qemu-io read -P 0, read-only and sharing locks), so it works for paths and URLs alike.
    /// </summary>
    public static async Task<string?> FindDataAsync(IReplicaHost host, string location, CancellationToken cancellationToken)
    {
        var map = await host.RunAsync(new CommandSpec("qemu-img", "map", "--output=json", "-f", "raw", "-U", "--", location) { Timeout = ProbeTimeout }, cancellationToken).ConfigureAwait(false);
        IReadOnlyList<(long Offset, long Length)> extents;
        try
        {
            extents = ParseMap(map.StandardOutput);
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new ReplicaException("TargetProbeFailed", ReplicaErrorCategory.InvalidData,
                $"On host '{host.Name}', 'qemu-img map' of '{location}' printed no readable map ({ex.Message}).", host.Name, location);
        }

        var regions = DataCheckRegions(extents);
        if (regions.Count == 0)
        {
            return null;
        }

        var arguments = new List<string> { "qemu-io", "-r", "-U", "-f", "raw" };
        foreach (var (offset, length) in regions)
        {
            arguments.Add("-c");
            arguments.Add(string.Create(CultureInfo.InvariantCulture, $"read -P 0 {offset} {length}"));
        }

        arguments.Add(location);
        var read = await host.RunAsync(new CommandSpec(arguments) { Timeout = TimeSpan.FromMinutes(5), ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        var failed = read.StandardOutput.Split('\n').FirstOrDefault(l => l.StartsWith("Pattern verification failed", StringComparison.Ordinal));
        if (failed is not null)
        {
            var sampled = extents.Sum(e => e.Length) > DataCheckBudget ? " (sampled)" : string.Empty;
            return $"non-zero bytes found{sampled}: {failed.Replace("Pattern verification failed ", string.Empty, StringComparison.Ordinal).Trim()}";
        }

        if (read.ExitCode != 0)
        {
            throw new CommandFailedException(read);
        }

        return null;
    }

    /// <summary>Size and read-only flag of an NBD export, by nbdinfo (libnbd-bin); an unreachable server is TargetUnreachable.</summary>
    public static async Task<NbdExportInfo> NbdInfoAsync(IReplicaHost host, string uri, CancellationToken cancellationToken)
    {
        try
        {
            return await NbdInfo.GetAsync(host, uri, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is CommandFailedException or CommandTimeoutException)
        {
            throw Unreachable(host.Name, uri, ex);
        }
    }

    /// <summary>Virtual size of any URL QEMU opens (qemu-img info); an unreachable one is TargetUnreachable.</summary>
    public static async Task<long> QemuUrlSizeAsync(IReplicaHost host, string url, CancellationToken cancellationToken)
    {
        CommandResult info;
        try
        {
            info = await host.RunAsync(new CommandSpec("qemu-img", "info", "--output=json", "-f", "raw", "--", url) { Timeout = ConnectTimeout }, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is CommandFailedException or CommandTimeoutException)
        {
            throw Unreachable(host.Name, url, ex);
        }

        using var document = JsonDocument.Parse(info.StandardOutput);
        return document.RootElement.GetProperty("virtual-size").GetInt64();
    }

    /// <summary>True when QEMU can open the URL only read-only (a write-protected LUN): tried by opening it read-write, writing nothing.</summary>
    public static async Task<bool> QemuUrlIsReadOnlyAsync(IReplicaHost host, string url, CancellationToken cancellationToken)
    {
        var open = await host.RunAsync(new CommandSpec("qemu-io", "-f", "raw", "-c", "length", url) { Timeout = ConnectTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (open.ExitCode == 0 && !open.StandardError.Contains("can't open", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var text = open.StandardError + open.StandardOutput;
        if (text.Contains("read-only", StringComparison.OrdinalIgnoreCase) || text.Contains("write protect", StringComparison.OrdinalIgnoreCase)
            || text.Contains("Permission denied", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        throw new CommandFailedException(open);
    }

    private static ReplicaException Unreachable(string hostName, string url, Exception inner)
    {
        var detail = inner is CommandFailedException failed ? CommandFailedException.StderrTail(failed.StandardError) : inner.Message;
        return new ReplicaException("TargetUnreachable", ReplicaErrorCategory.ConnectionError,
            $"From host '{hostName}', the target '{url}' cannot be reached: {detail.TrimEnd('.')}. Nothing was measured or written.", hostName, url, inner)
        {
            RecommendedAction = "Check that the server runs and listens on that address and port, that the export or target name is right, and that this host can reach it (-Session chooses the host that generates the load).",
        };
    }
}
