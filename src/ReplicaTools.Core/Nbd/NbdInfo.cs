using System.Globalization;
using System.Text.Json;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Nbd;

/// <summary>What an NBD server says about one export (from <c>nbdinfo --json</c>).</summary>
public sealed class NbdExportInfo
{
    public required string Uri { get; init; }

    public string ExportName { get; init; } = string.Empty;

    /// <summary>Size in bytes. nbd-server answers 0 to the info request nbdinfo --json makes; then this comes from <c>nbdinfo --size</c>.</summary>
    public long Size { get; init; }

    /// <summary>Where <see cref="Size"/> came from: "json" or "nbdinfo --size".</summary>
    public string SizeSource { get; init; } = "json";

    public IReadOnlyList<string> Contexts { get; init; } = Array.Empty<string>();

    public bool IsReadOnly { get; init; }

    public bool CanMultiConn { get; init; }

    public bool CanFlush { get; init; }

    public bool CanTrim { get; init; }

    public bool CanZero { get; init; }

    /// <summary>Whether the server speaks structured replies (needed for block status: sparse-aware copies, dirty bitmaps).</summary>
    public bool Structured { get; init; }

    public string? Protocol { get; init; }

    public string? Content { get; init; }

    public long? PreferredBlockSize { get; init; }

    public long? MaximumBlockSize { get; init; }

    public bool HasContext(string context) => Contexts.Contains(context, StringComparer.Ordinal);

    /// <summary>Whether the export offers the dirty bitmap <paramref name="bitmap"/> (name or full context).</summary>
    public bool HasDirtyBitmap(string bitmap) => HasContext(NbdContexts.DirtyBitmap(bitmap));
}

/// <summary>Allocation of an export's bytes, from <c>base:allocation</c> block status.</summary>
/// <param name="DataBytes">Bytes a sparse-aware copy reads and transfers.</param>
/// <param name="ZeroBytes">Bytes the server reports as holes or zeros, which such a copy skips.</param>
public sealed record NbdAllocation(long DataBytes, long ZeroBytes)
{
    public long Size => DataBytes + ZeroBytes;
}

/// <summary>Runs <c>nbdinfo</c> (package libnbd-bin) on a host and parses its JSON with System.Text.Json.</summary>
public static class NbdInfo
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    /// <summary>Connects from <paramref name="host"/> to <paramref name="uri"/> and describes the export.</summary>
    public static async Task<NbdExportInfo> GetAsync(IReplicaHost host, string uri, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        var result = await RunNbdInfoAsync(host, new CommandSpec("nbdinfo", "--json", "--", uri) { Timeout = Timeout }, cancellationToken).ConfigureAwait(false);
        var info = Parse(result.StandardOutput, uri);
        if (info.Size == 0)
        {
            // nbd-server answers NBD_OPT_INFO with size 0; a real connection (nbdinfo --size) gets the size.
            var size = await RunNbdInfoAsync(host, new CommandSpec("nbdinfo", "--size", "--", uri) { Timeout = Timeout }, cancellationToken).ConfigureAwait(false);
            if (long.TryParse(size.StandardOutput.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var bytes) && bytes > 0)
            {
                return Copy(info, bytes, "nbdinfo --size");
            }
        }

        return info;
    }

    /// <summary>Parses the JSON of <c>nbdinfo --json URI</c> (the first export it lists).</summary>
    public static NbdExportInfo Parse(string json, string uri)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            var root = document.RootElement;
            if (!root.TryGetProperty("exports", out var exports) || exports.ValueKind != JsonValueKind.Array || exports.GetArrayLength() == 0)
            {
                throw new JsonException("no \"exports\" array");
            }

            var export = exports[0];
            return new NbdExportInfo
            {
                Uri = uri,
                ExportName = String(export, "export-name") ?? string.Empty,
                Size = Int64(export, "export-size") ?? 0,
                Contexts = export.TryGetProperty("contexts", out var contexts) && contexts.ValueKind == JsonValueKind.Array
                    ? contexts.EnumerateArray().Select(c => c.GetString() ?? string.Empty).Where(c => c.Length > 0).ToArray()
                    : Array.Empty<string>(),
                IsReadOnly = Bool(export, "is_read_only"),
                CanMultiConn = Bool(export, "can_multi_conn"),
                CanFlush = Bool(export, "can_flush"),
                CanTrim = Bool(export, "can_trim"),
                CanZero = Bool(export, "can_zero"),
                Structured = Bool(root, "structured"),
                Protocol = String(root, "protocol"),
                Content = String(export, "content"),
                PreferredBlockSize = Int64(export, "block_size_preferred"),
                MaximumBlockSize = Int64(export, "block_size_maximum"),
            };
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException)
        {
            throw new ReplicaException("NbdInfoUnreadable", ReplicaErrorCategory.InvalidData,
                $"The output of 'nbdinfo --json {uri}' could not be read: {ex.Message}", null, uri, ex);
        }
    }

    /// <summary>
    /// Sums the export's <c>base:allocation</c> map (<c>nbdinfo --map --totals --json</c>). Null when the server offers no
    /// block status (nbd-server): then a copy reads every byte.
    /// </summary>
    public static async Task<NbdAllocation?> GetAllocationAsync(IReplicaHost host, string uri, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        var result = await RunNbdInfoAsync(host, new CommandSpec("nbdinfo", "--map", "--totals", "--json", "--", uri) { Timeout = Timeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            if (result.StandardError.Contains("does not support metadata context", StringComparison.Ordinal))
            {
                return null;
            }

            throw new CommandFailedException(result);
        }

        return ParseTotals(result.StandardOutput);
    }

    /// <summary>Parses <c>nbdinfo --map --totals --json</c>: entries of (size, type); type bit 1 (2) = reads as zero.</summary>
    public static NbdAllocation ParseTotals(string json)
    {
        using var document = JsonDocument.Parse(json);
        long data = 0, zero = 0;
        foreach (var entry in document.RootElement.EnumerateArray())
        {
            var size = entry.GetProperty("size").GetInt64();
            var type = entry.GetProperty("type").GetInt64();
            if ((type & 2) != 0)
            {
                zero += size;
            }
            else
            {
                data += size;
            }
        }

        return new NbdAllocation(data, zero);
    }

    private static async Task<CommandResult> RunNbdInfoAsync(IReplicaHost host, CommandSpec command, CancellationToken cancellationToken)
    {
        try
        {
            return await host.RunAsync(command, cancellationToken).ConfigureAwait(false);
        }
        catch (ProgramNotFoundException ex)
        {
            throw new NbdToolMissingException(host.Name, "nbdinfo", "libnbd-bin", ex.Message);
        }
    }

    private static NbdExportInfo Copy(NbdExportInfo info, long size, string source) => new()
    {
        Uri = info.Uri,
        ExportName = info.ExportName,
        Size = size,
        SizeSource = source,
        Contexts = info.Contexts,
        IsReadOnly = info.IsReadOnly,
        CanMultiConn = info.CanMultiConn,
        CanFlush = info.CanFlush,
        CanTrim = info.CanTrim,
        CanZero = info.CanZero,
        Structured = info.Structured,
        Protocol = info.Protocol,
        Content = info.Content,
        PreferredBlockSize = info.PreferredBlockSize,
        MaximumBlockSize = info.MaximumBlockSize,
    };

    private static string? String(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static long? Int64(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number ? value.GetInt64() : null;

    private static bool Bool(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.True;
}
