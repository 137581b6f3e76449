using System.Globalization;
using System.Text.RegularExpressions;

namespace ReplicaTools.Core.Drbd;

/// <summary>
/// DRBD's internal metadata (meta-disk internal): superblock, activity log and one bitmap per peer at the end of the
/// backing disk. What it costs in bytes, and what <c>drbdmeta ... dump-md</c> says is on a disk.
/// </summary>
public static partial class DrbdMetadata
{
    /// <summary>Bitmap slots ReplicaTools creates: one peer (two-node resources; drbdadm create-md passes the peer count).</summary>
    public const int Peers = 1;

    /// <summary>
    /// Bytes the internal metadata takes at the end of a backing disk of <paramref name="backingBytes"/> bytes:
    /// Ms = ceil(Cs / 2^18) × 8 × N + 72 sectors (Cs the disk size in sectors, N the bitmap slots; DRBD 9 User's Guide,
    /// "Estimating metadata size", exact form for the default 4 KiB bitmap granularity), plus the disk's tail beyond the
    /// last whole 4 KiB block, which drbdmeta leaves unused. Checked against drbdmeta create-md in the tests.
    /// </summary>
    public static long InternalMetadataBytes(long backingBytes, int peers = Peers)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(backingBytes);
        var sectors = backingBytes / 512;
        var metadataSectors = ((sectors + (1L << 18) - 1) >> 18) * 8 * peers + 72;
        return backingBytes - AlignedDown(backingBytes) + metadataSectors * 512;
    }

    /// <summary>The size of /dev/drbdN on a backing disk of <paramref name="backingBytes"/> bytes (0 when the disk is too small).</summary>
    public static long UsableBytes(long backingBytes, int peers = Peers) => Math.Max(0, backingBytes - InternalMetadataBytes(backingBytes, peers));

    /// <summary>
    /// Reads <c>drbdmeta MINOR v09 DISK internal dump-md</c> output. Null when the output says the disk has no DRBD
    /// metadata ("No valid meta data found", drbdmeta's exit code 255 with nothing dumped).
    /// </summary>
    public static DrbdMetadataDump? ParseDump(string output)
    {
        var version = VersionLine().Match(output);
        if (!version.Success)
        {
            return null;
        }

        long? Number(Regex pattern)
        {
            var match = pattern.Match(output);
            return match.Success ? long.Parse(match.Groups["n"].Value, NumberStyles.Integer, CultureInfo.InvariantCulture) : null;
        }

        var uuid = CurrentUuid().Match(output);
        return new DrbdMetadataDump(
            version.Groups["v"].Value,
            (int)(Number(MaxPeers()) ?? 1),
            (int)(Number(NodeId()) ?? -1),
            uuid.Success ? uuid.Groups["u"].Value : null,
            Number(BitmapOffset()),
            Number(MetadataSectors()));
    }

    private static long AlignedDown(long bytes) => bytes & ~4095L;

    [GeneratedRegex("^version \"(?<v>v0[6-9])\";", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex VersionLine();

    [GeneratedRegex(@"^max-peers (?<n>\d+);", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex MaxPeers();

    [GeneratedRegex(@"^node-id (?<n>-?\d+);", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex NodeId();

    [GeneratedRegex(@"^current-uuid (?<u>0x[0-9A-Fa-f]+);", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex CurrentUuid();

    [GeneratedRegex(@"^# bm_offset (?<n>\d+)", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex BitmapOffset();

    [GeneratedRegex(@"^# md_size_sect (?<n>\d+)", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex MetadataSectors();
}

/// <summary>What dump-md found on a disk.</summary>
/// <param name="Version">Metadata format, e.g. v09.</param>
/// <param name="MaxPeers">Bitmap slots.</param>
/// <param name="NodeId">The node-id recorded (-1 until the disk was first attached).</param>
/// <param name="CurrentUuid">The current data generation UUID.</param>
/// <param name="BitmapOffset">Where the bitmap starts, in bytes: the end of the data area (the usable size).</param>
/// <param name="MetadataSectors">md_size_sect: the metadata's size in 512-byte sectors.</param>
public sealed record DrbdMetadataDump(string Version, int MaxPeers, int NodeId, string? CurrentUuid, long? BitmapOffset, long? MetadataSectors);
