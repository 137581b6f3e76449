using System.Globalization;
using System.Text.Json;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Bench;

/// <summary>The figures of one fio job for one direction, from fio's JSON output.</summary>
public sealed record FioResult(long BandwidthBytes, double Iops, TimeSpan Runtime, long IoBytes, double? LatencyMeanNs, double? LatencyP99Ns, string Version);

/// <summary>
/// One fio job (package fio) as a command line, and the parser of its <c>--output-format=json</c> report.
/// Option names and JSON fields are fio's (fio(1), "JSON output"): jobs[].read|write.{bw_bytes, iops, runtime (ms),
/// io_bytes, lat_ns.mean, clat_ns.percentile["99.000000"]}.
/// </summary>
public static class FioJob
{
    public const string JobName = "replicatools";

    /// <summary>
    /// The fio command for one measurement of <paramref name="target"/>: a file or block device (ioengine libaio or
    /// io_uring, direct=1 where the target allows it) or an NBD URI (fio's nbd engine, which speaks NBD itself).
    /// Runs for <paramref name="durationSeconds"/> seconds (time_based).
    /// </summary>
    public static CommandSpec Build(ThroughputTarget target, ThroughputRequest request, long blockSize, ThroughputOperation operation, int durationSeconds)
    {
        var arguments = new List<string>
        {
            "fio",
            $"--name={JobName}",
            $"--rw={RwOption(request.Pattern, operation)}",
            $"--bs={blockSize.ToString(CultureInfo.InvariantCulture)}",
            $"--iodepth={request.QueueDepth.ToString(CultureInfo.InvariantCulture)}",
            "--numjobs=1",
            "--time_based=1",
            $"--runtime={durationSeconds.ToString(CultureInfo.InvariantCulture)}s",
            "--eta=never",
            "--output-format=json",
        };
        if (target.Kind == ThroughputTargetKind.NbdUri)
        {
            arguments.Add("--ioengine=nbd");
            arguments.Add($"--uri={target.Location}");
        }
        else
        {
            arguments.Add($"--ioengine={request.IoEngine}");
            arguments.Add($"--direct={(target.DirectIo ? 1 : 0)}");
            arguments.Add($"--filename={EscapeFileName(target.Location)}");
        }

        return new CommandSpec(arguments)
        {
            // fio stops itself after the runtime; the margin covers start-up and a slow server's connect.
            Timeout = TimeSpan.FromSeconds(durationSeconds + 120),
        };
    }

    /// <summary>Lays out a new file of <paramref name="size"/> bytes (fio create_only: written once, as fio does before reading).</summary>
    public static CommandSpec BuildLayout(string path, long size) => new(
        "fio", $"--name={JobName}-layout", $"--filename={EscapeFileName(path)}", $"--size={size.ToString(CultureInfo.InvariantCulture)}",
        "--rw=write", "--bs=1M", "--create_only=1", "--eta=never", "--output-format=json")
    {
        Timeout = TimeSpan.FromMinutes(30),
    };

    /// <summary>fio's rw= value: read, write, randread, randwrite.</summary>
    public static string RwOption(AccessPattern pattern, ThroughputOperation operation) => (pattern, operation) switch
    {
        (AccessPattern.Sequential, ThroughputOperation.Read) => "read",
        (AccessPattern.Sequential, ThroughputOperation.Write) => "write",
        (AccessPattern.Random, ThroughputOperation.Read) => "randread",
        _ => "randwrite",
    };

    /// <summary>fio splits --filename at ':' (several files); a literal colon is written '\:' (fio(1), filename).</summary>
    public static string EscapeFileName(string path) => path.Replace(":", "\\:", StringComparison.Ordinal);

    /// <summary>
    /// Parses fio's JSON report for <paramref name="operation"/>. fio's nbd engine prints "fio: connected to NBD server"
    /// before the JSON, so parsing starts at the first line that opens an object.
    /// </summary>
    /// <exception cref="ReplicaException">FioOutputUnreadable when there is no usable report, or the job reports an error.</exception>
    public static FioResult Parse(string output, ThroughputOperation operation)
    {
        var start = output.StartsWith('{') ? 0 : output.IndexOf("\n{", StringComparison.Ordinal) + 1;
        if (start < 0 || start >= output.Length || output[start] != '{')
        {
            throw Unreadable("no JSON object in fio's output", output);
        }

        try
        {
            using var document = JsonDocument.Parse(output[start..]);
            var root = document.RootElement;
            var version = root.TryGetProperty("fio version", out var v) ? v.GetString() ?? string.Empty : string.Empty;
            var jobs = root.GetProperty("jobs");
            if (jobs.GetArrayLength() == 0)
            {
                throw Unreadable("the report lists no job", output);
            }

            var job = jobs[0];
            if (job.TryGetProperty("error", out var error) && error.GetInt32() != 0)
            {
                throw new ReplicaException("FioJobFailed", ReplicaErrorCategory.InvalidResult,
                    $"fio's job ended with error {error.GetInt32()} ({Errno(error.GetInt32())}).", null, null);
            }

            var side = job.GetProperty(operation == ThroughputOperation.Read ? "read" : "write");
            double? p99 = null;
            if (side.TryGetProperty("clat_ns", out var clat) && clat.TryGetProperty("percentile", out var percentiles)
                && percentiles.TryGetProperty("99.000000", out var p) && p.ValueKind == JsonValueKind.Number)
            {
                p99 = p.GetDouble();
            }

            double? mean = side.TryGetProperty("lat_ns", out var lat) && lat.TryGetProperty("mean", out var m) ? m.GetDouble() : null;
            return new FioResult(
                side.GetProperty("bw_bytes").GetInt64(),
                side.GetProperty("iops").GetDouble(),
                TimeSpan.FromMilliseconds(side.GetProperty("runtime").GetInt64()),
                side.GetProperty("io_bytes").GetInt64(),
                mean is > 0 ? mean : null,
                p99 is > 0 ? p99 : null,
                version);
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw Unreadable(ex.Message, output);
        }
    }

    private static string Errno(int code) => code switch
    {
        5 => "EIO, an I/O error",
        13 => "EACCES, permission denied",
        22 => "EINVAL, invalid argument: often a block size the device or O_DIRECT does not accept",
        28 => "ENOSPC, no space left",
        30 => "EROFS, read-only",
        _ => $"errno {code}",
    };

    private static ReplicaException Unreadable(string detail, string output) =>
        new("FioOutputUnreadable", ReplicaErrorCategory.InvalidData,
            $"fio's JSON report could not be read ({detail}). Output began: {(output.Length > 300 ? output[..300] : output)}", null, null);
}
