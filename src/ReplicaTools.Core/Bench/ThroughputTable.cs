using System.Globalization;
using System.Text;

namespace ReplicaTools.Core.Bench;

/// <summary>
/// One row of the seed's throughput table: a target (protocol, server) with its MB/s per block size and operation.
/// The four fixed properties are the seed's columns (512 B and 1 MiB, reads and writes); <see cref="Values"/> has every
/// block size measured.
/// </summary>
public sealed class ThroughputTableRow
{
    public required string HostName { get; init; }

    public required string Protocol { get; init; }

    public string? Server { get; init; }

    public required string Target { get; init; }

    public AccessPattern Pattern { get; init; }

    public int QueueDepth { get; init; }

    /// <summary>MB/s by column name, e.g. "512 Reads", "1MB Writes".</summary>
    public IReadOnlyDictionary<string, double> Values { get; init; } = new Dictionary<string, double>();

    public IReadOnlyList<ThroughputSample> Samples { get; init; } = Array.Empty<ThroughputSample>();

    /// <summary>
    /// The table's second column: the server when known; for a direct target its file name (and "buffered" when the
    /// page cache was used); else the URL.
    /// </summary>
    public string Label => Server
        ?? (Protocol == "Direct"
            ? System.IO.Path.GetFileName(Target) + (Samples.Any(s => !s.DirectIo) ? " (buffered)" : string.Empty)
            : Target);

    public double? Read512 => Value("512 Reads");

    public double? Write512 => Value("512 Writes");

    public double? Read1MB => Value("1MB Reads");

    public double? Write1MB => Value("1MB Writes");

    public double? Value(string column) => Values.TryGetValue(column, out var value) ? value : null;

    public override string ToString() => $"{Protocol} {Label}: " + string.Join(", ", Values.Select(v => string.Create(CultureInfo.InvariantCulture, $"{v.Key} {v.Value:0.0}")));
}

/// <summary>Pivots samples into the seed's table (one row per target) and renders it as Markdown.</summary>
public static class ThroughputTable
{
    /// <summary>The column name of a block size and operation: "512 Reads", "1MB Writes".</summary>
    public static string ColumnName(long blockSize, ThroughputOperation operation) =>
        $"{BlockSizes.Label(blockSize)} {(operation == ThroughputOperation.Read ? "Reads" : "Writes")}";

    /// <summary>Rows in the order their targets first appear; a later sample of the same cell replaces an earlier one.</summary>
    public static IReadOnlyList<ThroughputTableRow> Build(IEnumerable<ThroughputSample> samples)
    {
        ArgumentNullException.ThrowIfNull(samples);
        var groups = new List<(string Key, List<ThroughputSample> Samples)>();
        foreach (var sample in samples)
        {
            var key = string.Join('\u001f', sample.HostName, sample.Protocol, sample.Server ?? string.Empty, sample.Target, sample.Pattern, sample.QueueDepth);
            var group = groups.FirstOrDefault(g => g.Key == key);
            if (group.Samples is null)
            {
                group = (key, new List<ThroughputSample>());
                groups.Add(group);
            }

            group.Samples.Add(sample);
        }

        return groups.Select(g =>
        {
            var first = g.Samples[0];
            var values = new Dictionary<string, double>(StringComparer.Ordinal);
            foreach (var sample in g.Samples.OrderBy(s => s.BlockSize).ThenBy(s => s.Operation))
            {
                values[ColumnName(sample.BlockSize, sample.Operation)] = sample.MBps;
            }

            return new ThroughputTableRow
            {
                HostName = first.HostName,
                Protocol = first.Protocol,
                Server = first.Server,
                Target = first.Target,
                Pattern = first.Pattern,
                QueueDepth = first.QueueDepth,
                Values = values,
                Samples = g.Samples,
            };
        }).ToArray();
    }

    /// <summary>The columns of <paramref name="rows"/>: every block size measured, ascending, reads then writes.</summary>
    public static IReadOnlyList<string> Columns(IEnumerable<ThroughputTableRow> rows) => rows
        .SelectMany(r => r.Samples)
        .Select(s => (s.BlockSize, s.Operation))
        .Distinct()
        .OrderBy(c => c.BlockSize).ThenBy(c => c.Operation)
        .Select(c => ColumnName(c.BlockSize, c.Operation))
        .ToArray();

    /// <summary>
    /// The table as Markdown in the seed's shape: <c>Protocol | Server | 512 Reads (MB/s) | 512 Writes (MB/s) | 1MB Reads (MB/s) | 1MB Writes (MB/s)</c>,
    /// numbers right-aligned with one decimal, an empty cell where nothing was measured.
    /// </summary>
    public static string ToMarkdown(IReadOnlyList<ThroughputTableRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var columns = Columns(rows);
        var builder = new StringBuilder();
        builder.Append("Protocol | Server");
        foreach (var column in columns)
        {
            builder.Append(" | ").Append(column).Append(" (MB/s)");
        }

        builder.AppendLine();
        builder.Append("---------|-------");
        foreach (var column in columns)
        {
            builder.Append('|').Append(new string('-', column.Length + 7)).Append(':');
        }

        builder.AppendLine();
        foreach (var row in rows)
        {
            builder.Append(row.Protocol).Append(" | ").Append(row.Label.Replace("|", "\\|", StringComparison.Ordinal));
            foreach (var column in columns)
            {
                builder.Append(" | ").Append(row.Value(column) is { } value ? Format(value) : string.Empty);
            }

            builder.AppendLine();
        }

        return builder.ToString();
    }

    /// <summary>MB/s with one decimal, invariant culture, as the seed prints them.</summary>
    public static string Format(double mbps) => mbps.ToString("0.0", CultureInfo.InvariantCulture);
}
