using System.Text.Json;

namespace ReplicaTools.Core.Drbd;

/// <summary>
/// One resource as <c>drbdsetup status --json</c> reports it on one node (drbd-utils user/v9/drbdsetup.c,
/// resource_status_json and the functions it calls). Names and units are drbdsetup's: sizes in KiB.
/// </summary>
/// <param name="Name">The resource.</param>
/// <param name="NodeId">This node's node-id in the resource.</param>
/// <param name="Role">Primary, Secondary or Unknown.</param>
public sealed record DrbdResourceStatus(string Name, int NodeId, string Role, bool Suspended, IReadOnlyList<DrbdDeviceStatus> Devices, IReadOnlyList<DrbdConnectionStatus> Connections)
{
    /// <summary>The disk state of volume 0 (the only volume ReplicaTools configures), or DUnknown.</summary>
    public string DiskState => Devices.FirstOrDefault()?.DiskState ?? "DUnknown";

    /// <summary>The connection to the (single) peer, if the resource has one.</summary>
    public DrbdConnectionStatus? Peer => Connections.FirstOrDefault();
}

/// <summary>A volume of the resource on this node.</summary>
/// <param name="SizeKiB">The usable size in KiB (drbdsetup prints sectors / 2); null when the kernel gave no statistics.</param>
public sealed record DrbdDeviceStatus(int Volume, int Minor, string DiskState, bool Client, bool Quorum, long? SizeKiB);

/// <summary>This node's connection to one peer.</summary>
public sealed record DrbdConnectionStatus(int PeerNodeId, string Name, string ConnectionState, string PeerRole, IReadOnlyList<DrbdPeerDeviceStatus> PeerDevices)
{
    public DrbdPeerDeviceStatus? Volume0 => PeerDevices.FirstOrDefault();
}

/// <summary>A volume as seen towards one peer: replication state, the peer's disk, what is out of sync.</summary>
/// <param name="OutOfSyncKiB">Data this node knows differs on the peer, KiB.</param>
/// <param name="PercentInSync">100 × (1 − out-of-sync / size), as drbdsetup computes it.</param>
/// <param name="PercentResyncDone">Progress of a running resync (present only while one runs).</param>
/// <param name="EstimatedSecondsToFinish">drbdsetup's estimate for a running resync with details; null otherwise.</param>
public sealed record DrbdPeerDeviceStatus(int Volume, string ReplicationState, string PeerDiskState, long OutOfSyncKiB, double PercentInSync, double? PercentResyncDone, double? EstimatedSecondsToFinish)
{
    /// <summary>True while a resync runs in either direction (SyncSource, SyncTarget, their paused forms).</summary>
    public bool IsResyncing => ReplicationState.StartsWith("Sync", StringComparison.Ordinal) || ReplicationState.StartsWith("PausedSync", StringComparison.Ordinal);
}

/// <summary>Parses the output of <c>drbdsetup status [RESOURCE] --json</c> with System.Text.Json.</summary>
public static class DrbdStatusJson
{
    /// <exception cref="JsonException">The text is not drbdsetup's status JSON.</exception>
    public static IReadOnlyList<DrbdResourceStatus> Parse(string json)
    {
        using var document = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true });
        if (document.RootElement.ValueKind != JsonValueKind.Array)
        {
            throw new JsonException("drbdsetup status --json prints an array of resources.");
        }

        return document.RootElement.EnumerateArray().Select(ParseResource).ToArray();
    }

    private static DrbdResourceStatus ParseResource(JsonElement resource) => new(
        RequiredString(resource, "name"),
        Int(resource, "node-id") ?? -1,
        String(resource, "role") ?? "Unknown",
        Bool(resource, "suspended") ?? false,
        Array(resource, "devices").Select(device => new DrbdDeviceStatus(
            Int(device, "volume") ?? 0,
            Int(device, "minor") ?? -1,
            String(device, "disk-state") ?? "DUnknown",
            Bool(device, "client") ?? false,
            Bool(device, "quorum") ?? true,
            Long(device, "size"))).ToArray(),
        Array(resource, "connections").Select(connection => new DrbdConnectionStatus(
            Int(connection, "peer-node-id") ?? -1,
            String(connection, "name") ?? string.Empty,
            String(connection, "connection-state") ?? "Unknown",
            String(connection, "peer-role") ?? "Unknown",
            Array(connection, "peer_devices").Select(peer => new DrbdPeerDeviceStatus(
                Int(peer, "volume") ?? 0,
                String(peer, "replication-state") ?? "Off",
                String(peer, "peer-disk-state") ?? "DUnknown",
                Long(peer, "out-of-sync") ?? 0,
                Double(peer, "percent-in-sync") ?? 0,
                Double(peer, "percent-resync-done"),
                Double(peer, "estimated-seconds-to-finish"))).ToArray())).ToArray());

    private static IEnumerable<JsonElement> Array(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Array ? value.EnumerateArray().ToArray() : System.Array.Empty<JsonElement>();

    private static string RequiredString(JsonElement element, string name) =>
        String(element, name) ?? throw new JsonException($"A resource in drbdsetup's status has no \"{name}\".");

    private static string? String(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static bool? Bool(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind is JsonValueKind.True or JsonValueKind.False ? value.GetBoolean() : null;

    private static int? Int(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out var number) ? number : null;

    private static long? Long(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out var number) ? number : null;

    private static double? Double(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number ? value.GetDouble() : null;
}
