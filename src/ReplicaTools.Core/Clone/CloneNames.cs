using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Qemu;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// Every object a clone creates carries the prefix "rtclone-", so the state an interrupted run leaves behind (block
/// jobs, nodes, exports, scratch files) can be found and repaired. Checkpoints (libvirt checkpoints, QMP persistent
/// bitmaps) are named rtclone-CHAIN-GENERATION: CHAIN is the destination's chain id (kept in its sidecar), GENERATION
/// counts the clones of that destination.
/// </summary>
public static partial class CloneNames
{
    public const string Prefix = "rtclone-";

    [GeneratedRegex("^rtclone-(?<chain>[0-9a-f]{8})-(?<gen>[0-9]{6,})$", RegexOptions.CultureInvariant)]
    private static partial Regex CheckpointPattern();

    public static string NewChain() => RandomHex(8);

    public static string NewRunId() => "r" + RandomHex(7);

    public static string Checkpoint(string chain, long generation) =>
        $"{Prefix}{chain}-{generation.ToString("D6", CultureInfo.InvariantCulture)}";

    /// <summary>
    /// The generation of the next checkpoint of <paramref name="chain"/>: one past both the destination's own record and
    /// every checkpoint of that chain the VM still has, so a new name never collides with an existing one (a destination
    /// restored from an older copy carries an older generation than the VM's newest).
    /// </summary>
    public static long NextGeneration(string chain, long recordedGeneration, IEnumerable<string> existingNames)
    {
        var newest = recordedGeneration;
        foreach (var name in existingNames)
        {
            if (TryParseCheckpoint(name, out var c, out var g) && c == chain && g > newest)
            {
                newest = g;
            }
        }

        return newest + 1;
    }

    public static bool TryParseCheckpoint(string name, out string chain, out long generation)
    {
        var match = CheckpointPattern().Match(name);
        chain = match.Success ? match.Groups["chain"].Value : string.Empty;
        generation = match.Success ? long.Parse(match.Groups["gen"].Value, CultureInfo.InvariantCulture) : 0;
        return match.Success;
    }

    public static bool IsCloneObject(string? name) => name is not null && name.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>Names of the transient objects of one run.</summary>
    public static string Export(string runId) => $"{Prefix}{runId}";

    public static string ExportId(string runId) => $"{Prefix}{runId}-export";

    public static string ExportBitmap(string runId) => $"{Prefix}{runId}-bitmap";

    public static string FleeceNode(string runId) => $"{Prefix}{runId}-fleece";

    public static string FilterNode(string runId) => $"{Prefix}{runId}-cbw";

    public static string Job(string runId) => $"{Prefix}{runId}-backup";

    /// <summary>A short stable key of a VM (and drive) for scratch and lock file names: the first 10 hex digits of a SHA-256.</summary>
    public static string VmKey(VirtualMachine vm, string? drive = null)
    {
        var identity = vm.Target.Identity;
        if (drive is not null)
        {
            identity += "\n" + drive;
        }

        return Hash(identity);
    }

    /// <summary>Scratch image of one run: rtclone-VMKEY-RUNID.qcow2 (found again by the VMKEY glob when stale).</summary>
    public static string ScratchFile(string directory, string vmKey, string runId) => $"{directory.TrimEnd('/')}/{Prefix}{vmKey}-{runId}.qcow2";

    public static string ScratchGlob(string vmKey) => $"{Prefix}{vmKey}-*";

    public static string Hash(string text) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..10].ToLowerInvariant();

    private static string RandomHex(int length) => Convert.ToHexString(RandomNumberGenerator.GetBytes((length + 1) / 2))[..length].ToLowerInvariant();
}
