using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using ReplicaTools.Core.Operations;

namespace ReplicaTools.Core.Quorum;

/// <summary>QEMU's quorum read-pattern (QAPI QuorumReadPattern).</summary>
public enum QuorumReadPattern
{
    /// <summary>Read every replica and vote; the read fails when fewer than vote-threshold replicas agree.</summary>
    Quorum,

    /// <summary>Read the first replica only, the next one on error (no vote, so no detection of corrupt data).</summary>
    Fifo,
}

/// <summary>One replica in a quorum definition: its block nodes and where it lives.</summary>
/// <param name="NodeName">The format node, the quorum's child (e.g. quorum0-r1).</param>
/// <param name="Location">Where the image lives.</param>
/// <param name="Format">qemu-img's format name (raw, qcow2 ...).</param>
public sealed record QuorumReplicaSpec(string NodeName, QuorumReplicaLocation Location, string Format)
{
    /// <summary>The protocol node under the format node (file, nfs or nbd driver).</summary>
    public string ProtocolNodeName => NodeName + "-file";

    /// <summary>-blockdev JSON of the replica: a format node over its protocol node.</summary>
    public JsonObject ToBlockdev() => new()
    {
        ["driver"] = Format,
        ["node-name"] = NodeName,
        ["file"] = Location.ToBlockdevProtocol(ProtocolNodeName),
    };
}

/// <summary>
/// A quorum disk as QEMU is given it: one format node per replica, the quorum node over them (QAPI BlockdevOptionsQuorum:
/// vote-threshold, read-pattern, rewrite-corrupted, blkverify), optionally a guest device, and a <c>secret</c> object that
/// carries the module's record of the disk (replica locations, options, event file) for as long as QEMU runs.
/// Pure data: the same definition yields the <c>-blockdev</c> arguments, the QMP steps and the libvirt snippet.
/// </summary>
public sealed partial record QuorumDefinition
{
    /// <summary>QEMU keeps node names in a 32-byte buffer: 31 characters at most (block.c, BlockDriverState.node_name).</summary>
    public const int MaxNodeNameLength = 31;

    /// <summary>The guest device New-QuorumDisk adds unless told otherwise.</summary>
    public const string DefaultDevice = "virtio-blk-pci";

    /// <summary>Prefix of the id of the secret object that holds a quorum disk's record.</summary>
    public const string RecordPrefix = "rt-quorum-";

    public const string LibvirtQemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0";

    public required string NodeName { get; init; }

    /// <summary>The guest device's id (qdev id); null when the quorum node is left for the user's own device.</summary>
    public string? DeviceId { get; init; }

    /// <summary>The device driver (virtio-blk-pci ...); null with <see cref="DeviceId"/> null.</summary>
    public string? DeviceDriver { get; init; }

    public required IReadOnlyList<QuorumReplicaSpec> Replicas { get; init; }

    public required int VoteThreshold { get; init; }

    public QuorumReadPattern ReadPattern { get; init; } = QuorumReadPattern.Quorum;

    public bool RewriteCorrupted { get; init; }

    public bool Blkverify { get; init; }

    /// <summary>The file on the VM host the event recorder appends to (null: no recorder).</summary>
    public string? EventFile { get; init; }

    /// <summary>When each replica joined (or was last rewritten): events from before do not count against it.</summary>
    public IReadOnlyDictionary<string, DateTimeOffset> Since { get; init; } = new Dictionary<string, DateTimeOffset>();

    /// <summary>The index the next replica's node name gets (quorum0-r4 after r1..r3).</summary>
    public int NextIndex { get; init; }

    /// <summary>The id of the secret object holding the record.</summary>
    public string RecordId => RecordPrefix + NodeName;

    /// <summary>The name the disk goes by in the module's objects: the device id, else the quorum node.</summary>
    public string Drive => DeviceId ?? NodeName;

    /// <summary>The format node name of replica <paramref name="index"/> (1-based).</summary>
    public static string ReplicaNodeName(string quorumNode, int index) => $"{quorumNode}-r{index.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>
    /// The QEMU rules for a quorum node's options, checked before anything reaches QEMU (block/quorum.c quorum_open):
    /// a vote threshold between 1 and the number of replicas, blkverify only with exactly two replicas and threshold 2,
    /// rewrite-corrupted not with blkverify. Also refused, though QEMU accepts them: fewer than two replicas (nothing to
    /// compare) and rewrite-corrupted with read-pattern fifo (it does nothing there).
    /// </summary>
    /// <exception cref="QuorumException">QuorumThresholdInvalid, QuorumTooFewReplicas, QuorumOptionConflict, QuorumNameInvalid.</exception>
    public static void CheckOptions(int replicaCount, int voteThreshold, QuorumReadPattern readPattern, bool rewriteCorrupted, bool blkverify, string nodeName)
    {
        if (replicaCount < 2)
        {
            throw new QuorumException(QuorumErrorIds.TooFewReplicas, ReplicaErrorCategory.InvalidArgument,
                $"-Replica names {replicaCount} replica{(replicaCount == 1 ? string.Empty : "s")}; a quorum disk needs at least two (three or more to outvote a bad one).");
        }

        if (voteThreshold < 1 || voteThreshold > replicaCount)
        {
            throw new QuorumException(QuorumErrorIds.ThresholdInvalid, ReplicaErrorCategory.InvalidArgument,
                $"-VoteThreshold {voteThreshold} is {(voteThreshold < 1 ? "below 1" : "above the number of replicas")}: with {replicaCount} replicas it must be between 1 and {replicaCount} " +
                $"(for example {replicaCount / 2 + 1}, a majority).")
            {
                RecommendedAction = $"Pass -VoteThreshold {replicaCount / 2 + 1}, or add replicas.",
            };
        }

        if (blkverify && (replicaCount != 2 || voteThreshold != 2))
        {
            throw new QuorumException(QuorumErrorIds.OptionConflict, ReplicaErrorCategory.InvalidArgument,
                $"-Blkverify needs exactly two replicas and -VoteThreshold 2 (QEMU's rule); got {replicaCount} replicas and threshold {voteThreshold}.");
        }

        if (rewriteCorrupted && blkverify)
        {
            throw new QuorumException(QuorumErrorIds.OptionConflict, ReplicaErrorCategory.InvalidArgument,
                "-RewriteCorrupted cannot be combined with -Blkverify: blkverify stops the VM at the first difference instead of outvoting it (QEMU's rule).");
        }

        if (rewriteCorrupted && readPattern == QuorumReadPattern.Fifo)
        {
            throw new QuorumException(QuorumErrorIds.OptionConflict, ReplicaErrorCategory.InvalidArgument,
                "-RewriteCorrupted does nothing with -ReadPattern Fifo: only one replica is read, so nothing is outvoted or rewritten (QEMU 7.2 accepts the combination and ignores it). Use -ReadPattern Quorum.");
        }

        CheckName(nodeName, "NodeName");
        CheckName(ReplicaNodeName(nodeName, Math.Max(replicaCount, 9)) + "-file", "NodeName");
    }

    /// <summary>QEMU's id rules (util/id.c id_wellformed) and the node-name length limit.</summary>
    public static void CheckName(string name, string parameterName)
    {
        if (!IdPattern().IsMatch(name))
        {
            throw new QuorumException(QuorumErrorIds.NameInvalid, ReplicaErrorCategory.InvalidArgument,
                $"-{parameterName} '{name}' is not a valid QEMU id: it must start with a letter and hold only letters, digits, '-', '.' and '_'.");
        }

        if (name.Length > MaxNodeNameLength)
        {
            throw new QuorumException(QuorumErrorIds.NameInvalid, ReplicaErrorCategory.InvalidArgument,
                $"-{parameterName}: the node name '{name}' is longer than QEMU's limit of {MaxNodeNameLength} characters (the replica nodes add '-rN-file' to the quorum node's name); choose a shorter -NodeName or -Drive.");
        }
    }

    [GeneratedRegex("^[A-Za-z][A-Za-z0-9_.-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex IdPattern();

    /// <summary>The quorum node's blockdev-add arguments (children by node name).</summary>
    public JsonObject QuorumBlockdev()
    {
        var quorum = new JsonObject
        {
            ["driver"] = "quorum",
            ["node-name"] = NodeName,
            ["vote-threshold"] = VoteThreshold,
            ["children"] = new JsonArray(Replicas.Select(r => (JsonNode)JsonValue.Create(r.NodeName)!).ToArray()),
        };
        if (ReadPattern != QuorumReadPattern.Quorum)
        {
            quorum["read-pattern"] = "fifo";
        }

        if (RewriteCorrupted)
        {
            quorum["rewrite-corrupted"] = true;
        }

        if (Blkverify)
        {
            quorum["blkverify"] = true;
        }

        return quorum;
    }

    /// <summary>The guest device's device_add arguments; null without a device.</summary>
    public JsonObject? Device() => DeviceId is null ? null : new JsonObject { ["driver"] = DeviceDriver ?? DefaultDevice, ["id"] = DeviceId, ["drive"] = NodeName };

    /// <summary>The record kept in QEMU (the secret object's data), as JSON text.</summary>
    public string RecordJson()
    {
        var record = new JsonObject
        {
            ["version"] = 1,
            ["node"] = NodeName,
            ["device"] = DeviceId,
            ["device-driver"] = DeviceId is null ? null : DeviceDriver ?? DefaultDevice,
            ["vote-threshold"] = VoteThreshold,
            ["read-pattern"] = ReadPattern == QuorumReadPattern.Fifo ? "fifo" : "quorum",
            ["rewrite-corrupted"] = RewriteCorrupted,
            ["blkverify"] = Blkverify,
            ["event-file"] = EventFile,
            ["next"] = NextIndex,
            ["replicas"] = new JsonArray(Replicas.Select(r => (JsonNode)new JsonObject
            {
                ["node"] = r.NodeName,
                ["location"] = r.Location.Text,
                ["format"] = r.Format,
                ["since"] = Since.TryGetValue(r.NodeName, out var since) ? since.ToString("O", CultureInfo.InvariantCulture) : null,
            }).ToArray()),
        };
        return record.ToJsonString();
    }

    /// <summary>Reads a record back (the secret object's data).</summary>
    /// <exception cref="JsonException">Not a record of this module.</exception>
    public static QuorumDefinition FromRecord(string json)
    {
        var record = JsonNode.Parse(json) as JsonObject ?? throw new JsonException("the record is not a JSON object");
        if ((int?)record["version"] != 1)
        {
            throw new JsonException("unknown record version");
        }

        var replicas = new List<QuorumReplicaSpec>();
        var since = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
        foreach (var item in record["replicas"] as JsonArray ?? new JsonArray())
        {
            var node = (string)item!["node"]!;
            replicas.Add(new QuorumReplicaSpec(node, QuorumReplicaLocation.Parse((string)item["location"]!), (string)item["format"]!));
            if ((string?)item["since"] is { } text && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var when))
            {
                since[node] = when;
            }
        }

        return new QuorumDefinition
        {
            NodeName = (string)record["node"]!,
            DeviceId = (string?)record["device"],
            DeviceDriver = (string?)record["device-driver"],
            VoteThreshold = (int)record["vote-threshold"]!,
            ReadPattern = (string?)record["read-pattern"] == "fifo" ? QuorumReadPattern.Fifo : QuorumReadPattern.Quorum,
            RewriteCorrupted = (bool?)record["rewrite-corrupted"] ?? false,
            Blkverify = (bool?)record["blkverify"] ?? false,
            EventFile = (string?)record["event-file"],
            NextIndex = (int?)record["next"] ?? replicas.Count + 1,
            Replicas = replicas,
            Since = since,
        };
    }

    /// <summary>object-add arguments of the record object.</summary>
    public JsonObject RecordObject() => new() { ["qom-type"] = "secret", ["id"] = RecordId, ["data"] = RecordJson() };

    /// <summary>
    /// The QMP steps that attach the disk to a running VM, in order: the record, each replica's nodes, the quorum node,
    /// the device. Undo runs the matching deletions in reverse.
    /// </summary>
    public IReadOnlyList<(string Command, JsonObject Arguments, string Purpose)> AttachCommands()
    {
        var steps = new List<(string, JsonObject, string)> { ("object-add", RecordObject(), "keep the module's record of the quorum disk in QEMU") };
        foreach (var replica in Replicas)
        {
            steps.Add(("blockdev-add", replica.ToBlockdev(), $"open replica {replica.Location.Text}"));
        }

        steps.Add(("blockdev-add", QuorumBlockdev(), $"the quorum node over {Replicas.Count} replicas, vote-threshold {VoteThreshold}"));
        if (Device() is { } device)
        {
            steps.Add(("device_add", device, $"the guest's {device["driver"]} device '{DeviceId}'"));
        }

        return steps;
    }

    /// <summary>QEMU command-line arguments: -object, -blockdev per node, -device (JSON syntax, QEMU 6.0 and later).</summary>
    public IReadOnlyList<string> QemuArguments
    {
        get
        {
            var arguments = new List<string> { "-object", RecordObject().ToJsonString(QmpCommand.Display) };
            foreach (var replica in Replicas)
            {
                arguments.Add("-blockdev");
                arguments.Add(replica.ToBlockdev().ToJsonString(QmpCommand.Display));
            }

            arguments.Add("-blockdev");
            arguments.Add(QuorumBlockdev().ToJsonString(QmpCommand.Display));
            if (Device() is { } device)
            {
                arguments.Add("-device");
                arguments.Add(device.ToJsonString(QmpCommand.Display));
            }

            return arguments;
        }
    }

    /// <summary>The -blockdev JSON of every node, replicas first, one per line.</summary>
    public IReadOnlyList<string> BlockdevJson =>
        Replicas.Select(r => r.ToBlockdev().ToJsonString(QmpCommand.Display)).Append(QuorumBlockdev().ToJsonString(QmpCommand.Display)).ToArray();

    /// <summary>
    /// The libvirt domain XML snippet: a <c>&lt;qemu:commandline&gt;</c> element with the same arguments (libvirt has no
    /// quorum disk type; libvirt accepts the element as a child of &lt;domain&gt;).
    /// </summary>
    public string LibvirtXml
    {
        get
        {
            XNamespace qemu = LibvirtQemuNamespace;
            var element = new XElement(qemu + "commandline", new XAttribute(XNamespace.Xmlns + "qemu", LibvirtQemuNamespace),
                QemuArguments.Select(a => new XElement(qemu + "arg", new XAttribute("value", a))));
            return element.ToString();
        }
    }

    /// <summary>This definition with a replica replaced (repair onto a new image) or re-dated (repair in place).</summary>
    public QuorumDefinition WithReplica(string oldNode, QuorumReplicaSpec replacement, DateTimeOffset since)
    {
        var dates = Since.Where(p => p.Key != oldNode).ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
        dates[replacement.NodeName] = since;
        return this with
        {
            Replicas = Replicas.Select(r => r.NodeName == oldNode ? replacement : r).ToArray(),
            Since = dates,
            NextIndex = replacement.NodeName == oldNode ? NextIndex : NextIndex + 1,
        };
    }

    public override string ToString() => $"{Drive}: quorum node {NodeName} over {Replicas.Count} replicas, vote-threshold {VoteThreshold}";
}
