using System.Text.Json;

namespace ReplicaTools.Core.Storage;

/// <summary>What <c>qemu-img info --output=json</c> says about one image.</summary>
public sealed record QemuImgInfo(
    string Format,
    long VirtualSize,
    long? ActualSize,
    long? ClusterSize,
    string? BackingFile,
    string? BackingFormat,
    bool? DirtyFlag,
    IReadOnlyList<DirtyBitmap> DirtyBitmaps)
{
    /// <summary>Parses qemu-img's JSON; <paramref name="source"/> names host and path for error messages.</summary>
    public static QemuImgInfo Parse(string json, string source)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new JsonException("the top level is not an object");
            }

            var format = root.TryGetProperty("format", out var f) ? f.GetString() : null;
            if (string.IsNullOrEmpty(format) || !root.TryGetProperty("virtual-size", out var size))
            {
                throw new JsonException("'format' or 'virtual-size' is missing");
            }

            var bitmaps = new List<DirtyBitmap>();
            if (root.TryGetProperty("format-specific", out var specific)
                && specific.TryGetProperty("data", out var data)
                && data.TryGetProperty("bitmaps", out var list)
                && list.ValueKind == JsonValueKind.Array)
            {
                foreach (var bitmap in list.EnumerateArray())
                {
                    var flags = bitmap.TryGetProperty("flags", out var flagList) && flagList.ValueKind == JsonValueKind.Array
                        ? flagList.EnumerateArray().Select(x => x.GetString() ?? string.Empty).Where(x => x.Length > 0).ToArray()
                        : Array.Empty<string>();
                    bitmaps.Add(new DirtyBitmap(
                        bitmap.GetProperty("name").GetString() ?? string.Empty,
                        bitmap.TryGetProperty("granularity", out var g) ? g.GetInt64() : 0,
                        flags));
                }
            }

            return new QemuImgInfo(
                format,
                size.GetInt64(),
                Int64OrNull(root, "actual-size"),
                Int64OrNull(root, "cluster-size"),
                StringOrNull(root, "backing-filename"),
                StringOrNull(root, "backing-filename-format"),
                root.TryGetProperty("dirty-flag", out var dirty) && dirty.ValueKind is JsonValueKind.True or JsonValueKind.False ? dirty.GetBoolean() : null,
                bitmaps);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new ReplicaException("ImageInfoUnreadable", ReplicaErrorCategory.InvalidResult,
                $"Cannot read the output of 'qemu-img info --output=json' for {source}: {ex.Message}.", target: source, inner: ex);
        }
    }

    private static long? Int64OrNull(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number ? value.GetInt64() : null;

    private static string? StringOrNull(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
}
