using System.Security;
using System.Text.Json.Nodes;

namespace ReplicaTools.Core.Mirror;

/// <summary>
/// Where a disk image lives, as seen from the VM host: an absolute path (a local file, a block device or a file on a
/// kernel NFS mount) or an <c>nfs://server/export/file</c> URL that QEMU opens itself with its libnfs driver.
/// </summary>
public sealed class ImageLocation
{
    private ImageLocation(string text, string? nfsServer, string path)
    {
        Text = text;
        NfsServer = nfsServer;
        Path = path;
    }

    /// <summary>The location as the operator wrote it (and as qemu-img and drive-mirror take it).</summary>
    public string Text { get; }

    /// <summary>The NFS server of an nfs:// URL; null for a path.</summary>
    public string? NfsServer { get; }

    public bool IsNfs => NfsServer is not null;

    /// <summary>The absolute path: on the VM host for a path, on the server (export path + file) for an nfs:// URL.</summary>
    public string Path { get; }

    /// <summary>The directory part, for messages and existence checks of a path.</summary>
    public string Directory => Path.Length > 1 && Path.LastIndexOf('/') > 0 ? Path[..Path.LastIndexOf('/')] : "/";

    /// <summary>Parses a path or nfs:// URL; anything else is an <see cref="ArgumentException"/> naming the parameter.</summary>
    public static ImageLocation Parse(string text, string parameterName = "Destination")
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
            if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || string.IsNullOrEmpty(uri.Host) || uri.AbsolutePath.Length < 2 || uri.AbsolutePath.EndsWith('/'))
            {
                throw new ArgumentException($"-{parameterName} '{text}' is not an NFS image URL of the form nfs://server/export/file.", parameterName);
            }

            if (!string.IsNullOrEmpty(uri.Query))
            {
                // QEMU accepts only uid/gid/tcp-syncnt/readahead/pagecache/debug; we pass none of them through structured options.
                throw new ArgumentException($"-{parameterName} '{text}': query parameters in NFS URLs are not supported by ReplicaTools.", parameterName);
            }

            // QEMU's libnfs driver always asks rpcbind for the ports: a port in the URL would be silently ignored.
            if (!uri.IsDefaultPort && uri.Port != -1)
            {
                throw new ArgumentException($"-{parameterName} '{text}': QEMU's NFS driver ignores the port in the URL (it asks rpcbind on the server). Leave the port out.", parameterName);
            }

            return new ImageLocation(text, uri.Host, Uri.UnescapeDataString(uri.AbsolutePath));
        }

        if (text.Contains("://", StringComparison.Ordinal))
        {
            throw new ArgumentException($"-{parameterName} '{text}': only absolute paths and nfs:// URLs are supported.", parameterName);
        }

        if (!text.StartsWith('/'))
        {
            throw new ArgumentException($"-{parameterName} '{text}' must be an absolute path on the VM host or an nfs://server/export/file URL.", parameterName);
        }

        if (text.EndsWith('/'))
        {
            throw new ArgumentException($"-{parameterName} '{text}' names a directory; give the image file.", parameterName);
        }

        return new ImageLocation(text, null, text);
    }

    /// <summary>The protocol node for -blockdev / blockdev-add (file or nfs driver).</summary>
    public JsonObject ToBlockdevProtocol(string? nodeName = null)
    {
        var node = IsNfs
            ? new JsonObject
            {
                ["driver"] = "nfs",
                ["server"] = new JsonObject { ["type"] = "inet", ["host"] = NfsServer },
                ["path"] = Path,
            }
            : new JsonObject { ["driver"] = Path.StartsWith("/dev/", StringComparison.Ordinal) ? "host_device" : "file", ["filename"] = Path };
        if (nodeName is not null)
        {
            node["node-name"] = nodeName;
        }

        return node;
    }

    /// <summary>A libvirt &lt;disk&gt; element for this image (file or network/nfs), without target.</summary>
    public string ToLibvirtDiskXml(string format, string? identityXml = null, string? targetXml = null, string device = "disk")
    {
        var driver = $"<driver name='qemu' type='{SecurityElement.Escape(format)}'/>";
        if (IsNfs)
        {
            return $"<disk type='network' device='{device}'>{driver}<source protocol='nfs' name='{SecurityElement.Escape(Path)}'>" +
                   $"<host name='{SecurityElement.Escape(NfsServer)}'/>{identityXml}</source>{targetXml}</disk>";
        }

        var type = Path.StartsWith("/dev/", StringComparison.Ordinal) ? "block" : "file";
        var attribute = type == "block" ? "dev" : "file";
        return $"<disk type='{type}' device='{device}'>{driver}<source {attribute}='{SecurityElement.Escape(Path)}'/>{targetXml}</disk>";
    }

    public override string ToString() => Text;

    public bool SameImageAs(string? other) =>
        other is not null && (string.Equals(Text, other, StringComparison.Ordinal) ||
                              (TryParse(other) is { } parsed && parsed.NfsServer == NfsServer && parsed.Path == Path));

    private static ImageLocation? TryParse(string text)
    {
        try
        {
            return Parse(text);
        }
        catch (ArgumentException)
        {
            return null;
        }
    }
}
