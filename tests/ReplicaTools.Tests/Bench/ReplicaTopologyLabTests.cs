using System.Security.Cryptography;
using ReplicaTools.Core.Bench;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;
using Xunit.Abstractions;

namespace ReplicaTools.Tests.Bench;

/// <summary>The replication pre-flight against lab hosts 127.0.0.2 and .3 (storage) and .4 (KVM), with file backing disks.</summary>
[Collection(LabCollection.Name)]
public sealed class ReplicaTopologyLabTests : IAsyncLifetime
{
    private const long DiskSize = 64L << 20;
    private readonly SshLab lab;
    private readonly ITestOutputHelper output;
    private readonly string root;
    private readonly List<SshHost> hosts = new();

    public ReplicaTopologyLabTests(LabFixture fixture, ITestOutputHelper output)
    {
        Tool.Require("fio", "ping", "qemu-img", "qemu-io", "drbdadm");
        lab = fixture.Lab;
        this.output = output;
        root = Path.Combine(lab.Root, $"preflight-{Guid.NewGuid().ToString("N")[..6]}");
        Directory.CreateDirectory(root);
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var host in hosts)
        {
            await host.DisconnectAsync();
        }

        Directory.Delete(root, recursive: true);
    }

    [Fact]
    public async Task APairOnTheLab_IsCheckedMeasuredAndEstimated_AndFailsOnlyOnTheMissingDrbdModule()
    {
        var (a, b) = (Disk("a.raw", DiskSize), Disk("b.raw", DiskSize));
        var request = new ReplicaTopologyTestRequest
        {
            StorageHosts = new[] { Storage(0, a), Storage(1, b) },
            KvmHosts = new[] { new TopologyTestHost("host4", Host(2)) },
            DurationSeconds = 1,
            ResyncRateMBps = 50,
        };

        var result = await ReplicaTopologyTester.RunAsync(request);

        foreach (var check in result.Checks)
        {
            output.WriteLine(check.ToString());
        }

        Assert.Equal(3, result.Checks.Count(c => c is { Name: "Reachable", Status: TopologyCheckStatus.Pass }));
        Assert.Equal(3, result.Checks.Count(c => c is { Name: "Tools", Status: TopologyCheckStatus.Pass }));
        Assert.Contains(result.Checks, c => c.Name == "Tools" && c.HostName == "host2" && c.Reason.Contains("drbdadm 9.", StringComparison.Ordinal) && c.Reason.Contains("fio 3.", StringComparison.Ordinal));

        // This machine has drbd-utils but no DRBD kernel module: that is the one failure.
        Assert.Equal(new[] { "DrbdKernelModule", "DrbdKernelModule" }, result.Failed.Select(c => c.Name));
        Assert.Equal(TopologyCheckStatus.Fail, result.Status);

        Assert.Equal(2, result.Checks.Count(c => c is { Name: "BackingDisk", Status: TopologyCheckStatus.Pass }));
        Assert.Contains(result.Checks, c => c is { Name: "BackingDiskSize", Status: TopologyCheckStatus.Pass });
        Assert.Equal(DiskSize, result.BackingDiskSize);
        Assert.Equal(new[] { "host2 -> host3", "host3 -> host2" }, result.Checks.Where(c => c.Name == "RoundTrip").Select(c => c.HostName));
        Assert.All(result.Checks.Where(c => c.Name == "RoundTrip"), c => Assert.NotEqual(TopologyCheckStatus.Fail, c.Status));
        Assert.InRange(result.RoundTripMs!.Value, 0.001, 50);

        // Both disks were written (fio's data replaced the zeros) and measured.
        Assert.Equal(4, result.DiskSamples.Count);
        Assert.All(result.DiskSamples, s => Assert.True(s.MBps > 0 && s.LatencyAvgUs > 0 && s.Operation == ThroughputOperation.Write, s.ToString()));
        Assert.Contains(File.ReadAllBytes(a), x => x != 0);
        Assert.Contains(File.ReadAllBytes(b), x => x != 0);

        // Estimates: RTT plus the slower disk's 4k latency; 64 MiB at 50 MB/s (or the slower disk if it is slower).
        var slowest = result.DiskSamples.Where(s => s.Pattern == AccessPattern.Random).Max(s => s.LatencyAvgUs!.Value);
        Assert.Equal(slowest + result.RoundTripMs.Value * 1000, result.EstimatedWriteLatencyUs!.Value, 3);
        var rate = Math.Min(50, result.DiskSamples.Where(s => s.Pattern == AccessPattern.Sequential).Min(s => s.MBps));
        Assert.Equal(DiskSize / (rate * 1e6), result.EstimatedInitialSync!.Value.TotalSeconds, 2);

        var html = ReplicaTopologyTester.ToHtml(result);
        Assert.Contains("DrbdKernelModule", html);
        Assert.Contains("<svg ", html);
    }

    [Fact]
    public async Task DisksHoldingData_UnequalOrMissing_AndUnreachableHosts_AreReportedAsChecks_WithoutWriting()
    {
        var a = Disk("data.raw", DiskSize);
        using (var file = new FileStream(a, FileMode.Open, FileAccess.Write))
        {
            file.Position = DiskSize / 2;
            file.Write(RandomNumberGenerator.GetBytes(4096));
        }

        var before = Sha256(a);
        var b = Disk("bigger.raw", DiskSize * 2);
        var result = await ReplicaTopologyTester.RunAsync(new ReplicaTopologyTestRequest
        {
            StorageHosts = new[] { Storage(0, a), Storage(1, b) },
            DurationSeconds = 1,
        });

        Assert.Equal(before, Sha256(a));
        Assert.Contains(result.Checks, c => c is { Name: "BackingDiskSize", Status: TopologyCheckStatus.Warn } && c.Reason.Contains("smaller", StringComparison.Ordinal));
        Assert.All(result.Checks.Where(c => c.HostName == "host2" && c.Name is "SequentialWrite" or "RandomWrite4K"),
            c => Assert.True(c.Status == TopologyCheckStatus.Warn && c.Reason.Contains("holds data", StringComparison.Ordinal), c.ToString()));
        Assert.Contains(result.Checks, c => c is { Name: "ProtocolCWriteLatency", Status: TopologyCheckStatus.Warn });

        // A missing disk and a host whose sshd is gone.
        var gone = await lab.StartDaemonAsync("gone", "127.0.0.4");
        var goneHost = gone.CreateHost(knownHostsFile: Path.Combine(root, "known_hosts_gone"), acceptNew: true, connectTimeoutSeconds: 3);
        hosts.Add(goneHost);
        SshLab.Stop(gone);
        var broken = await ReplicaTopologyTester.RunAsync(new ReplicaTopologyTestRequest
        {
            StorageHosts = new[] { new TopologyTestHost("host2", Host(0), "127.0.0.2", Path.Combine(root, "no-such.raw")), new TopologyTestHost("gone", goneHost, "127.0.0.4", b) },
            SkipDiskTest = true,
        });

        Assert.Contains(broken.Checks, c => c is { Name: "BackingDisk", HostName: "host2", Status: TopologyCheckStatus.Fail } && c.Reason.Contains("does not exist", StringComparison.Ordinal));
        Assert.Contains(broken.Checks, c => c is { Name: "Reachable", HostName: "gone", Status: TopologyCheckStatus.Fail } && c.Reason.Contains("gone", StringComparison.Ordinal));
        Assert.DoesNotContain(broken.Checks, c => c.Name == "RoundTrip");
        Assert.Empty(broken.DiskSamples);
        Assert.Equal(TopologyCheckStatus.Fail, broken.Status);
    }

    private TopologyTestHost Storage(int index, string disk) => new(lab[index].Name, Host(index), lab[index].Address, disk);

    private SshHost Host(int index)
    {
        var host = lab[index].CreateHost();
        hosts.Add(host);
        return host;
    }

    private string Disk(string name, long size)
    {
        var path = Path.Combine(root, name);
        Tool.Run("qemu-img", "create", "-q", "-f", "raw", "-o", "preallocation=full", path, size.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return path;
    }

    private static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream));
    }
}
