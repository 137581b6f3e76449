using System.Globalization;
using System.Text.Json.Nodes;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Quorum;

/// <summary>How QEMU reaches a replica.</summary>
public enum QuorumTransport
{
    /// <summary>A path on the VM host (a local disk, a block device, or a file system the VM host mounts).</summary>
    File,

    /// <summary>An nfs:// URL, opened by QEMU's libnfs driver (no kernel mount).</summary>
    Nfs,

    /// <summary>An NBD export (nbd://host[:port]/export or nbd+unix:///export?socket=PATH), opened by QEMU's NBD client.</summary>
    Nbd,
}

/// <summary>
/// Where one replica of a quorum disk lives, as QEMU on the VM host opens it: a path on the VM host, an
/// <c>nfs://server/export/file</c> URL, or an NBD URL (<c>nbd://host[:port]/export</c>, <c>nbd+unix:///export?socket=/path</c>;
/// the URI forms of the NBD project's URI specification, as qemu-img and nbdinfo take them).
/// </summary>
/// <remarks>
/// The transport decides what losing the storage host does to the VM (QEMU 7.2, measured here): QEMU's NBD client fails
/// the requests of a server that is gone, so the quorum reports the replica bad and carries on with the others; libnfs
/// (nfs://) retries a dead server forever without a timeout, so every request that reaches that replica waits until the
/// server is back, and with it the quorum's request (the quorum waits for all of its children).
/// </remarks>
public sealed class QuorumReplicaLocation : IEquatable<QuorumReplicaLocation>
{
    private QuorumReplicaLocation(string text, QuorumTransport transport, ImageLocation? image, string? nbdHost, int? nbdPort, string? nbdSocket, string nbdExport)
    {
        Text = text;
        Transport = transport;
        Image = image;
        NbdHost = nbdHost;
        NbdPort = nbdPort;
        NbdSocket = nbdSocket;
        NbdExport = nbdExport;
    }

    /// <summary>The path or URL as given (what qemu-img receives).</summary>
    public string Text { get; }

    public QuorumTransport Transport { get; }

    /// <summary>The path or nfs:// URL (null for NBD).</summary>
    public ImageLocation? Image { get; }

    public string? NbdHost { get; }

    /// <summary>The NBD TCP port (10809 when the URL names none); null for a unix socket.</summary>
    public int? NbdPort { get; }

    /// <summary>The NBD server's unix socket on the VM host (nbd+unix://).</summary>
    public string? NbdSocket { get; }

    /// <summary>The NBD export name (empty for the default export).</summary>
    public string NbdExport { get; }

    /// <summary>
    /// The storage host as messages name it: the NFS or NBD server, or null for a path on the VM host (its storage is the
    /// VM host's).
    /// </summary>
    public string? StorageHost => Transport switch
    {
        QuorumTransport.Nfs => Image!.NfsServer,
        QuorumTransport.Nbd => NbdSocket is null ? NbdHost : null,
        _ => null,
    };

    /// <summary>
    /// What makes two locations the same replica: the path, the NFS server and path, or the NBD server and export.
    /// (Two different paths to one file are caught on the VM host by device and inode.)
    /// </summary>
    public string Key => Transport switch
    {
        QuorumTransport.Nfs => $"nfs://{Image!.NfsServer!.ToLowerInvariant()}{Image.ServerPath()}",
        QuorumTransport.Nbd => NbdSocket is null ? $"nbd://{NbdHost!.ToLowerInvariant()}:{NbdPort}/{NbdExport}" : $"nbd+unix://{NbdSocket}/{NbdExport}",
        _ => Path.GetFullPath(Text),
    };

    /// <summary>True when QEMU can create the image itself through qemu-img (a path or an nfs:// URL; not an NBD export).</summary>
    public bool CanCreate => Transport != QuorumTransport.Nbd;

    /// <summary>Parses a replica as given to -Replica.</summary>
    /// <exception cref="ArgumentException">Not an absolute path, nfs:// URL or NBD URL; the message says what was wrong.</exception>
    public static QuorumReplicaLocation Parse(string text, string parameterName = "Replica")
    {
        if (!string.IsNullOrWhiteSpace(text) && text.StartsWith("nbd", StringComparison.OrdinalIgnoreCase) && text.Contains("://", StringComparison.Ordinal))
        {
            return ParseNbd(text, parameterName);
        }

        ImageLocation image;
        try
        {
            image = ImageLocation.Parse(text, parameterName);
        }
        catch (ArgumentException ex) when (text?.Contains("://", StringComparison.Ordinal) == true && !text.StartsWith("nfs://", StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException(
                $"-{parameterName} '{text}' is a URL QEMU's quorum cannot be given here; use an absolute path on the VM host, nfs://server/export/file, nbd://host[:port]/export or nbd+unix:///export?socket=/path.",
                parameterName, ex);
        }

        return new QuorumReplicaLocation(image.Text, image.IsNfsUrl ? QuorumTransport.Nfs : QuorumTransport.File, image, null, null, null, string.Empty);
    }

    private static QuorumReplicaLocation ParseNbd(string text, string parameterName)
    {
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri))
        {
            throw new ArgumentException($"-{parameterName} '{text}' is not a valid NBD URL; expected nbd://host[:port]/export or nbd+unix:///export?socket=/path.", parameterName);
        }

        var export = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        switch (uri.Scheme.ToLowerInvariant())
        {
            case "nbd":
                if (string.IsNullOrEmpty(uri.Host))
                {
                    throw new ArgumentException($"-{parameterName} '{text}' names no NBD server; expected nbd://host[:port]/export.", parameterName);
                }

                return new QuorumReplicaLocation(text, QuorumTransport.Nbd, null, uri.Host.Trim('[', ']'), uri.IsDefaultPort || uri.Port < 0 ? 10809 : uri.Port, null, export);
            case "nbd+unix":
                var socket = uri.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries)
                    .Select(p => p.Split('=', 2)).Where(p => p.Length == 2 && p[0] == "socket").Select(p => Uri.UnescapeDataString(p[1])).FirstOrDefault();
                if (socket is null || !socket.StartsWith('/'))
                {
                    throw new ArgumentException($"-{parameterName} '{text}' needs the absolute path of the server's socket: nbd+unix:///export?socket=/path.", parameterName);
                }

                return new QuorumReplicaLocation(text, QuorumTransport.Nbd, null, null, null, socket, export);
            default:
                throw new ArgumentException($"-{parameterName} '{text}': the NBD URL scheme '{uri.Scheme}' is not supported (TLS is not); use nbd:// or nbd+unix://.", parameterName);
        }
    }

    /// <summary>The protocol node for -blockdev / blockdev-add (file, host_device, nfs or nbd driver).</summary>
    public JsonObject ToBlockdevProtocol(string nodeName)
    {
        if (Transport != QuorumTransport.Nbd)
        {
            return Image!.ToBlockdevProtocol(nodeName);
        }

        var server = NbdSocket is not null
            ? new JsonObject { ["type"] = "unix", ["path"] = NbdSocket }
            : new JsonObject { ["type"] = "inet", ["host"] = NbdHost, ["port"] = NbdPort!.Value.ToString(CultureInfo.InvariantCulture) };
        var node = new JsonObject { ["driver"] = "nbd", ["server"] = server };
        if (NbdExport.Length > 0)
        {
            node["export"] = NbdExport;
        }

        node["node-name"] = nodeName;
        return node;
    }

    public bool Equals(QuorumReplicaLocation? other) => other is not null && Key == other.Key;

    public override bool Equals(object? obj) => Equals(obj as QuorumReplicaLocation);

    public override int GetHashCode() => Key.GetHashCode(StringComparison.Ordinal);

    public override string ToString() => Text;
}
