using System.Text;
using System.Text.Json;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// The VM host's record of which destination a checkpoint chain belongs to: STATEDIR/chains/CHAIN.json on the VM host.
/// A checkpoint (rtclone-CHAIN-GENERATION) only names its chain; this record lets Get-DiskCheckpoint find the
/// destination and say when it is gone (the checkpoint is then orphaned: its bitmap grows with every guest write and
/// nothing will ever read it), and lets a clone notice a destination whose metadata was copied from another clone's.
/// </summary>
public sealed class CloneChainRecord
{
    public const string CurrentFormat = "replicatools-clone-chain/1";

    /// <summary>Where records live unless a run says otherwise (the VM host; the destination host keeps block-device sidecars there too).</summary>
    public const string DefaultStateDirectory = CloneDestination.BlockDeviceStateDirectory;

    public string Format { get; set; } = CurrentFormat;

    public string Chain { get; set; } = string.Empty;

    /// <summary>The VM (libvirt domain or QMP socket) and drive the chain's checkpoints are on.</summary>
    public string VM { get; set; } = string.Empty;

    public string Drive { get; set; } = string.Empty;

    /// <summary>The destination host as the clone's session named it (its HostName).</summary>
    public string DestinationHost { get; set; } = string.Empty;

    public string DestinationPath { get; set; } = string.Empty;

    /// <summary>The clone metadata file on the destination host (DEST.rtclone.json, or the block-device state file).</summary>
    public string SidecarPath { get; set; } = string.Empty;

    public DateTimeOffset UpdatedAt { get; set; }

    /// <summary>"HOST:PATH", for messages and the DiskCheckpoint view.</summary>
    public string Destination => $"{DestinationHost}:{DestinationPath}";

    public static string PathOf(string stateDirectory, string chain) => $"{stateDirectory.TrimEnd('/')}/chains/{chain}.json";

    public static async Task<CloneChainRecord?> ReadAsync(IReplicaHost host, string stateDirectory, string chain, CancellationToken cancellationToken)
    {
        var result = await host.RunAsync(new CommandSpec("cat", "--", PathOf(stateDirectory, chain)) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
        return result.ExitCode == 0 ? Parse(result.StandardOutput) : null;
    }

    /// <summary>The records of <paramref name="chains"/> that exist, by chain (one command).</summary>
    public static async Task<IReadOnlyDictionary<string, CloneChainRecord>> ReadManyAsync(IReplicaHost host, string stateDirectory, IReadOnlyCollection<string> chains, CancellationToken cancellationToken)
    {
        var records = new Dictionary<string, CloneChainRecord>(StringComparer.Ordinal);
        if (chains.Count == 0)
        {
            return records;
        }

        // Each record is printed followed by an ASCII record separator line, so one command reads them all.
        var script = "for f in \"$@\"; do [ -f \"$f\" ] && cat -- \"$f\" && printf '\\n\\036\\n'; done; exit 0";
        var result = await host.RunAsync(new CommandSpec(new[] { "sh", "-c", script, "rt" }.Concat(chains.Select(c => PathOf(stateDirectory, c)))) { Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
        foreach (var text in result.StandardOutput.Split('\u001e', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (Parse(text) is { } record)
            {
                records[record.Chain] = record;
            }
        }

        return records;
    }

    public async Task WriteAsync(IReplicaHost host, string stateDirectory, CancellationToken cancellationToken)
    {
        UpdatedAt = DateTimeOffset.Now;
        var path = PathOf(stateDirectory, Chain);
        var script = "set -e; mkdir -p -- \"$(dirname -- \"$1\")\"; cat > \"$1.tmp\"; mv -f -- \"$1.tmp\" \"$1\"";
        await host.RunAsync(new CommandSpec("sh", "-c", script, "rt", path)
        {
            StandardInput = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(this, CloneSidecar.Json)),
            Timeout = TimeSpan.FromMinutes(1),
        }, cancellationToken).ConfigureAwait(false);
    }

    public static Task DeleteAsync(IReplicaHost host, string stateDirectory, string chain, CancellationToken cancellationToken) =>
        host.RunAsync(new CommandSpec("rm", "-f", "--", PathOf(stateDirectory, chain)) { Timeout = TimeSpan.FromMinutes(1) }, cancellationToken);

    public static CloneChainRecord? Parse(string text)
    {
        try
        {
            var record = JsonSerializer.Deserialize<CloneChainRecord>(text, CloneSidecar.Json);
            return record?.Format == CurrentFormat && record.Chain.Length > 0 ? record : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
