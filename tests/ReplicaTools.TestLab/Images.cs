namespace ReplicaTools.TestLab;

/// <summary>Image helpers for tests, run with the real qemu tools (not through the code under test).</summary>
public static class Images
{
    public static void Create(string location, string format, string size) =>
        Tool.Run("qemu-img", "create", "-q", "-f", format, location, size);

    /// <summary>Writes <paramref name="pattern"/> bytes at an offset, offline (the image must not be open read-write elsewhere).</summary>
    public static void Write(string location, string format, byte pattern, long offset, long length) =>
        Tool.Run("qemu-io", "-f", format, "-c", $"write -P 0x{pattern:x2} {offset} {length}", location);

    /// <summary>True when the range holds only <paramref name="pattern"/> (read-only, shares locks with a running VM).</summary>
    public static bool HasPattern(string location, string format, byte pattern, long offset, long length)
    {
        var (code, stdout, stderr) = Tool.TryRun("qemu-io", new[] { "-r", "-U", "-f", format, "-c", $"read -P 0x{pattern:x2} {offset} {length}", location });
        return code == 0 && !stdout.Contains("Pattern verification failed", StringComparison.Ordinal) && !stderr.Contains("Pattern verification failed", StringComparison.Ordinal);
    }

    /// <summary>qemu-img compare (content, not format): (identical, what it said).</summary>
    public static (bool Identical, string Output) Compare(string a, string aFormat, string b, string bFormat)
    {
        var (code, stdout, stderr) = Tool.TryRun("qemu-img", new[] { "compare", "-U", "-f", aFormat, "-F", bFormat, a, b }, TimeSpan.FromMinutes(10));
        return (code == 0, (stdout + stderr).Trim());
    }

    /// <summary>
    /// Bytes a raw file holds as data: the data extents the file system reports (SEEK_DATA/SEEK_HOLE, via qemu-img map),
    /// i.e. its allocation without the file system's own metadata blocks (an extent tree grows with every punched hole).
    /// </summary>
    public static long AllocatedBytes(string rawFile)
    {
        using var map = System.Text.Json.JsonDocument.Parse(Tool.Run("qemu-img", "map", "-U", "--output=json", "-f", "raw", rawFile));
        return map.RootElement.EnumerateArray().Where(e => e.GetProperty("data").GetBoolean()).Sum(e => e.GetProperty("length").GetInt64());
    }

    public static string? Format(string location)
    {
        var (code, stdout, _) = Tool.TryRun("qemu-img", new[] { "info", "-U", "--output=json", location });
        return code != 0 ? null : System.Text.Json.JsonDocument.Parse(stdout).RootElement.GetProperty("format").GetString();
    }
}
