using System.Globalization;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Storage;

/// <summary>A btrfs subvolume that holds disk images, with No_COW set so new images inherit it.</summary>
public sealed class DiskStore
{
    public required string Path { get; init; }

    public required string HostName { get; init; }

    public ReplicaSession? Session { get; init; }

    public long SubvolumeId { get; init; }

    public string? Uuid { get; init; }

    /// <summary>The store directory carries No_COW ('C'): files created in it inherit the attribute.</summary>
    public bool NoCow { get; init; }

    /// <summary>Where Checkpoint-DiskStore puts its snapshots by default: the sibling directory "&lt;store&gt;.checkpoints".</summary>
    public required string CheckpointDirectory { get; init; }

    public DateTimeOffset? CreatedAt { get; init; }

    public override string ToString() => $"[{HostName}] {Path}";
}

/// <summary>A read-only btrfs snapshot of a store, named after the UTC instant it was taken.</summary>
public sealed class DiskStoreCheckpoint
{
    /// <summary>The snapshot's name: its UTC creation time, e.g. 20250131T142501.123Z.</summary>
    public required string Name { get; init; }

    public required string Path { get; init; }

    public required string StorePath { get; init; }

    public required string HostName { get; init; }

    public ReplicaSession? Session { get; init; }

    public long SubvolumeId { get; init; }

    public string? Uuid { get; init; }

    /// <summary>The UUID of the store it is a snapshot of.</summary>
    public string? ParentUuid { get; init; }

    public bool ReadOnly { get; init; }

    public long Generation { get; init; }

    /// <summary>btrfs' creation time of the snapshot.</summary>
    public DateTimeOffset? CreatedAt { get; init; }

    public override string ToString() => $"[{HostName}] {Path}";
}

/// <summary>What <c>btrfs subvolume show PATH</c> prints, parsed.</summary>
public sealed record BtrfsSubvolumeInfo(
    string Name,
    string? Uuid,
    string? ParentUuid,
    long SubvolumeId,
    long Generation,
    bool ReadOnly,
    DateTimeOffset? CreatedAt,
    IReadOnlyList<string> Snapshots)
{
    /// <summary>
    /// Parses the "Key: value" lines (tab separated) of <c>btrfs subvolume show</c> (btrfs-progs 5.x/6.x). "-" stands
    /// for "none"; the "Snapshot(s):" list follows on indented lines.
    /// </summary>
    public static BtrfsSubvolumeInfo Parse(string output)
    {
        var values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var snapshots = new List<string>();
        var inSnapshots = false;
        foreach (var rawLine in output.Split('\n'))
        {
            var line = rawLine.Trim();
            if (line.Length == 0)
            {
                continue;
            }

            if (inSnapshots)
            {
                snapshots.Add(line);
                continue;
            }

            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0 || !rawLine.StartsWith('\t'))
            {
                continue;
            }

            var key = line[..colon].Trim();
            var value = line[(colon + 1)..].Trim();
            if (key.Equals("Snapshot(s)", StringComparison.OrdinalIgnoreCase))
            {
                inSnapshots = true;
                if (value.Length > 0)
                {
                    snapshots.Add(value);
                }

                continue;
            }

            values.TryAdd(key, value);
        }

        string? Value(string key) => values.TryGetValue(key, out var v) && v != "-" && v.Length > 0 ? v : null;
        long Number(string key) => long.TryParse(Value(key), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : 0;

        if (Value("Subvolume ID") is null)
        {
            throw new FormatException("'btrfs subvolume show' printed no 'Subvolume ID'.");
        }

        return new BtrfsSubvolumeInfo(
            Value("Name") ?? string.Empty,
            Value("UUID"),
            Value("Parent UUID"),
            Number("Subvolume ID"),
            Number("Generation"),
            (Value("Flags") ?? string.Empty).Split(',', StringSplitOptions.TrimEntries).Contains("readonly"),
            ParseTime(Value("Creation time")),
            snapshots);
    }

    /// <summary>"2025-01-31 14:25:01 +0000" (btrfs-progs' format).</summary>
    internal static DateTimeOffset? ParseTime(string? text)
    {
        if (text is null)
        {
            return null;
        }

        return DateTimeOffset.TryParseExact(text, "yyyy-MM-dd HH:mm:ss zzz", CultureInfo.InvariantCulture, DateTimeStyles.None, out var value)
               || DateTimeOffset.TryParseExact(InsertOffsetColon(text), "yyyy-MM-dd HH:mm:ss zzz", CultureInfo.InvariantCulture, DateTimeStyles.None, out value)
            ? value
            : null;
    }

    private static string InsertOffsetColon(string text) =>
        text.Length > 5 && (text[^5] == '+' || text[^5] == '-') ? text[..^2] + ":" + text[^2..] : text;
}
