using System.Text.Json;
using System.Text.Json.Nodes;
using System.Xml.Linq;
using ReplicaTools.Core.Quorum;

namespace ReplicaTools.Tests.Quorum;

/// <summary>The quorum core's pure parts: locations, option rules, the definition's JSON and snippet, parsers.</summary>
public sealed class QuorumUnitTests
{
    [Theory]
    [InlineData("/srv/a/vm.raw", QuorumTransport.File, null)]
    [InlineData("nfs://nfs2/images/vm.raw", QuorumTransport.Nfs, "nfs2")]
    [InlineData("nbd://stor3:10810/vm1", QuorumTransport.Nbd, "stor3")]
    [InlineData("nbd://stor3/vm1", QuorumTransport.Nbd, "stor3")]
    [InlineData("nbd+unix:///vm1?socket=/run/nbd.sock", QuorumTransport.Nbd, null)]
    public void Locations_ParseToTheirTransportAndStorageHost(string text, QuorumTransport transport, string? storageHost)
    {
        var location = QuorumReplicaLocation.Parse(text);

        Assert.Equal(transport, location.Transport);
        Assert.Equal(storageHost, location.StorageHost);
        Assert.Equal(text, location.Text);
    }

    [Fact]
    public void NbdLocations_BecomeNbdProtocolNodes_WithTheDefaultPortSpeltOut()
    {
        var tcp = QuorumReplicaLocation.Parse("nbd://stor3/vm1").ToBlockdevProtocol("n-file");
        var unix = QuorumReplicaLocation.Parse("nbd+unix:///vm1?socket=/run/nbd.sock").ToBlockdevProtocol("n-file");

        Assert.Equal("""{"driver":"nbd","server":{"type":"inet","host":"stor3","port":"10809"},"export":"vm1","node-name":"n-file"}""", tcp.ToJsonString());
        Assert.Equal("""{"driver":"nbd","server":{"type":"unix","path":"/run/nbd.sock"},"export":"vm1","node-name":"n-file"}""", unix.ToJsonString());
    }

    [Theory]
    [InlineData("relative/vm.raw", "absolute path")]
    [InlineData("iscsi://t/iqn/1", "nbd://")]
    [InlineData("nbd+unix:///vm1", "socket")]
    [InlineData("nbds://stor/vm1", "TLS")]
    public void BadLocations_SayWhatIsExpected(string text, string hint)
    {
        var error = Assert.Throws<ArgumentException>(() => QuorumReplicaLocation.Parse(text));
        Assert.Contains(hint, error.Message);
        Assert.Equal("Replica", error.ParamName);
    }

    [Fact]
    public void TheSameReplica_IsRecognisedWhateverTheSpelling()
    {
        Assert.Equal(QuorumReplicaLocation.Parse("nfs://NFS2/images/vm.raw"), QuorumReplicaLocation.Parse("nfs://nfs2/images/vm.raw"));
        Assert.Equal(QuorumReplicaLocation.Parse("nbd://stor/vm1"), QuorumReplicaLocation.Parse("nbd://stor:10809/vm1"));
        Assert.Equal(QuorumReplicaLocation.Parse("/srv/a/../a/vm.raw"), QuorumReplicaLocation.Parse("/srv/a/vm.raw"));
        Assert.NotEqual(QuorumReplicaLocation.Parse("nfs://nfs2/images/vm.raw"), QuorumReplicaLocation.Parse("nfs://nfs3/images/vm.raw"));
    }

    [Theory]
    [InlineData(3, 4, false, false, QuorumReadPattern.Quorum, QuorumErrorIds.ThresholdInvalid)]
    [InlineData(3, 0, false, false, QuorumReadPattern.Quorum, QuorumErrorIds.ThresholdInvalid)]
    [InlineData(1, 1, false, false, QuorumReadPattern.Quorum, QuorumErrorIds.TooFewReplicas)]
    [InlineData(3, 2, false, true, QuorumReadPattern.Quorum, QuorumErrorIds.OptionConflict)]
    [InlineData(2, 1, false, true, QuorumReadPattern.Quorum, QuorumErrorIds.OptionConflict)]
    [InlineData(2, 2, true, true, QuorumReadPattern.Quorum, QuorumErrorIds.OptionConflict)]
    [InlineData(3, 2, true, false, QuorumReadPattern.Fifo, QuorumErrorIds.OptionConflict)]
    public void QemusOptionRules_AreCheckedBeforeQemuSeesThem(int replicas, int threshold, bool rewrite, bool blkverify, QuorumReadPattern pattern, string errorId)
    {
        var error = Assert.Throws<QuorumException>(() => QuorumDefinition.CheckOptions(replicas, threshold, pattern, rewrite, blkverify, "quorum0-quorum"));
        Assert.Equal(errorId, error.ErrorId);
    }

    [Theory]
    [InlineData("0bad")]
    [InlineData("has space")]
    [InlineData("a-node-name-that-is-far-too-long")]
    public void NodeNames_FollowQemusIdRulesAndLengthLimit(string name)
    {
        var error = Assert.Throws<QuorumException>(() => QuorumDefinition.CheckOptions(3, 2, QuorumReadPattern.Quorum, false, false, name));
        Assert.Equal(QuorumErrorIds.NameInvalid, error.ErrorId);
    }

    private static QuorumDefinition Sample(string? eventFile = null) => new()
    {
        NodeName = "q0",
        DeviceId = "qd",
        DeviceDriver = "virtio-blk-pci",
        Replicas = new[]
        {
            new QuorumReplicaSpec("q0-r1", QuorumReplicaLocation.Parse("/srv/a/d.raw"), "raw"),
            new QuorumReplicaSpec("q0-r2", QuorumReplicaLocation.Parse("nfs://nfs2/images/d.qcow2"), "qcow2"),
            new QuorumReplicaSpec("q0-r3", QuorumReplicaLocation.Parse("nbd://stor3/d"), "raw"),
        },
        VoteThreshold = 2,
        RewriteCorrupted = true,
        EventFile = eventFile,
        NextIndex = 4,
        Since = new Dictionary<string, DateTimeOffset> { ["q0-r1"] = new DateTimeOffset(2026, 11, 30, 8, 0, 0, TimeSpan.Zero) },
    };

    [Fact]
    public void TheDefinition_GivesQemusBlockdevJson_InReplicaOrder()
    {
        var definition = Sample();

        Assert.Equal(4, definition.BlockdevJson.Count);
        Assert.Equal("""{"driver":"raw","node-name":"q0-r1","file":{"driver":"file","filename":"/srv/a/d.raw","node-name":"q0-r1-file"}}""", definition.BlockdevJson[0]);
        Assert.Contains("\"driver\":\"nfs\"", definition.BlockdevJson[1]);
        Assert.Equal("""{"driver":"quorum","node-name":"q0","vote-threshold":2,"children":["q0-r1","q0-r2","q0-r3"],"rewrite-corrupted":true}""", definition.BlockdevJson[3]);
        Assert.Equal(new[] { "object-add", "blockdev-add", "blockdev-add", "blockdev-add", "blockdev-add", "device_add" }, definition.AttachCommands().Select(c => c.Command));
    }

    [Fact]
    public void TheRecord_RoundTrips()
    {
        var back = QuorumDefinition.FromRecord(Sample("/state/x.quorum-events").RecordJson());

        Assert.Equal("q0", back.NodeName);
        Assert.Equal("qd", back.DeviceId);
        Assert.Equal(2, back.VoteThreshold);
        Assert.True(back.RewriteCorrupted);
        Assert.Equal("/state/x.quorum-events", back.EventFile);
        Assert.Equal(4, back.NextIndex);
        Assert.Equal(new[] { "q0-r1", "q0-r2", "q0-r3" }, back.Replicas.Select(r => r.NodeName));
        Assert.Equal("nbd://stor3/d", back.Replicas[2].Location.Text);
        Assert.Equal(new DateTimeOffset(2026, 11, 30, 8, 0, 0, TimeSpan.Zero), back.Since["q0-r1"]);
        Assert.Throws<JsonException>(() => QuorumDefinition.FromRecord("""{"version":9}"""));
    }

    [Fact]
    public void TheLibvirtSnippet_PassesTheSameArguments_InQemusNamespace()
    {
        var definition = Sample();
        var element = XElement.Parse(definition.LibvirtXml);

        Assert.Equal(XName.Get("commandline", QuorumDefinition.LibvirtQemuNamespace), element.Name);
        Assert.Equal(definition.QemuArguments, element.Elements().Select(e => (string)e.Attribute("value")!));
        Assert.Equal("-object", definition.QemuArguments[0]);
        Assert.Equal("secret", (string?)JsonNode.Parse(definition.QemuArguments[1])!["qom-type"]);
        Assert.Equal("-device", definition.QemuArguments[^2]);
    }

    [Fact]
    public void ARepairedReplica_GetsANewDate_AndAReplacementTheNextIndex()
    {
        var definition = Sample();
        var when = DateTimeOffset.UtcNow;
        var inPlace = definition.WithReplica("q0-r2", definition.Replicas[1], when);
        var replaced = definition.WithReplica("q0-r2", new QuorumReplicaSpec("q0-r4", QuorumReplicaLocation.Parse("nbd://stor4/d"), "raw"), when);

        Assert.Equal(when, inPlace.Since["q0-r2"]);
        Assert.Equal(4, inPlace.NextIndex);
        Assert.Equal(new[] { "q0-r1", "q0-r4", "q0-r3" }, replaced.Replicas.Select(r => r.NodeName));
        Assert.Equal(5, replaced.NextIndex);
        Assert.False(replaced.Since.ContainsKey("q0-r2"));
    }

    [Fact]
    public void TheComparisonResult_IsParsed()
    {
        var result = QuorumCompareScript.ParseResult("""result {"size": 4194304, "sizes": [4194304, 4194304, 4194304], "compared": 4194304, "skipped": 0, "replicas": [{"first": null, "bytes": 0, "regions": 0}, {"first": 70000, "bytes": 512, "regions": 1}, {"first": null, "bytes": 0, "regions": 0}], "no_majority": {"first": 1048576, "bytes": 512, "regions": 1, "groups": [[0], [1], [2]]}}""");

        Assert.Equal(70000, result.Replicas[1].FirstDifference);
        Assert.Null(result.Replicas[0].FirstDifference);
        Assert.Equal(1048576, result.NoMajorityAt);
        Assert.Equal(3, result.NoMajorityGroups.Count);
        Assert.True(QuorumCompareScript.TryParseProgress("progress 10 20", out var done, out var total));
        Assert.Equal((10L, 20L), (done, total));
        Assert.False(QuorumCompareScript.TryParseProgress("result {}", out _, out _));
    }

    [Fact]
    public void RecordedEvents_AreParsed_WithSectorsAsBytes()
    {
        var bad = QuorumEventRecorder.ParseLine("""{"event": "QUORUM_REPORT_BAD", "data": {"node-name": "q0-r2", "sectors-count": 128, "sector-num": 3840, "type": "read", "error": "Input/output error"}, "timestamp": {"seconds": 1796025358, "microseconds": 820066}}""");
        var failure = QuorumEventRecorder.ParseLine("""{"event": "QUORUM_FAILURE", "data": {"reference": "q0", "sectors-count": 8, "sector-num": 2}, "timestamp": {"seconds": 1796025358, "microseconds": 1}}""");

        Assert.Equal("q0-r2", bad!.NodeName);
        Assert.Equal(3840 * 512, bad.Offset);
        Assert.Equal(128 * 512, bad.Length);
        Assert.Equal("Input/output error", bad.Error);
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1796025358).AddTicks(8200660), bad.Timestamp);
        Assert.Equal("q0", failure!.NodeName);
        Assert.Null(failure.Error);
        Assert.Null(QuorumEventRecorder.ParseLine("not json"));
        Assert.Null(QuorumEventRecorder.ParseLine("""{"event": "SHUTDOWN", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}"""));
    }

    [Fact]
    public void TheBlockGraph_GivesChildrenByEdgeName_AndTheDevice()
    {
        var graph = QuorumGraph.Parse(JsonDocument.Parse("""
            {"edges": [{"name": "children.0", "parent": 2, "child": 4}, {"name": "children.2", "parent": 2, "child": 8}, {"name": "file", "parent": 4, "child": 3}, {"name": "root", "parent": 1, "child": 2}],
             "nodes": [{"name": "q0", "type": "block-driver", "id": 2}, {"name": "r3", "type": "block-driver", "id": 8}, {"name": "r1", "type": "block-driver", "id": 4},
                       {"name": "r1-file", "type": "block-driver", "id": 3}, {"name": "/machine/peripheral/qd0/virtio-backend", "type": "block-backend", "id": 1}]}
            """).RootElement);

        Assert.Equal(new[] { ("children.0", "r1"), ("children.2", "r3") }, graph.ChildrenOf("q0"));
        Assert.Equal("qd0", graph.DeviceOf("q0"));
        Assert.Equal(new[] { "q0" }, graph.QuorumNodes());
        Assert.Null(graph.DeviceOf("r1"));
        Assert.Contains("r1-file", graph.NodeNames);
        Assert.DoesNotContain("/machine/peripheral/qd0/virtio-backend", graph.NodeNames);
    }
}
