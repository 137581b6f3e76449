using System.Globalization;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Bench;

/// <summary>
/// <c>qemu-img bench</c> (package qemu-utils): sends a fixed number of requests of one size through QEMU's block
/// layer, to any image or URL QEMU opens (iscsi:// through libiscsi, nbd://, nfs://, files, devices). It runs a count,
/// not a time, so <see cref="CalibrateCount"/> sizes the count from a short trial run. It prints only the total time
/// ("Run completed in S seconds."), so latency is derived (queue depth / IOPS, Little's law) and has no percentiles.
/// </summary>
public static partial class QemuImgBench
{
    /// <summary>A trial shorter than this is too noisy to size the real run from.</summary>
    public static readonly TimeSpan MinimumTrial = TimeSpan.FromMilliseconds(300);

    /// <summary>The byte written by write measurements (qemu-img bench --pattern).</summary>
    public const int WritePattern = 0x5a;

    /// <summary>The command for <paramref name="count"/> requests of <paramref name="blockSize"/> bytes, sequential (step = block size).</summary>
    public static CommandSpec Build(ThroughputTarget target, ThroughputRequest request, long blockSize, ThroughputOperation operation, long count, TimeSpan timeout)
    {
        if (request.Pattern != AccessPattern.Sequential)
        {
            throw new ArgumentException("qemu-img bench measures sequential requests only.", nameof(request));
        }

        var size = blockSize.ToString(CultureInfo.InvariantCulture);
        var arguments = new List<string>
        {
            "qemu-img", "bench", "-f", "raw",
            "-c", count.ToString(CultureInfo.InvariantCulture),
            "-d", request.QueueDepth.ToString(CultureInfo.InvariantCulture),
            "-s", size, "-S", size,
        };
        if (target.Kind is ThroughputTargetKind.File or ThroughputTargetKind.BlockDevice)
        {
            // -t none opens with O_DIRECT (cache.direct=on); native AIO needs it.
            arguments.AddRange(target.DirectIo ? new[] { "-t", "none", "-i", "native" } : new[] { "-t", "writeback", "-i", "threads" });
        }

        if (operation == ThroughputOperation.Write)
        {
            // qemu-img bench writes zeros by default, which some servers store as holes; a pattern makes every write real.
            arguments.Add("-w");
            arguments.Add($"--pattern={WritePattern}");
        }

        arguments.Add("--");
        arguments.Add(target.Location);
        return new CommandSpec(arguments) { Timeout = timeout };
    }

    /// <summary>The run time from qemu-img bench's last line, "Run completed in 1.819 seconds.".</summary>
    /// <exception cref="ReplicaException">QemuImgBenchOutputUnreadable when the line is missing.</exception>
    public static TimeSpan ParseRuntime(string output)
    {
        var match = CompletedPattern().Match(output);
        if (!match.Success || !double.TryParse(match.Groups["s"].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds))
        {
            throw new ReplicaException("QemuImgBenchOutputUnreadable", ReplicaErrorCategory.InvalidData,
                $"qemu-img bench did not print 'Run completed in ... seconds.' Output: {(output.Length > 300 ? output[..300] : output)}", null, null);
        }

        // qemu-img prints milliseconds; a run faster than that still took some time.
        return TimeSpan.FromSeconds(Math.Max(seconds, 0.0005));
    }

    /// <summary>
    /// The request count for a run of about <paramref name="duration"/>, from a trial of <paramref name="trialCount"/>
    /// requests that took <paramref name="trialTime"/>; at least the queue depth, at most 2^31.
    /// </summary>
    public static long CalibrateCount(long trialCount, TimeSpan trialTime, TimeSpan duration, int queueDepth)
    {
        var perSecond = trialCount / Math.Max(trialTime.TotalSeconds, 0.0005);
        var count = (long)Math.Ceiling(perSecond * duration.TotalSeconds);
        return Math.Clamp(count, Math.Max(queueDepth, 1), int.MaxValue);
    }

    /// <summary>The first trial's count: about 64 MiB, at least 64 requests and the queue depth.</summary>
    public static long FirstTrialCount(long blockSize, int queueDepth) => Math.Max(Math.Max(64, queueDepth), (64L << 20) / Math.Max(blockSize, 1) / 16);

    [GeneratedRegex(@"Run completed in (?<s>[0-9.]+) seconds", RegexOptions.CultureInvariant)]
    private static partial Regex CompletedPattern();
}
