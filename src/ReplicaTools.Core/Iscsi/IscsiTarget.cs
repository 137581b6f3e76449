using System.Globalization;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Iscsi;

/// <summary>Whether a target is served by tgtd now, and whether it comes back when tgtd restarts.</summary>
public enum IscsiTargetState
{
    /// <summary>tgtd serves the target now.</summary>
    Running,

    /// <summary>Its conf.d file is in place but tgtd does not serve it now; <c>tgt-admin -e</c> (a tgtd restart) brings it up.</summary>
    Stopped,

    /// <summary>
    /// Configured but deliberately not loaded: its file is kept as <c>NAME.conf.standby</c>, which tgt's
    /// <c>include conf.d/*.conf</c> does not read. The secondary of a replicated disk keeps its target like this.
    /// </summary>
    Standby,
}

/// <summary>
/// An iSCSI target of tgt (the Linux SCSI target framework) on one host: what <c>tgtadm --op show --mode target</c> reports,
/// joined with the conf.d file ReplicaTools wrote for it.
/// </summary>
public sealed class IscsiTarget
{
    /// <summary>The target name, e.g. <c>iqn.2024-10.com.example:r0</c> (RFC 3720 iSCSI qualified name).</summary>
    public required string Iqn { get; init; }

    /// <summary>The host tgtd runs on (set by the cmdlets to the session's host name, so the object pipes on).</summary>
    public required string HostName { get; set; }

    public ReplicaSession? Session { get; set; }

    /// <summary>The logical unit number clients address (tgt's LUN 0 is its controller; data LUNs start at 1).</summary>
    public int Lun { get; init; } = 1;

    /// <summary>The file or block device the LUN serves.</summary>
    public string? BackingStore { get; init; }

    /// <summary>tgtd's target id while it runs; null when not running.</summary>
    public int? Tid { get; init; }

    public IscsiTargetState State { get; init; }

    /// <summary>Initiator IQNs allowed to log in (tgt's initiator-name); empty with no <see cref="InitiatorAddress"/> means every initiator.</summary>
    public IReadOnlyList<string> InitiatorName { get; init; } = Array.Empty<string>();

    /// <summary>Initiator IP addresses (or address/prefix) allowed to log in (tgt's initiator-address).</summary>
    public IReadOnlyList<string> InitiatorAddress { get; init; } = Array.Empty<string>();

    /// <summary>Initiators logged in now (tgt's I_T nexus list).</summary>
    public IReadOnlyList<string> ConnectedInitiators { get; init; } = Array.Empty<string>();

    /// <summary>The conf.d file that recreates the target when tgtd starts (or its <c>.standby</c> twin); null when there is none.</summary>
    public string? ConfigFile { get; init; }

    /// <summary>The directory of that file (tgt's conf.d), so the object pipes into the other iSCSI cmdlets.</summary>
    public string? ConfigDirectory { get; init; }

    /// <summary>tgtd's management channel (tgtadm -C): 0 for the system's tgtd.</summary>
    public int ControlPort { get; init; }

    /// <summary>The address tgtd's iSCSI portal listens on (0.0.0.0 or :: for every address).</summary>
    public string? PortalAddress { get; init; }

    /// <summary>The portal's TCP port (3260 unless tgtd was told otherwise).</summary>
    public int Port { get; init; } = IscsiUri.DefaultPort;

    /// <summary>Where initiators reach the LUN: <c>iscsi://HOST:PORT/IQN/LUN</c>, as QEMU and libiscsi take it. Null when no portal is known.</summary>
    public string? Uri { get; init; }

    public override string ToString() => $"{Iqn} ({State}{(Uri is null ? string.Empty : ", " + Uri)})";
}

/// <summary>Builds and reads iSCSI URIs (<c>iscsi://host:port/IQN/LUN</c>, the form of libiscsi and QEMU's iscsi driver).</summary>
public static class IscsiUri
{
    public const int DefaultPort = 3260;

    public static string Build(string host, int port, string iqn, int lun)
    {
        ArgumentException.ThrowIfNullOrEmpty(host);
        var bracketed = host.Contains(':', StringComparison.Ordinal) && !host.StartsWith('[') ? $"[{host}]" : host;
        return $"iscsi://{bracketed}:{port.ToString(CultureInfo.InvariantCulture)}/{iqn}/{lun.ToString(CultureInfo.InvariantCulture)}";
    }

    /// <summary>Splits an iscsi:// URI into host, port, IQN and LUN; false when it is not one.</summary>
    public static bool TryParse(string? uri, out string host, out int port, out string iqn, out int lun)
    {
        host = iqn = string.Empty;
        port = DefaultPort;
        lun = 0;
        if (uri is null || !System.Uri.TryCreate(uri, UriKind.Absolute, out var parsed) || parsed.Scheme != "iscsi")
        {
            return false;
        }

        var parts = parsed.AbsolutePath.Trim('/').Split('/');
        if (parts.Length != 2 || parts[0].Length == 0 || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out lun))
        {
            return false;
        }

        host = parsed.Host.Trim('[', ']');
        port = parsed.IsDefaultPort || parsed.Port < 0 ? DefaultPort : parsed.Port;
        iqn = System.Uri.UnescapeDataString(parts[0]);
        return true;
    }
}
