using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Quorum;

public enum QuorumProbeStatus
{
    Readable,
    NotFound,
    Unreachable,
    Unreadable,
}

/// <summary>What probing one replica from the VM host found.</summary>
public sealed record QuorumProbeResult(QuorumProbeStatus Status, string? Format, long? VirtualSize, string Reason);

/// <summary>
/// Probes a replica from the VM host, outside QEMU: paths and nfs:// URLs with qemu-img info under a kill timeout
/// (<see cref="ImageProbe"/>: libnfs waits for a dead server forever); NBD exports with qemu-img info too, except that
/// a replica the VM already has open is only connected to (socat), because NBD servers such as qemu-nbd serve one client
/// at a time by default and a second connection would wait.
/// </summary>
public static class QuorumProbe
{
    /// <summary>Opens the replica's header: status, format and size.</summary>
    public static async Task<QuorumProbeResult> ProbeAsync(IReplicaHost host, QuorumReplicaLocation location, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (location.Transport != QuorumTransport.Nbd)
        {
            var probe = await ImageProbe.ProbeAsync(host, location.Image!, null, false, timeout, cancellationToken).ConfigureAwait(false);
            return new QuorumProbeResult(Map(probe.Status), probe.Format, probe.VirtualSize, probe.Reason);
        }

        // An NBD export serves the disk's content: its format is raw, whatever the bytes look like.
        var seconds = Math.Max(1, (int)Math.Ceiling(timeout.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        var info = await host.RunAsync(new CommandSpec("timeout", "-s", "KILL", seconds, "qemu-img", "info", "--output=json", "-f", "raw", location.Text)
        {
            ThrowOnFailure = false,
            Timeout = timeout + TimeSpan.FromSeconds(30),
        }, cancellationToken).ConfigureAwait(false);
        if (info.ExitCode == 0)
        {
            try
            {
                var size = JsonDocument.Parse(info.StandardOutput).RootElement.GetProperty("virtual-size").GetInt64();
                return new QuorumProbeResult(QuorumProbeStatus.Readable, "raw", size, string.Empty);
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException)
            {
                return new QuorumProbeResult(QuorumProbeStatus.Unreadable, null, null, "qemu-img info printed no size: " + ex.Message);
            }
        }

        var stderr = info.StandardError.Trim();
        if (info.ExitCode is 137 or 124)
        {
            return new QuorumProbeResult(QuorumProbeStatus.Unreachable, null, null, $"the NBD server did not answer within {seconds} s (busy with another client, or hung)");
        }

        if (stderr.Contains("not present", StringComparison.Ordinal) || stderr.Contains("export not available", StringComparison.OrdinalIgnoreCase))
        {
            return new QuorumProbeResult(QuorumProbeStatus.NotFound, null, null, $"the NBD server has no export '{location.NbdExport}' ({stderr})");
        }

        return new QuorumProbeResult(QuorumProbeStatus.Unreachable, null, null, $"the NBD server {location.StorageHost ?? location.NbdSocket} cannot be reached: {stderr}");
    }

    /// <summary>
    /// Whether a replica that QEMU has open still answers: paths and nfs:// URLs as <see cref="ProbeAsync"/> (qemu-img -U
    /// shares QEMU's locks); an NBD server only by connecting to it.
    /// </summary>
    public static async Task<QuorumProbeResult> ProbeOpenAsync(IReplicaHost host, QuorumReplicaLocation location, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (location.Transport != QuorumTransport.Nbd)
        {
            return await ProbeAsync(host, location, timeout, cancellationToken).ConfigureAwait(false);
        }

        var address = location.NbdSocket is { } socket ? $"UNIX-CONNECT:{socket}" : $"TCP:{location.NbdHost}:{location.NbdPort!.Value.ToString(CultureInfo.InvariantCulture)},connect-timeout={Math.Max(1, (int)timeout.TotalSeconds)}";
        var stopwatch = Stopwatch.StartNew();
        var result = await host.RunAsync(new CommandSpec("socat", "-u", "OPEN:/dev/null", address) { ThrowOnFailure = false, Timeout = timeout + TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false);
        return result.ExitCode == 0
            ? new QuorumProbeResult(QuorumProbeStatus.Readable, "raw", null, string.Empty)
            : new QuorumProbeResult(QuorumProbeStatus.Unreachable, null, null,
                $"the NBD server {location.StorageHost ?? location.NbdSocket} does not accept connections ({result.StandardError.Trim().Replace('\n', ' ')}; {stopwatch.Elapsed.TotalSeconds:0.#} s)");
    }

    private static QuorumProbeStatus Map(ImageProbeStatus status) => status switch
    {
        ImageProbeStatus.Readable => QuorumProbeStatus.Readable,
        ImageProbeStatus.NotFound => QuorumProbeStatus.NotFound,
        ImageProbeStatus.Unreachable => QuorumProbeStatus.Unreachable,
        _ => QuorumProbeStatus.Unreadable,
    };
}
