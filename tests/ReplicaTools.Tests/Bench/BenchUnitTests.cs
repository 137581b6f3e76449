using System.Xml.Linq;
using ReplicaTools.Core;
using ReplicaTools.Core.Bench;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Tests.Bench;

/// <summary>Parsing of fio, qemu-img bench, ping and probe output; engine choice; the seed table and the HTML report.</summary>
public sealed class BenchUnitTests
{
    // A real fio 3.33 report (trimmed to the fields read), as the nbd engine prints it: a status line first.
    private const string FioNbdOutput = """
        fio: connected to NBD server
        {
          "fio version" : "fio-3.33",
          "jobs" : [
            {
              "jobname" : "replicatools",
              "error" : 0,
              "read" : { "io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.000000, "runtime" : 0, "lat_ns" : { "mean" : 0.000000 }, "clat_ns" : { "mean" : 0.000000 } },
              "write" : { "io_bytes" : 4867489792, "bw_bytes" : 2430099746, "iops" : 2317.523714, "runtime" : 2003,
                          "lat_ns" : { "min" : 498174, "max" : 8897058, "mean" : 1722813.340801 },
                          "clat_ns" : { "mean" : 1655568.812796, "percentile" : { "1.000000" : 806912, "99.000000" : 3981312 } } }
            }
          ]
        }
        """;

    [Fact]
    public void FioJson_IsParsedAfterTheNbdEnginesStatusLine()
    {
        var result = FioJob.Parse(FioNbdOutput, ThroughputOperation.Write);

        Assert.Equal(2430099746, result.BandwidthBytes);
        Assert.Equal(2317.523714, result.Iops, 6);
        Assert.Equal(TimeSpan.FromMilliseconds(2003), result.Runtime);
        Assert.Equal(4867489792, result.IoBytes);
        Assert.Equal(1722813.340801, result.LatencyMeanNs!.Value, 6);
        Assert.Equal(3981312, result.LatencyP99Ns);
        Assert.Equal("fio-3.33", result.Version);
    }

    [Fact]
    public void FioJson_WithoutLatencies_GivesNullNotZero()
    {
        var result = FioJob.Parse(FioNbdOutput, ThroughputOperation.Read);

        Assert.Equal(0, result.BandwidthBytes);
        Assert.Null(result.LatencyMeanNs);
        Assert.Null(result.LatencyP99Ns);
    }

    [Theory]
    [InlineData("fio: looks like your file system does not support direct=1/buffered=0\n", "FioOutputUnreadable")]
    [InlineData("{ \"jobs\" : [ { \"error\" : 22, \"read\" : {} } ] }", "FioJobFailed")]
    [InlineData("{ \"jobs\" : [] }", "FioOutputUnreadable")]
    public void FioOutput_ThatIsNoReport_IsASpecificError(string output, string errorId)
    {
        var error = Assert.IsAssignableFrom<ReplicaException>(Record.Exception(() => FioJob.Parse(output, ThroughputOperation.Read)));
        Assert.Equal(errorId, error.ErrorId);
        if (errorId == "FioJobFailed")
        {
            Assert.Contains("EINVAL", error.Message);
        }
    }

    [Fact]
    public async Task RealFio_JsonReport_ParsesToTheBytesItMoved()
    {
        TestLab.Tool.Require("fio");
        var file = Path.Combine(Path.GetTempPath(), $"rt-fio-{Guid.NewGuid():N}.raw");
        try
        {
            File.WriteAllBytes(file, new byte[4 << 20]);
            var target = new ThroughputTarget { Location = file, Kind = ThroughputTargetKind.File, Protocol = "Direct", DirectIo = false };
            var command = FioJob.Build(target, new ThroughputRequest { IoEngine = "libaio" }, 4096, ThroughputOperation.Read, 1);
            var result = await LocalHost.Instance.RunAsync(command);
            var parsed = FioJob.Parse(result.StandardOutput, ThroughputOperation.Read);

            Assert.True(parsed.IoBytes > 0 && parsed.IoBytes % 4096 == 0, $"io_bytes {parsed.IoBytes}");
            Assert.InRange(parsed.Runtime.TotalMilliseconds, 900, 1500);
            Assert.Equal(parsed.IoBytes / parsed.Runtime.TotalSeconds, parsed.BandwidthBytes, parsed.BandwidthBytes * 0.05);
            Assert.Equal(parsed.BandwidthBytes / 4096.0, parsed.Iops, parsed.Iops * 0.05);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void FioCommand_UsesTheNbdEngineForNbdUris_AndEscapesColonsInFileNames()
    {
        var request = new ThroughputRequest { QueueDepth = 4, Pattern = AccessPattern.Random };
        var nbd = FioJob.Build(new ThroughputTarget { Location = "nbd://127.0.0.1:10809/vm1", Kind = ThroughputTargetKind.NbdUri, Protocol = "NBD" }, request, 512, ThroughputOperation.Write, 3);
        Assert.Contains("--ioengine=nbd", nbd.Arguments);
        Assert.Contains("--uri=nbd://127.0.0.1:10809/vm1", nbd.Arguments);
        Assert.Contains("--rw=randwrite", nbd.Arguments);
        Assert.Contains("--iodepth=4", nbd.Arguments);
        Assert.Contains("--runtime=3s", nbd.Arguments);
        Assert.DoesNotContain(nbd.Arguments, a => a.StartsWith("--direct", StringComparison.Ordinal) || a.StartsWith("--filename", StringComparison.Ordinal));

        var file = FioJob.Build(new ThroughputTarget { Location = "/srv/a:b.raw", Kind = ThroughputTargetKind.File, Protocol = "Direct", DirectIo = true }, new ThroughputRequest(), 1 << 20, ThroughputOperation.Read, 10);
        Assert.Contains("--filename=/srv/a\\:b.raw", file.Arguments);
        Assert.Contains("--direct=1", file.Arguments);
        Assert.Contains("--ioengine=libaio", file.Arguments);
        Assert.Contains("--rw=read", file.Arguments);
    }

    [Fact]
    public void QemuImgBench_RuntimeAndCalibration()
    {
        Assert.Equal(1.819, QemuImgBench.ParseRuntime("Sending 2000 write requests, 1048576 bytes each, 8 in parallel (starting at offset 0, step size 1048576)\nRun completed in 1.819 seconds.\n").TotalSeconds, 3);
        Assert.Equal("QemuImgBenchOutputUnreadable", Assert.IsAssignableFrom<ReplicaException>(Record.Exception(() => QemuImgBench.ParseRuntime("qemu-img: Could not open"))).ErrorId);

        // 1000 requests in 0.5 s -> 2000/s -> 10 s is 20000 requests.
        Assert.Equal(20000, QemuImgBench.CalibrateCount(1000, TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(10), 1));
        Assert.Equal(32, QemuImgBench.CalibrateCount(1, TimeSpan.FromSeconds(100), TimeSpan.FromSeconds(1), 32));

        var command = QemuImgBench.Build(new ThroughputTarget { Location = "iscsi://127.0.0.2:3260/iqn.x:y/1", Kind = ThroughputTargetKind.QemuUrl, Protocol = "iSCSI" },
            new ThroughputRequest { QueueDepth = 8 }, 512, ThroughputOperation.Write, 5000, TimeSpan.FromMinutes(1));
        Assert.Equal(new[] { "qemu-img", "bench", "-f", "raw", "-c", "5000", "-d", "8", "-s", "512", "-S", "512", "-w", "--pattern=90", "--", "iscsi://127.0.0.2:3260/iqn.x:y/1" }, command.Arguments);
        Assert.Throws<ArgumentException>(() => QemuImgBench.Build(new ThroughputTarget { Location = "/x", Protocol = "Direct" }, new ThroughputRequest { Pattern = AccessPattern.Random }, 512, ThroughputOperation.Read, 1, TimeSpan.FromMinutes(1)));
    }

    [Theory]
    [InlineData("/dev/sdb", ThroughputTargetKind.File, "Direct")]
    [InlineData("nbd://127.0.0.1:10809/vm1", ThroughputTargetKind.NbdUri, "NBD")]
    [InlineData("nbd+unix:///vm1?socket=/run/x.sock", ThroughputTargetKind.NbdUri, "NBD")]
    [InlineData("iscsi://127.0.0.1:3260/iqn.2023-10.world.srv:dlp.target01/1", ThroughputTargetKind.QemuUrl, "iSCSI")]
    [InlineData("nfs://nfs1/srv/vdis/vm1.raw", ThroughputTargetKind.QemuUrl, "nfs")]
    public void Targets_AreClassifiedByScheme(string location, ThroughputTargetKind kind, string protocol)
    {
        Assert.Equal(kind, TargetProbe.Classify(location, "h"));
        Assert.Equal(protocol, TargetProbe.ProtocolOf(location));
    }

    [Theory]
    [InlineData("relative/path.raw")]
    [InlineData("")]
    public void RelativePaths_AreTargetInvalid(string location) =>
        Assert.Equal("TargetInvalid", Assert.IsAssignableFrom<ReplicaException>(Record.Exception(() => TargetProbe.Classify(location, "nfs1"))).ErrorId);

    [Fact]
    public void Engines_AreChosenPerTarget_AndImpossibleCombinationsRefused()
    {
        Assert.Equal(ThroughputEngine.Fio, ThroughputMeter.ResolveEngine(ThroughputTargetKind.NbdUri, new ThroughputRequest(), "nbd://h/e", "h"));
        Assert.Equal(ThroughputEngine.QemuImgBench, ThroughputMeter.ResolveEngine(ThroughputTargetKind.QemuUrl, new ThroughputRequest(), "iscsi://h/i/1", "h"));
        Assert.Equal(ThroughputEngine.QemuImgBench, ThroughputMeter.ResolveEngine(ThroughputTargetKind.File, new ThroughputRequest { Engine = ThroughputEngine.QemuImgBench }, "/x", "h"));

        var fioIscsi = Assert.IsAssignableFrom<ReplicaException>(Record.Exception(() =>
            ThroughputMeter.ResolveEngine(ThroughputTargetKind.QemuUrl, new ThroughputRequest { Engine = ThroughputEngine.Fio }, "iscsi://h/i/1", "h")));
        Assert.Equal("EngineNotSupported", fioIscsi.ErrorId);
        Assert.Contains("QemuImgBench", fioIscsi.Message);
        var randomIscsi = Assert.IsAssignableFrom<ReplicaException>(Record.Exception(() =>
            ThroughputMeter.ResolveEngine(ThroughputTargetKind.QemuUrl, new ThroughputRequest { Pattern = AccessPattern.Random }, "iscsi://h/i/1", "h")));
        Assert.Contains("sequential", randomIscsi.Message);
    }

    [Fact]
    public void Requests_AreValidatedWithTheParameterNamed()
    {
        Assert.Contains("-BlockSize", Assert.IsAssignableFrom<ReplicaException>(Record.Exception(() => ThroughputMeter.Validate(new ThroughputRequest { BlockSizes = new long[] { 0 } }, "h"))).Message);
        Assert.Contains("-QueueDepth", Assert.IsAssignableFrom<ReplicaException>(Record.Exception(() => ThroughputMeter.Validate(new ThroughputRequest { QueueDepth = 0 }, "h"))).Message);
        Assert.Contains("-IoEngine", Assert.IsAssignableFrom<ReplicaException>(Record.Exception(() => ThroughputMeter.Validate(new ThroughputRequest { IoEngine = "sync" }, "h"))).Message);
    }

    [Fact]
    public void ProbeOutput_IsParsed()
    {
        var facts = TargetProbe.ParsePathFacts("missing=fio\nkind=device\nsize=21474836480\nro=0\n");
        Assert.Equal(new[] { "fio" }, facts.MissingTools);
        Assert.Equal("device", facts.Kind);
        Assert.Equal(21474836480, facts.Size);
        Assert.False(facts.ReadOnly);

        var missing = TargetProbe.ParsePathFacts("kind=missing\nparent=writable\nfree=1048576\n");
        Assert.Equal(("missing", "writable", 1048576L), (missing.Kind, missing.Parent, missing.FreeBytes!.Value));

        Assert.Equal((512, (string?)null), TargetProbe.ParseDirectIo("direct=512\n"));
        Assert.Equal((4096, (string?)null), TargetProbe.ParseDirectIo("direct=4096\n"));
        Assert.Equal(((int?)null, "dd: failed to open 'x': Invalid argument"), TargetProbe.ParseDirectIo("direct=none\ndd: failed to open 'x': Invalid argument\n"));

        var error = Assert.IsAssignableFrom<ReplicaException>(Record.Exception(() => TargetProbe.RequireTools("kvm1", new[] { "fio" }, "to measure '/dev/sdb'")));
        Assert.Equal(("ProgramNotFound", ReplicaErrorCategory.NotInstalled), (error.ErrorId, error.Category));
        Assert.Contains("'kvm1'", error.Message);
        Assert.Contains("apt-get install fio", error.Message);
    }

    [Fact]
    public void DataCheck_ReadsSmallTargetsWhole_AndSamplesLargeOnes()
    {
        Assert.Empty(TargetProbe.DataCheckRegions(TargetProbe.ParseMap("""[{ "start": 0, "length": 16777216, "depth": 0, "present": true, "zero": true, "data": false, "offset": 0}]""")));

        var small = TargetProbe.DataCheckRegions(new[] { (0L, 20L << 20), (100L << 20, 4096L) });
        Assert.Equal((20L << 20) + 4096, small.Sum(r => r.Length));
        Assert.All(small, r => Assert.True(r.Length <= 8 << 20));

        var size = 20L << 30;
        var large = TargetProbe.DataCheckRegions(new[] { (0L, size) });
        Assert.Equal(TargetProbe.DataCheckBudget, large.Sum(r => r.Length));
        Assert.Equal(0, large[0].Offset);
        Assert.Equal(size - TargetProbe.DataCheckChunk, large[^1].Offset);

        // Regions follow the data extents, never the holes between them.
        var split = TargetProbe.DataCheckRegions(new[] { (0L, 40L << 20), (1L << 30, 40L << 20) });
        Assert.All(split, r => Assert.True(r.Offset + r.Length <= 40L << 20 || (r.Offset >= 1L << 30 && r.Offset + r.Length <= (1L << 30) + (40L << 20))));
    }

    [Fact]
    public void SeedTable_HasOneRowPerTarget_AndTheSeedsColumns()
    {
        var samples = new[]
        {
            Sample("Direct", null, "/srv/a.raw", 512, ThroughputOperation.Read, 162),
            Sample("Direct", null, "/srv/a.raw", 512, ThroughputOperation.Write, 12.7),
            Sample("NBD", "qemu-nbd", "nbd://h:1/a", 512, ThroughputOperation.Read, 164),
            Sample("Direct", null, "/srv/a.raw", 1 << 20, ThroughputOperation.Read, 317),
            Sample("Direct", null, "/srv/a.raw", 1 << 20, ThroughputOperation.Write, 339),
            Sample("NBD", "qemu-nbd", "nbd://h:1/a", 1 << 20, ThroughputOperation.Write, 130),
        };

        var rows = ThroughputTable.Build(samples);

        Assert.Equal(2, rows.Count);
        Assert.Equal((162.0, 12.7, 317.0, 339.0), (rows[0].Read512!.Value, rows[0].Write512!.Value, rows[0].Read1MB!.Value, rows[0].Write1MB!.Value));
        Assert.Equal("a.raw (buffered)", rows[0].Label);
        Assert.Equal("qemu-nbd", rows[1].Label);
        Assert.Null(rows[1].Write512);

        var markdown = ThroughputTable.ToMarkdown(rows).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal("Protocol | Server | 512 Reads (MB/s) | 512 Writes (MB/s) | 1MB Reads (MB/s) | 1MB Writes (MB/s)", markdown[0]);
        Assert.Equal("Direct | a.raw (buffered) | 162.0 | 12.7 | 317.0 | 339.0", markdown[2]);
        Assert.Equal("NBD | qemu-nbd | 164.0 |  |  | 130.0", markdown[3]);
        Assert.Equal("4K", BlockSizes.Label(4096));
        Assert.Equal("1000", BlockSizes.Label(1000));
    }

    [Fact]
    public void HtmlReport_IsSelfContained_WithABarChartPerBlockSize()
    {
        var samples = new[]
        {
            Sample("Direct", null, "/srv/<a>.raw", 512, ThroughputOperation.Read, 162),
            Sample("iSCSI", "tgt", "iscsi://h/i/1", 1 << 20, ThroughputOperation.Write, 131),
        };

        var html = HtmlReport.Throughput(samples, "Disk throughput", DateTimeOffset.Now);

        Assert.DoesNotContain("<script", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("src=", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("href=", html, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("/srv/&lt;a&gt;.raw", html);
        Assert.Equal(2, CountOf(html, "<svg "));

        // Each chart is well-formed SVG whose bars carry the values.
        var svg = XElement.Parse(html[html.IndexOf("<svg ", StringComparison.Ordinal)..(html.IndexOf("</svg>", StringComparison.Ordinal) + 6)]);
        Assert.Contains(svg.Descendants().Where(e => e.Name.LocalName == "title"), t => t.Value == "162.0 MB/s");
        Assert.Equal(5, HtmlReport.NiceCeiling(4.2));
        Assert.Equal(200, HtmlReport.NiceCeiling(131));
    }

    [Fact]
    public void PingAndToolVersions_AreParsed()
    {
        var (avg, loss) = ReplicaTopologyTester.ParsePing("--- 127.0.0.3 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 406ms\nrtt min/avg/max/mdev = 0.039/0.051/0.067/0.011 ms\n");
        Assert.Equal((0.051, 0.0), (avg!.Value, loss));
        var (none, lost) = ReplicaTopologyTester.ParsePing("--- 192.0.2.1 ping statistics ---\n10 packets transmitted, 0 received, 100% packet loss, time 9200ms\n\n");
        Assert.Null(none);
        Assert.Equal(100, lost);

        var tools = ReplicaTopologyTester.ParseTools("drbd-kernel=0\ndrbdadm=9.22.0\nfio=3.33\nping=\nnbd-server=3.24\n");
        Assert.Equal("9.22.0", tools["drbdadm"]);
        Assert.Equal(string.Empty, tools["ping"]);
        Assert.Equal("0", tools["drbd-kernel"]);
        Assert.Equal("3 h 25 min", ReplicaTopologyTester.FormatDuration(TimeSpan.FromMinutes(205)));
    }

    private static ThroughputSample Sample(string protocol, string? server, string target, long blockSize, ThroughputOperation operation, double mbps) => new()
    {
        HostName = "h",
        Protocol = protocol,
        Server = server,
        Target = target,
        BlockSize = blockSize,
        Operation = operation,
        MBps = mbps,
        Iops = mbps * 1e6 / blockSize,
        QueueDepth = 1,
    };

    private static int CountOf(string text, string part)
    {
        var count = 0;
        for (var i = text.IndexOf(part, StringComparison.Ordinal); i >= 0; i = text.IndexOf(part, i + 1, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }
}
