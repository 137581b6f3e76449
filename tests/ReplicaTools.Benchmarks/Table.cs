using System.Globalization;

namespace ReplicaTools.Benchmarks;

/// <summary>A plain-text comparison table, printed in one go at the end of a run.</summary>
public sealed class Table(params string[] headers)
{
    private readonly List<string[]> rows = new();

    public void Add(params object[] cells) => rows.Add(cells.Select(c => c switch
    {
        double d => d.ToString("0.0", CultureInfo.InvariantCulture),
        _ => c?.ToString() ?? string.Empty,
    }).ToArray());

    public void Print(TextWriter writer)
    {
        var widths = headers.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        writer.WriteLine(string.Join(" | ", headers.Select((h, i) => h.PadRight(widths[i]))));
        writer.WriteLine(string.Join("-|-", widths.Select(w => new string('-', w))));
        foreach (var row in rows)
        {
            writer.WriteLine(string.Join(" | ", row.Select((c, i) => i == 0 ? c.PadRight(widths[i]) : c.PadLeft(widths[i]))));
        }
    }
}

public static class Stats
{
    public static double Percentile(IReadOnlyList<double> values, double percentile)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        var rank = percentile / 100.0 * (sorted.Length - 1);
        var low = (int)Math.Floor(rank);
        var high = (int)Math.Ceiling(rank);
        return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
    }
}
