using System.Globalization;
using System.Net;
using System.Text;

namespace ReplicaTools.Core.Bench;

/// <summary>Self-contained HTML pages (inline CSS and SVG, no scripts, nothing fetched), so a report opens offline.</summary>
public static class HtmlReport
{
    private const string Style = """
        body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
        table { border-collapse: collapse; margin: 1em 0; }
        th, td { border: 1px solid #bbb; padding: 4px 10px; }
        th { background: #eee; text-align: left; }
        td.n { text-align: right; font-variant-numeric: tabular-nums; }
        .Pass { background: #d7f5d7; } .Warn { background: #fff1c2; } .Fail { background: #ffd2d2; }
        .meta { color: #666; }
        svg text { font-family: system-ui, sans-serif; font-size: 11px; }
        """;

    /// <summary>A page with a title, a line of metadata and the given body HTML.</summary>
    public static string Page(string title, string meta, string body) => $"""
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>{Encode(title)}</title><style>{Style}</style></head>
        <body><h1>{Encode(title)}</h1><p class="meta">{Encode(meta)}</p>
        {body}
        </body></html>
        """;

    public static string Encode(string? text) => WebUtility.HtmlEncode(text ?? string.Empty);

    /// <summary>The throughput report: the seed-shaped table, one bar chart per block size (reads and writes per target), and every sample.</summary>
    public static string Throughput(IReadOnlyList<ThroughputSample> samples, string title, DateTimeOffset generatedAt)
    {
        var rows = ThroughputTable.Build(samples);
        var columns = ThroughputTable.Columns(rows);
        var body = new StringBuilder();
        body.Append("<h2>MB/s (10<sup>6</sup> bytes per second)</h2><table><tr><th>Protocol</th><th>Server</th><th>Host</th>");
        foreach (var column in columns)
        {
            body.Append("<th>").Append(Encode(column)).Append(" (MB/s)</th>");
        }

        body.Append("</tr>");
        foreach (var row in rows)
        {
            body.Append("<tr><td>").Append(Encode(row.Protocol)).Append("</td><td title=\"").Append(Encode(row.Target)).Append("\">")
                .Append(Encode(row.Label)).Append("</td><td>").Append(Encode(row.HostName)).Append("</td>");
            foreach (var column in columns)
            {
                body.Append("<td class=\"n\">").Append(row.Value(column) is { } v ? ThroughputTable.Format(v) : string.Empty).Append("</td>");
            }

            body.Append("</tr>");
        }

        body.Append("</table>");
        foreach (var blockSize in samples.Select(s => s.BlockSize).Distinct().Order())
        {
            body.Append("<h2>").Append(Encode(BlockSizes.Label(blockSize))).Append(" requests</h2>");
            body.Append(BarChart(rows, blockSize));
        }

        body.Append("<h2>Samples</h2><table><tr><th>Host</th><th>Protocol</th><th>Target</th><th>Block size</th><th>Operation</th><th>Pattern</th><th>QD</th>")
            .Append("<th>MB/s</th><th>IOPS</th><th>Avg latency µs</th><th>p99 latency µs</th><th>Engine</th><th>Direct I/O</th><th>Runtime s</th><th>Command</th></tr>");
        foreach (var s in samples)
        {
            body.Append("<tr><td>").Append(Encode(s.HostName)).Append("</td><td>").Append(Encode(s.Protocol)).Append("</td><td>").Append(Encode(s.Target))
                .Append("</td><td class=\"n\">").Append(s.BlockSize).Append("</td><td>").Append(s.Operation).Append("</td><td>").Append(s.Pattern)
                .Append("</td><td class=\"n\">").Append(s.QueueDepth).Append("</td><td class=\"n\">").Append(ThroughputTable.Format(s.MBps))
                .Append("</td><td class=\"n\">").Append(Number(s.Iops, "0")).Append("</td><td class=\"n\">").Append(Number(s.LatencyAvgUs, "0.0"))
                .Append("</td><td class=\"n\">").Append(Number(s.LatencyP99Us, "0.0")).Append("</td><td>").Append(Encode($"{s.Engine} ({s.IoEngine})"))
                .Append("</td><td>").Append(s.DirectIo ? "yes" : "no").Append("</td><td class=\"n\">").Append(Number(s.Runtime.TotalSeconds, "0.00"))
                .Append("</td><td><code>").Append(Encode(s.CommandLine)).Append("</code></td></tr>");
        }

        body.Append("</table>");
        return Page(title, $"Generated {generatedAt:yyyy-MM-dd HH:mm:ss zzz}; hosts: {string.Join(", ", samples.Select(s => s.HostName).Distinct())}.", body.ToString());
    }

    /// <summary>An SVG bar chart of one block size: per table row a read bar and a write bar, with their values.</summary>
    public static string BarChart(IReadOnlyList<ThroughputTableRow> rows, long blockSize)
    {
        const int barWidth = 28, gap = 24, top = 20, plotHeight = 180, left = 50;
        var read = ThroughputTable.ColumnName(blockSize, ThroughputOperation.Read);
        var write = ThroughputTable.ColumnName(blockSize, ThroughputOperation.Write);
        var max = rows.SelectMany(r => new[] { r.Value(read) ?? 0, r.Value(write) ?? 0 }).DefaultIfEmpty(0).Max();
        var scale = NiceCeiling(max);
        var width = left + rows.Count * (2 * barWidth + gap) + gap + 90;
        var height = top + plotHeight + 50;
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{Encode(BlockSizes.Label(blockSize))} throughput\">");
        for (var tick = 0; tick <= 4; tick++)
        {
            var y = top + plotHeight - plotHeight * tick / 4;
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{y}\" x2=\"{width - 90}\" y2=\"{y}\" stroke=\"#ddd\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{left - 4}\" y=\"{y + 4}\" text-anchor=\"end\">{Number(scale * tick / 4, "0.#")}</text>");
        }

        for (var i = 0; i < rows.Count; i++)
        {
            var x = left + gap + i * (2 * barWidth + gap);
            Bar(svg, x, rows[i].Value(read), scale, "#4a78c2");
            Bar(svg, x + barWidth, rows[i].Value(write), scale, "#e08a2c");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + barWidth}\" y=\"{top + plotHeight + 16}\" text-anchor=\"middle\">{Encode(rows[i].Protocol)}</text>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + barWidth}\" y=\"{top + plotHeight + 30}\" text-anchor=\"middle\">{Encode(Shorten(rows[i].Label, 18))}</text>");
        }

        var legendX = width - 80;
        svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{legendX}\" y=\"{top}\" width=\"10\" height=\"10\" fill=\"#4a78c2\"/><text x=\"{legendX + 14}\" y=\"{top + 9}\">Reads</text>");
        svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{legendX}\" y=\"{top + 16}\" width=\"10\" height=\"10\" fill=\"#e08a2c\"/><text x=\"{legendX + 14}\" y=\"{top + 25}\">Writes</text>");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{left}\" y=\"12\">MB/s</text></svg>");
        return svg.ToString();

        void Bar(StringBuilder target, int x, double? value, double fullScale, string colour)
        {
            if (value is not { } v)
            {
                return;
            }

            var h = fullScale <= 0 ? 0 : v / fullScale * plotHeight;
            var y = top + plotHeight - h;
            target.Append(CultureInfo.InvariantCulture, $"<rect x=\"{x}\" y=\"{y:0.#}\" width=\"{barWidth - 2}\" height=\"{h:0.#}\" fill=\"{colour}\"><title>{ThroughputTable.Format(v)} MB/s</title></rect>");
            target.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + (barWidth - 2) / 2.0:0.#}\" y=\"{y - 3:0.#}\" text-anchor=\"middle\">{Number(v, v >= 100 ? "0" : "0.0")}</text>");
        }
    }

    /// <summary>1, 2 or 5 times a power of ten, at least <paramref name="value"/>.</summary>
    public static double NiceCeiling(double value)
    {
        if (value <= 0)
        {
            return 1;
        }

        var power = Math.Pow(10, Math.Floor(Math.Log10(value)));
        foreach (var step in new[] { 1.0, 2.0, 5.0, 10.0 })
        {
            if (step * power >= value)
            {
                return step * power;
            }
        }

        return 10 * power;
    }

    public static string Number(double? value, string format) => value is { } v ? v.ToString(format, CultureInfo.InvariantCulture) : string.Empty;

    private static string Shorten(string text, int length) => text.Length <= length ? text : "…" + text[^(length - 1)..];
}
