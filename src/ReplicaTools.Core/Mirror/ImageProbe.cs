using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Mirror;

public enum ImageProbeStatus
{
    /// <summary>The image opened (and, when asked, its first and last blocks were read).</summary>
    Readable,

    /// <summary>The storage answered, but there is no such file.</summary>
    NotFound,

    /// <summary>The storage did not answer: NFS server down, not exported, or hung (killed after the timeout).</summary>
    Unreachable,

    /// <summary>The file exists but cannot be opened or read as an image (permissions, corrupt header, I/O error).</summary>
    Unreadable,
}

/// <summary>What probing one image found, with the reason in words.</summary>
public sealed class ImageProbeResult
{
    public required string Location { get; init; }

    public required ImageProbeStatus Status { get; init; }

    public string? Format { get; init; }

    public long? VirtualSize { get; init; }

    /// <summary>Why the image is not usable (empty when readable).</summary>
    public string Reason { get; init; } = string.Empty;

    public TimeSpan Elapsed { get; init; }

    public bool IsReadable => Status == ImageProbeStatus.Readable;
}

/// <summary>
/// Probes an image from the VM host with qemu-img/qemu-io under <c>timeout -s KILL</c>: libnfs has no timeout of its
/// own, and a hung NFS server would block the probe (or, worse, QEMU's main loop) forever.
/// </summary>
public static class ImageProbe
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(10);

    /// <summary>The commands a probe runs, for -WhatIf and tests.</summary>
    public static CommandSpec InfoCommand(ImageLocation location, string? format, TimeSpan timeout)
    {
        var arguments = new List<string> { "timeout", "-s", "KILL", Seconds(timeout), "qemu-img", "info", "--output=json", "-U" };
        if (format is not null)
        {
            arguments.AddRange(new[] { "-f", format });
        }

        arguments.Add(location.Text);
        return new CommandSpec(arguments) { Timeout = timeout + TimeSpan.FromSeconds(30), ThrowOnFailure = false };
    }

    public static CommandSpec ReadCommand(ImageLocation location, string format, long virtualSize, TimeSpan timeout)
    {
        var arguments = new List<string> { "timeout", "-s", "KILL", Seconds(timeout), "qemu-io", "-r", "-U", "-f", format };
        var length = Math.Min(65536, virtualSize);
        arguments.AddRange(new[] { "-c", $"read 0 {length}" });
        if (virtualSize > length)
        {
            arguments.AddRange(new[] { "-c", $"read {virtualSize - length} {length}" });
        }

        arguments.Add(location.Text);
        return new CommandSpec(arguments) { Timeout = timeout + TimeSpan.FromSeconds(30), ThrowOnFailure = false };
    }

    /// <summary>Opens the image's header (qemu-img info) and, with <paramref name="readData"/>, reads its first and last 64 KiB.</summary>
    public static async Task<ImageProbeResult> ProbeAsync(IReplicaHost host, ImageLocation location, string? format = null, bool readData = false, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var limit = timeout ?? DefaultTimeout;
        var stopwatch = Stopwatch.StartNew();
        var info = await host.RunAsync(InfoCommand(location, format, limit), cancellationToken).ConfigureAwait(false);
        if (info.ExitCode != 0)
        {
            var (status, reason) = Classify(info, location, limit);
            return new ImageProbeResult { Location = location.Text, Status = status, Reason = reason, Elapsed = stopwatch.Elapsed };
        }

        string? detectedFormat;
        long? virtualSize;
        try
        {
            using var json = JsonDocument.Parse(info.StandardOutput);
            detectedFormat = json.RootElement.TryGetProperty("format", out var f) ? f.GetString() : null;
            virtualSize = json.RootElement.TryGetProperty("virtual-size", out var v) ? v.GetInt64() : null;
        }
        catch (JsonException ex)
        {
            return new ImageProbeResult { Location = location.Text, Status = ImageProbeStatus.Unreadable, Reason = $"qemu-img info printed no JSON: {ex.Message}", Elapsed = stopwatch.Elapsed };
        }

        if (readData && detectedFormat is not null && virtualSize is > 0)
        {
            var read = await host.RunAsync(ReadCommand(location, detectedFormat, virtualSize.Value, limit), cancellationToken).ConfigureAwait(false);
            var expected = virtualSize > 65536 ? 2 : 1;
            var reads = read.StandardOutput.Split('\n').Count(line => line.StartsWith("read ", StringComparison.Ordinal) && line.Contains(" bytes at offset ", StringComparison.Ordinal));
            if (read.ExitCode != 0 || reads < expected || read.StandardOutput.Contains("failed", StringComparison.OrdinalIgnoreCase))
            {
                var (status, reason) = read.ExitCode == 137
                    ? (ImageProbeStatus.Unreachable, $"reading the image did not finish within {limit.TotalSeconds:0} s (the storage server hangs?) and was killed")
                    : (ImageProbeStatus.Unreadable, "the header opened but reading data failed: " + Tail(read.StandardError + read.StandardOutput));
                return new ImageProbeResult { Location = location.Text, Status = status, Format = detectedFormat, VirtualSize = virtualSize, Reason = reason, Elapsed = stopwatch.Elapsed };
            }
        }

        return new ImageProbeResult { Location = location.Text, Status = ImageProbeStatus.Readable, Format = detectedFormat, VirtualSize = virtualSize, Elapsed = stopwatch.Elapsed };
    }

    /// <summary>Turns a failed qemu-img run into a status and a reason an operator can act on.</summary>
    internal static (ImageProbeStatus Status, string Reason) Classify(CommandResult result, ImageLocation location, TimeSpan limit)
    {
        var stderr = result.StandardError.Trim();
        if (result.ExitCode is 137 or 124)
        {
            return (ImageProbeStatus.Unreachable, location.IsNfsUrl
                ? $"the NFS server '{location.NfsServer}' did not answer within {limit.TotalSeconds:0} s (hung?); the probe was killed"
                : $"opening the image did not finish within {limit.TotalSeconds:0} s; the probe was killed");
        }

        if (result.ExitCode == 127 && stderr.Contains("qemu-", StringComparison.Ordinal))
        {
            throw new ProgramNotFoundException(result.HostName, "qemu-img", stderr);
        }

        if (stderr.Contains("NFS3ERR_NOENT", StringComparison.Ordinal) || stderr.Contains("No such file or directory", StringComparison.Ordinal))
        {
            return (ImageProbeStatus.NotFound, location.IsNfsUrl ? $"the file '{location.ServerPath()}' does not exist on NFS server '{location.NfsServer}'" : $"the file '{location.ServerPath()}' does not exist");
        }

        string[] unreachable = { "Failed to mount nfs share", "nfs_service failed", "RPC error", "mount_cb", "Connection refused", "No route to host", "Program is not available" };
        if (unreachable.Any(marker => stderr.Contains(marker, StringComparison.Ordinal)))
        {
            return (ImageProbeStatus.Unreachable, $"the NFS server '{location.NfsServer}' cannot be reached: {Tail(stderr)}");
        }

        return (ImageProbeStatus.Unreadable, Tail(stderr.Length > 0 ? stderr : $"qemu-img exited with code {result.ExitCode}"));
    }

    private static string Seconds(TimeSpan timeout) => Math.Max(1, (int)Math.Ceiling(timeout.TotalSeconds)).ToString(CultureInfo.InvariantCulture);

    private static string Tail(string text)
    {
        var trimmed = text.Trim().Replace('\n', ' ');
        return trimmed.Length <= 500 ? trimmed : "..." + trimmed[^500..];
    }
}
