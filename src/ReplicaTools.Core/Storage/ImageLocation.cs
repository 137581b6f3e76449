namespace ReplicaTools.Core.Storage;

/// <summary>
/// Where an image lives, as the operator wrote it: an absolute path on a host, or an <c>nfs://server/export/file</c>
/// URL that QEMU's libnfs driver opens from whatever host runs the command (no kernel mount involved).
/// </summary>
public sealed class ImageLocation
{
    private ImageLocation(string text, string? nfsServer, string? nfsDirectory, string fileName)
    {
        Text = text;
        NfsServer = nfsServer;
        NfsDirectory = nfsDirectory;
        FileName = fileName;
    }

    /// <summary>The path or URL exactly as given (what qemu-img receives).</summary>
    public string Text { get; }

    public bool IsNfsUrl => NfsServer is not null;

    /// <summary>The server part of an nfs:// URL (host or address, without port or credentials).</summary>
    public string? NfsServer { get; }

    /// <summary>
    /// The directory part of an nfs:// URL: what libnfs mounts (QEMU splits the URL path at its last '/': the part
    /// before it is the export path, the part after it the file).
    /// </summary>
    public string? NfsDirectory { get; }

    /// <summary>The last path component: the image file's name.</summary>
    public string FileName { get; }

    /// <summary>For a local path, its directory (where the file system type and No_COW are decided).</summary>
    public string? Directory => IsNfsUrl ? null : System.IO.Path.GetDirectoryName(Text) is { Length: > 0 } dir ? dir : "/";

    public static ImageLocation Parse(string text, string parameterName = "Path")
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new ArgumentException($"-{parameterName} is empty.", parameterName);
        }

        if (text.Any(char.IsControl))
        {
            throw new ArgumentException($"-{parameterName} '{text}' contains a control character.", parameterName);
        }

        if (text.StartsWith("nfs://", StringComparison.OrdinalIgnoreCase))
        {
            return ParseNfs(text, parameterName);
        }

        if (text.Contains("://", StringComparison.Ordinal))
        {
            throw new ArgumentException(
                $"-{parameterName} '{text}' is a URL that ReplicaTools does not manage images at; give an absolute path on the host or an nfs://server/export/file URL.",
                parameterName);
        }

        if (!text.StartsWith('/'))
        {
            throw new ArgumentException($"-{parameterName} '{text}' is not an absolute path; give an absolute path on the host (or an nfs:// URL).", parameterName);
        }

        if (text.EndsWith('/'))
        {
            throw new ArgumentException($"-{parameterName} '{text}' ends with '/': it names a directory, not an image file.", parameterName);
        }

        return new ImageLocation(text, null, null, System.IO.Path.GetFileName(text));
    }

    private static ImageLocation ParseNfs(string text, string parameterName)
    {
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || string.IsNullOrEmpty(uri.Host))
        {
            throw new ArgumentException($"-{parameterName} '{text}' is not a valid nfs:// URL; expected nfs://server/export/file.", parameterName);
        }

        if (!string.IsNullOrEmpty(uri.UserInfo))
        {
            throw new ArgumentException($"-{parameterName} '{text}': an nfs:// URL carries no user name or password.", parameterName);
        }

        var path = uri.AbsolutePath;
        var slash = path.LastIndexOf('/');
        if (slash <= 0 || slash == path.Length - 1)
        {
            throw new ArgumentException(
                $"-{parameterName} '{text}' needs an export directory and a file name: nfs://server/export/file (for example nfs://nfs1/images/vm1.vdi).",
                parameterName);
        }

        return new ImageLocation(text, uri.Host, Uri.UnescapeDataString(path[..slash]), Uri.UnescapeDataString(path[(slash + 1)..]));
    }

    public override string ToString() => Text;
}
