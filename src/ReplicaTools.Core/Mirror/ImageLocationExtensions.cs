using System.Security;
using System.Text.Json.Nodes;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Mirror;

/// <summary>
/// What the mirror and failover code needs of an image location (<see cref="ImageLocation"/>, from Storage): the path on
/// the VM host or NFS server, and the same image as a QEMU -blockdev protocol node or a libvirt disk element.
/// </summary>
public static class ImageLocationExtensions
{
    /// <summary>The absolute path: on the VM host for a path, on the server (export directory + file) for an nfs:// URL.</summary>
    public static string ServerPath(this ImageLocation location) =>
        location.IsNfsUrl ? $"{location.NfsDirectory}/{location.FileName}" : location.Text;

    /// <summary>The protocol node for -blockdev / blockdev-add (file, host_device or nfs driver).</summary>
    public static JsonObject ToBlockdevProtocol(this ImageLocation location, string? nodeName = null)
    {
        var node = location.IsNfsUrl
            ? new JsonObject
            {
                ["driver"] = "nfs",
                ["server"] = new JsonObject { ["type"] = "inet", ["host"] = location.NfsServer },
                ["path"] = location.ServerPath(),
            }
            : new JsonObject { ["driver"] = location.Text.StartsWith("/dev/", StringComparison.Ordinal) ? "host_device" : "file", ["filename"] = location.Text };
        if (nodeName is not null)
        {
            node["node-name"] = nodeName;
        }

        return node;
    }

    /// <summary>A libvirt &lt;disk&gt; element for this image (file, block or network/nfs), with optional NFS identity and target.</summary>
    public static string ToLibvirtDiskXml(this ImageLocation location, string format, string? identityXml = null, string? targetXml = null, string device = "disk")
    {
        var driver = $"<driver name='qemu' type='{SecurityElement.Escape(format)}'/>";
        if (location.IsNfsUrl)
        {
            return $"<disk type='network' device='{device}'>{driver}<source protocol='nfs' name='{SecurityElement.Escape(location.ServerPath())}'>" +
                   $"<host name='{SecurityElement.Escape(location.NfsServer)}'/>{identityXml}</source>{targetXml}</disk>";
        }

        var block = location.Text.StartsWith("/dev/", StringComparison.Ordinal);
        return $"<disk type='{(block ? "block" : "file")}' device='{device}'>{driver}<source {(block ? "dev" : "file")}='{SecurityElement.Escape(location.Text)}'/>{targetXml}</disk>";
    }

    /// <summary>True when <paramref name="other"/> (a path or URL as QEMU or libvirt reports it) is the same image.</summary>
    public static bool SameImageAs(this ImageLocation location, string? other)
    {
        if (other is null)
        {
            return false;
        }

        if (string.Equals(location.Text, other, StringComparison.Ordinal))
        {
            return true;
        }

        try
        {
            var parsed = ImageLocation.Parse(other);
            return parsed.NfsServer == location.NfsServer && parsed.ServerPath() == location.ServerPath();
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}
