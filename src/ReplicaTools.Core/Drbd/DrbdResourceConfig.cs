using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ReplicaTools.Core.Drbd;

/// <summary>DRBD's replication protocols (drbd.conf(5) net section): A asynchronous, B memory-synchronous, C synchronous.</summary>
public enum DrbdProtocol
{
    A,
    B,
    C,
}

/// <summary>How the primary serves a replicated disk to the KVM hosts.</summary>
public enum ReplicatedDiskExport
{
    None,

    /// <summary>nbd-server (the seed scenario's NBD server), through New-NbdExport's machinery.</summary>
    Nbd,

    /// <summary>tgt, through New-IscsiTarget's machinery.</summary>
    Iscsi,
}

/// <summary>One of the two nodes of a resource: its <c>on NAME { ... }</c> section and where it exports.</summary>
/// <param name="NodeName">The host's kernel host name (uname -n): drbdadm picks the <c>on</c> section whose name matches it.</param>
/// <param name="Disk">The backing device.</param>
/// <param name="Address">The replication address (an IP address on the replication network).</param>
/// <param name="ExportAddress">Where this node's export listens (NBD) when it is primary.</param>
public sealed record DrbdNodeConfig(string NodeName, int NodeId, string Disk, string Address, string ExportAddress);

/// <summary>The export of a resource, the same on both nodes; it runs on whichever is primary.</summary>
/// <param name="Name">NBD export name.</param>
/// <param name="Port">NBD port (the iSCSI port is tgtd's own).</param>
public sealed record DrbdExportConfig(ReplicatedDiskExport Protocol, string? Name = null, int Port = 0, string? Iqn = null, int Lun = 1,
    IReadOnlyList<string>? InitiatorName = null, IReadOnlyList<string>? InitiatorAddress = null)
{
    public IReadOnlyList<string> InitiatorName { get; init; } = InitiatorName ?? Array.Empty<string>();

    public IReadOnlyList<string> InitiatorAddress { get; init; } = InitiatorAddress ?? Array.Empty<string>();

    public bool Equals(DrbdExportConfig? other) => other is not null && Protocol == other.Protocol && Name == other.Name && Port == other.Port
        && Iqn == other.Iqn && Lun == other.Lun && InitiatorName.SequenceEqual(other.InitiatorName) && InitiatorAddress.SequenceEqual(other.InitiatorAddress);

    public override int GetHashCode() => HashCode.Combine(Protocol, Name, Port, Iqn, Lun);
}

/// <summary>
/// A resource as ReplicaTools writes it to /etc/drbd.d/NAME.res on both nodes (identical text on both, as DRBD
/// wants). Everything but the shared secret is also kept as one JSON comment line, so the file reads back exactly.
/// </summary>
public sealed record DrbdResourceConfig
{
    /// <summary>First line of every file ReplicaTools writes; files without it are never changed or removed.</summary>
    public const string Header = "# Written by ReplicaTools (New-ReplicatedDisk); Remove-ReplicatedDisk removes it. Mode 0600: it holds the shared secret.";

    private const string ModelPrefix = "# replicatools: ";

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter() },
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public required string Name { get; init; }

    public int Minor { get; init; }

    /// <summary>The replication TCP port, the same on both nodes.</summary>
    public int Port { get; init; } = 7788;

    public DrbdProtocol Protocol { get; init; } = DrbdProtocol.C;

    /// <summary>cram-hmac-alg: the kernel crypto hash the peers authenticate with.</summary>
    public string HmacAlgorithm { get; init; } = "sha256";

    /// <summary>disk { resync-rate NM; } in MiB/s; null leaves DRBD's default.</summary>
    public int? ResyncRateMBps { get; init; }

    /// <summary>startup { wfc-timeout } in seconds; null leaves DRBD's default.</summary>
    public int? WaitForConnectionSeconds { get; init; }

    /// <summary>startup { degr-wfc-timeout } in seconds; null leaves DRBD's default.</summary>
    public int? DegradedWaitSeconds { get; init; }

    /// <summary>The two nodes in node-id order.</summary>
    public required IReadOnlyList<DrbdNodeConfig> Nodes { get; init; }

    public DrbdExportConfig Export { get; init; } = new(ReplicatedDiskExport.None);

    /// <summary>The block device of the resource: /dev/drbdMINOR.</summary>
    public string Device => "/dev/drbd" + Minor.ToString(CultureInfo.InvariantCulture);

    public DrbdNodeConfig? Node(string nodeName) => Nodes.FirstOrDefault(n => string.Equals(n.NodeName, nodeName, StringComparison.Ordinal));

    /// <summary>
    /// The file's text. <paramref name="sharedSecret"/> goes between double quotes; callers pass
    /// <see cref="Operations.PlannedCommand.Redacted"/> for anything that is shown or logged.
    /// </summary>
    public string Render(string sharedSecret)
    {
        var builder = new StringBuilder();
        builder.Append(Header).Append('\n');
        builder.Append(ModelPrefix).Append(JsonSerializer.Serialize(this, JsonOptions)).Append('\n');
        builder.Append("resource ").Append(Name).Append(" {\n");

        // Roles change only by command (New-, Switch-ReplicatedDisk): opening the device must never promote it.
        builder.Append("    options {\n        auto-promote no;\n    }\n");
        builder.Append("    net {\n");
        builder.Append("        protocol ").Append(Protocol).Append(";\n");
        builder.Append("        cram-hmac-alg ").Append(HmacAlgorithm).Append(";\n");
        builder.Append("        shared-secret \"").Append(sharedSecret).Append("\";\n");
        builder.Append("    }\n");
        if (ResyncRateMBps is { } rate)
        {
            builder.Append("    disk {\n        resync-rate ").Append(rate.ToString(CultureInfo.InvariantCulture)).Append("M;\n    }\n");
        }

        if (WaitForConnectionSeconds is not null || DegradedWaitSeconds is not null)
        {
            builder.Append("    startup {\n");
            if (WaitForConnectionSeconds is { } wfc)
            {
                builder.Append("        wfc-timeout ").Append(wfc.ToString(CultureInfo.InvariantCulture)).Append(";\n");
            }

            if (DegradedWaitSeconds is { } degraded)
            {
                builder.Append("        degr-wfc-timeout ").Append(degraded.ToString(CultureInfo.InvariantCulture)).Append(";\n");
            }

            builder.Append("    }\n");
        }

        foreach (var node in Nodes)
        {
            builder.Append("    on ").Append(node.NodeName).Append(" {\n");
            builder.Append("        node-id ").Append(node.NodeId.ToString(CultureInfo.InvariantCulture)).Append(";\n");
            builder.Append("        device ").Append(Device).Append(";\n");
            builder.Append("        disk \"").Append(node.Disk).Append("\";\n");
            builder.Append("        address ").Append(AddressClause(node.Address)).Append(";\n");
            builder.Append("        meta-disk internal;\n");
            builder.Append("    }\n");
        }

        builder.Append("}\n");
        return builder.ToString();
    }

    /// <summary>The resource a file <see cref="Render"/> wrote describes; null when the text is not one of ours.</summary>
    public static DrbdResourceConfig? Parse(string text)
    {
        var lines = text.Split('\n', 3);
        if (lines.Length < 2 || lines[0] != Header || !lines[1].StartsWith(ModelPrefix, StringComparison.Ordinal))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize<DrbdResourceConfig>(lines[1][ModelPrefix.Length..], JsonOptions);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>The differences to <paramref name="other"/> as "what: this vs other" phrases (the secret is not compared here).</summary>
    public IReadOnlyList<string> Differences(DrbdResourceConfig other)
    {
        var differences = new List<string>();
        void Compare(string what, object? mine, object? theirs)
        {
            if (!Equals(mine, theirs))
            {
                differences.Add($"{what} {theirs ?? "(none)"} instead of {mine ?? "(none)"}");
            }
        }

        Compare("device", Device, other.Device);
        Compare("port", Port, other.Port);
        Compare("protocol", Protocol, other.Protocol);
        Compare("cram-hmac-alg", HmacAlgorithm, other.HmacAlgorithm);
        Compare("resync-rate (MiB/s)", ResyncRateMBps, other.ResyncRateMBps);
        Compare("wfc-timeout", WaitForConnectionSeconds, other.WaitForConnectionSeconds);
        Compare("degr-wfc-timeout", DegradedWaitSeconds, other.DegradedWaitSeconds);
        Compare("nodes", string.Join(", ", Nodes.Select(n => $"{n.NodeName} ({n.Disk}, {n.Address})")), string.Join(", ", other.Nodes.Select(n => $"{n.NodeName} ({n.Disk}, {n.Address})")));
        Compare("export", DescribeExport(Export), DescribeExport(other.Export));
        return differences;
    }

    internal static string DescribeExport(DrbdExportConfig export) => export.Protocol switch
    {
        ReplicatedDiskExport.Nbd => $"NBD '{export.Name}' on port {export.Port}",
        ReplicatedDiskExport.Iscsi => $"iSCSI {export.Iqn} LUN {export.Lun}",
        _ => "none",
    };

    private string AddressClause(string address) =>
        IPAddress.TryParse(address, out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
            ? $"ipv6 [{address}]:{Port.ToString(CultureInfo.InvariantCulture)}"
            : $"ipv4 {address}:{Port.ToString(CultureInfo.InvariantCulture)}";
}
