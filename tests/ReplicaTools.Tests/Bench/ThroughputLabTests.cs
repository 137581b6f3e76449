using System.Globalization;
using System.Security.Cryptography;
using ReplicaTools.Core;
using ReplicaTools.Core.Bench;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;
using Xunit.Abstractions;

namespace ReplicaTools.Tests.Bench;

/// <summary>
/// Measurements against real servers on loopback: a direct file, nbd-server, qemu-nbd and a tgt iSCSI LUN, generated
/// over SSH on lab host 127.0.0.2; and the refusals that must happen before anything is written.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class ThroughputLabTests : IAsyncLifetime
{
    private const int Seconds = 2;
    private readonly SshLab lab;
    private readonly ITestOutputHelper output;
    private ThroughputLab? started;

    public ThroughputLabTests(LabFixture fixture, ITestOutputHelper output)
    {
        lab = fixture.Lab;
        this.output = output;
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (started is not null)
        {
            await started.DisposeAsync();
        }
    }

    private async Task<ThroughputLab> StartAsync(bool iscsi = false) => started = await ThroughputLab.StartAsync(lab, 128L << 20, iscsi);

    [Fact]
    public async Task DirectNbdServerQemuNbdAndTgt_AtBothBlockSizes_ReadAndWrite_InOneRun_AndMatchTheToolsRunByHand()
    {
        var throughput = await StartAsync(iscsi: true);
        var meter = new ThroughputMeter(throughput.LoadHost);
        var request = new ThroughputRequest { DurationSeconds = Seconds };
        var samples = new List<ThroughputSample>();
        foreach (var target in throughput.Targets)
        {
            samples.AddRange(await meter.MeasureAsync(target.Spec, request));
        }

        var rows = ThroughputTable.Build(samples);
        output.WriteLine(ThroughputTable.ToMarkdown(rows));
        Assert.Equal(16, samples.Count);
        Assert.Equal(new[] { "Direct", "NBD", "NBD", "iSCSI" }, rows.Select(r => r.Protocol));
        Assert.Equal(new[] { "/", "nbd-server", "qemu-nbd", "tgt" }, rows.Select(r => r.Server ?? "/"));
        Assert.All(rows, r => Assert.True(r.Read512 > 0 && r.Write512 > 0 && r.Read1MB > 0 && r.Write1MB > 0, r.ToString()));
        Assert.All(samples, s =>
        {
            Assert.Equal("host2", s.HostName);
            Assert.True(s.Bytes > 0 && s.Bytes % s.BlockSize == 0, $"{s}: {s.Bytes} bytes");
            Assert.InRange(s.MBps * 1e6 * s.Runtime.TotalSeconds / s.Bytes, 0.9, 1.1);
            Assert.True(s.LatencyAvgUs > 0, s.ToString());
        });
        Assert.All(samples.Where(s => s.Protocol != "iSCSI"), s => Assert.Equal(ThroughputEngine.Fio, s.Engine));
        Assert.All(samples.Where(s => s.Protocol == "iSCSI"), s => Assert.Equal(ThroughputEngine.QemuImgBench, s.Engine));
        Assert.All(samples.Where(s => s.Protocol == "Direct"), s => Assert.True(s.DirectIo, "the lab's file system takes O_DIRECT"));

        // The writes really reached each server's disk: fio's data (or qemu-img bench's 0x5a pattern) is where zeros were.
        foreach (var target in throughput.Targets)
        {
            var head = new byte[512];
            using (var file = File.OpenRead(target.ImagePath))
            {
                file.ReadExactly(head);
            }

            Assert.True(head.Any(b => b != 0), $"{target.Name}: the first sector is still zero after the write measurements");
            if (target.Name == "tgt")
            {
                Assert.All(head, b => Assert.Equal(QemuImgBench.WritePattern, b));
            }
        }

        // The same measurements run by hand (fio or qemu-img bench typed as a user would), in adjacent pairs of
        // alternating order, so that the machine's load drifts alike for both.
        var comparisons = new List<(string Cell, double Module, double Hand)>();
        var pairRatios = new List<double>();
        foreach (var target in throughput.Targets)
        {
            foreach (var blockSize in ThroughputRequest.DefaultBlockSizes)
            {
                foreach (var operation in new[] { ThroughputOperation.Read, ThroughputOperation.Write })
                {
                    var cell = new ThroughputRequest { BlockSizes = new[] { blockSize }, Operations = new[] { operation }, DurationSeconds = 1, Force = true };
                    var ratios = new List<(double Module, double Hand)>();
                    for (var pair = 0; pair < 3; pair++)
                    {
                        double module = 0, hand = 0;
                        foreach (var byModule in pair == 0 ? new[] { true, false } : new[] { false, true })
                        {
                            if (byModule)
                            {
                                var sample = Assert.Single(await meter.MeasureAsync(target.Spec, cell));
                                module = sample.MBps;
                                continue;
                            }

                            // qemu-img bench runs a count: the count the module's trial would pick for 1 s, from the first run.
                            var first = samples.Single(s => s.Target == target.Spec.Location && s.BlockSize == blockSize && s.Operation == operation);
                            var count = Math.Max(1, first.Bytes / blockSize / Seconds);
                            var result = await throughput.LoadHost.RunAsync(ThroughputLab.ByHand(target.Spec.Location, blockSize, operation, 1, count));
                            hand = ThroughputLab.MBpsOf(result, blockSize, operation, count);
                        }

                        ratios.Add((module, hand));
                        pairRatios.Add(module / hand);
                    }

                    comparisons.Add(($"{target.Name} {BlockSizes.Label(blockSize)} {operation}", ratios.Average(r => r.Module), ratios.Average(r => r.Hand)));
                }
            }
        }

        foreach (var (cell, module, hand) in comparisons)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{cell,-24} module {module,9:0.0} MB/s  by hand {hand,9:0.0} MB/s  ratio {module / hand:0.00}"));
        }

        // Noise on a shared 2-core machine moves single runs by tens of percent either way; an overhead of the module would
        // move the median of all 48 adjacent pairs.
        var ratio = pairRatios.Order().ElementAt(pairRatios.Count / 2);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"median of {pairRatios.Count} pairs module/by hand: {ratio:0.000}; geometric mean of the cells: {Math.Exp(comparisons.Average(c => Math.Log(c.Module / c.Hand))):0.000}"));
        // Only the median is asserted (the issue's ±15%). Single cells are reported, not asserted: under load a cell's
        // adjacent pair moved by 5x on this machine (tgt 512 B writes), which says nothing about the module.
        Assert.InRange(ratio, 0.85, 1.15);
    }

    [Fact]
    public async Task ScratchFile_IsCreatedLaidOutMeasuredAndRemoved()
    {
        var throughput = await StartAsync();
        var path = $"{throughput.Root}/scratch-{Guid.NewGuid():N}.raw";
        var reporter = new Nbd.RecordingReporter();
        IReadOnlyList<ThroughputSample> samples;
        using (OperationContext.Use(reporter))
        {
            samples = await new ThroughputMeter(throughput.LoadHost).MeasureAsync(new ThroughputTargetSpec(path),
                new ThroughputRequest { BlockSizes = new long[] { 4096 }, DurationSeconds = 1, ScratchSize = 32L << 20 });
        }

        Assert.Equal(new[] { ThroughputOperation.Read, ThroughputOperation.Write }, samples.Select(s => s.Operation));
        Assert.All(samples, s => Assert.True(s.Bytes > 0));
        Assert.False(File.Exists(path), "the scratch file is removed afterwards");
        Assert.Contains(reporter.Progresses, p => p.PercentComplete is > 0 and < 100);
        Assert.Contains(reporter.Progresses, p => p.Completed);
    }

    [Fact]
    public async Task UnreachableUrls_AreTargetUnreachable_NamingHostAndUrl()
    {
        var throughput = await StartAsync();
        var meter = new ThroughputMeter(throughput.LoadHost);
        foreach (var url in new[] { $"nbd://127.0.0.3:{Ports.Free("127.0.0.3")}/gone", $"iscsi://127.0.0.4:{Ports.Free("127.0.0.4")}/iqn.2024-10.org.replicatools.lab:gone/1" })
        {
            var error = await Assert.ThrowsAsync<ReplicaException>(() => meter.PlanAsync(new ThroughputTargetSpec(url), new ThroughputRequest()));
            Assert.Equal(("TargetUnreachable", ReplicaErrorCategory.ConnectionError), (error.ErrorId, error.Category));
            Assert.Contains("'host2'", error.Message);
            Assert.Contains(url, error.Message);
        }
    }

    [Fact]
    public async Task TargetsHoldingData_AreNotWrittenWithoutForce_OverNbdOrDirectly()
    {
        var throughput = await StartAsync(iscsi: true);
        var meter = new ThroughputMeter(throughput.LoadHost);
        foreach (var target in throughput.Targets.Where(t => t.Name is "direct" or "qemu-nbd" or "tgt"))
        {
            // Data far from the start, where a check of only the first sectors would miss it.
            using (var file = new FileStream(target.ImagePath, FileMode.Open, FileAccess.Write))
            {
                file.Position = throughput.ImageSize - (5 << 20);
                file.Write(RandomNumberGenerator.GetBytes(4096));
            }

            var before = Sha256(target.ImagePath);
            var error = await Assert.ThrowsAsync<ReplicaException>(() => meter.MeasureAsync(target.Spec, new ThroughputRequest { DurationSeconds = 1 }));
            Assert.Equal(("TargetHoldsData", ReplicaErrorCategory.PermissionDenied), (error.ErrorId, error.Category));
            Assert.Contains("-Force", error.Message);
            Assert.Equal(before, Sha256(target.ImagePath));

            // Reads alone are fine.
            var reads = await meter.MeasureAsync(target.Spec, new ThroughputRequest { BlockSizes = new long[] { 1 << 20 }, Operations = new[] { ThroughputOperation.Read }, DurationSeconds = 1 });
            Assert.Single(reads);
            Assert.Equal(before, Sha256(target.ImagePath));
        }
    }

    [Fact]
    public async Task BlockSizeNotAMultipleOf512_WithDirectIo_IsRefusedBeforeTheHostIsAsked()
    {
        var throughput = await StartAsync();
        var target = throughput.Targets.Single(t => t.Name == "direct");
        var before = Sha256(target.ImagePath);
        var error = await Assert.ThrowsAsync<ReplicaException>(() => new ThroughputMeter(throughput.LoadHost).MeasureAsync(target.Spec, new ThroughputRequest { BlockSizes = new long[] { 512, 1000 }, DurationSeconds = 1 }));
        Assert.Equal(("BlockSizeInvalid", ReplicaErrorCategory.InvalidArgument), (error.ErrorId, error.Category));
        Assert.Contains("1000", error.Message);
        Assert.Contains("-Buffered", error.Message);
        Assert.Equal(before, Sha256(target.ImagePath));

        // Through the page cache any size works.
        var buffered = await new ThroughputMeter(throughput.LoadHost).MeasureAsync(target.Spec,
            new ThroughputRequest { BlockSizes = new long[] { 1000 }, Operations = new[] { ThroughputOperation.Read }, DurationSeconds = 1, Buffered = true });
        Assert.False(Assert.Single(buffered).DirectIo);
    }

    [Fact]
    public async Task FioMissingOnTheLoadHost_IsProgramNotFound_AndNothingIsWritten()
    {
        var throughput = await StartAsync();
        // A host whose PATH has every tool of /usr/bin except fio.
        var bin = Path.Combine(throughput.Root, "bin-without-fio");
        Directory.CreateDirectory(bin);
        foreach (var tool in Directory.EnumerateFiles("/usr/bin").Where(f => Path.GetFileName(f) != "fio"))
        {
            File.CreateSymbolicLink(Path.Combine(bin, Path.GetFileName(tool)), tool);
        }

        var noFio = await lab.StartDaemonAsync("nofio", "127.0.0.2", environment: $"PATH={bin}:/usr/sbin");
        var host = noFio.CreateHost(knownHostsFile: Path.Combine(throughput.Root, "known_hosts_nofio"), acceptNew: true);
        try
        {
            var target = throughput.Targets.Single(t => t.Name == "qemu-nbd");
            var before = Sha256(target.ImagePath);
            var error = await Assert.ThrowsAsync<ReplicaException>(() => new ThroughputMeter(host).MeasureAsync(target.Spec, new ThroughputRequest { DurationSeconds = 1, Force = true }));
            Assert.Equal(("ProgramNotFound", ReplicaErrorCategory.NotInstalled), (error.ErrorId, error.Category));
            Assert.Contains("fio", error.Message);
            Assert.Contains("'nofio'", error.Message);
            Assert.Equal(before, Sha256(target.ImagePath));
        }
        finally
        {
            await host.DisconnectAsync();
            SshLab.Stop(noFio);
        }
    }

    [Fact]
    public async Task ReadOnlyExports_AreOnlyRead()
    {
        var throughput = await StartAsync();
        var image = throughput.NewImage("readonly.raw");
        var export = await throughput.Exports.NewAsync(new NbdExportRequest { Name = "readonly", Path = image, ReadOnly = true, ListenAddress = lab[1].Address });
        try
        {
            var meter = new ThroughputMeter(throughput.LoadHost);
            var before = Sha256(image);

            // The server says read-only (nbdinfo): writes are dropped from the plan with a note, reads measured.
            var plan = await meter.PlanAsync(new ThroughputTargetSpec(export.Uri), new ThroughputRequest { DurationSeconds = 1, Force = true });
            Assert.All(plan.Steps, s => Assert.Equal(ThroughputOperation.Read, s.Operation));
            Assert.Contains(plan.Notes, n => n.Contains("read-only", StringComparison.Ordinal));
            Assert.Equal(2, (await meter.RunAsync(plan)).Count);

            var error = await Assert.ThrowsAsync<ReplicaException>(() => meter.PlanAsync(new ThroughputTargetSpec(export.Uri), new ThroughputRequest { Operations = new[] { ThroughputOperation.Write }, Force = true }));
            Assert.Equal("TargetReadOnly", error.ErrorId);
            Assert.Equal(before, Sha256(image));
        }
        finally
        {
            await throughput.Exports.RemoveAsync(export, TimeSpan.FromSeconds(3));
        }
    }

    private static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream));
    }
}
