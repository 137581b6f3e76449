using System.Globalization;
using ReplicaTools.Core.Quorum;
using ReplicaTools.TestLab;
using static ReplicaTools.Tests.Quorum.QuorumLab;

namespace ReplicaTools.Tests.Quorum;

/// <summary>
/// A quorum disk whose replicas three storage hosts serve over NBD (qemu-nbd on 127.0.0.21-23, a port each): one host is
/// lost (its server killed), the VM goes on with the other two, Get-QuorumDisk names the lost replica, and a new replica
/// on a fourth host is synced live and takes its place.
/// </summary>
public sealed class QuorumNbdTests : IAsyncLifetime
{
    private readonly List<int> servers = new();
    private QuorumLab lab = null!;

    public async Task InitializeAsync() => lab = await QuorumLab.StartAsync("rtqnbd");

    public async Task DisposeAsync()
    {
        await lab.DisposeAsync();
        foreach (var pid in servers)
        {
            Tool.TryRun("kill", new[] { "-9", pid.ToString(CultureInfo.InvariantCulture) });
        }
    }

    /// <summary>qemu-nbd serving a fresh 64 MiB raw image as export NAME on ADDRESS:PORT; returns (URL, image path, pid).</summary>
    private async Task<(string Url, string Image, int Pid)> ServeAsync(string name, string address)
    {
        var image = Path.Combine(lab.Directory, name + ".raw");
        Images.Create(image, "raw", "64M");
        var port = Ports.Free(address);
        var pidFile = Path.Combine(lab.Directory, name + ".pid");
        Tool.Run("qemu-nbd", "-f", "raw", "-t", "-e", "4", "-x", name, "-b", address, "-p", port.ToString(CultureInfo.InvariantCulture), "--fork", "--pid-file", pidFile, image);
        var pid = int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture);
        servers.Add(pid);
        Assert.True(await Ports.WaitListeningAsync(address, port, TimeSpan.FromSeconds(10)));
        return ($"nbd://{address}:{port}/{name}", image, pid);
    }

    [Fact]
    public async Task AStorageHostIsLost_TheVmGoesOnWithTwo_TheReplicaIsShownLost_AndANewReplicaTakesItsPlaceLive()
    {
        var hosts = new[] { await ServeAsync("r1", "127.0.0.21"), await ServeAsync("r2", "127.0.0.22"), await ServeAsync("r3", "127.0.0.23") };
        var manager = lab.Manager;
        var plan = await manager.PlanAttachAsync(QuorumLab.Request(hosts.Select(h => h.Url), size: null), lab.Vm.EventSocketPath);
        Assert.Empty(plan.Creates);
        Assert.All(plan.Definition.Replicas, r => Assert.Equal(QuorumTransport.Nbd, r.Location.Transport));
        var disk = await manager.AttachAsync(plan, lab.Vm.EventSocketPath);
        Assert.Equal(new[] { "127.0.0.21", "127.0.0.22", "127.0.0.23" }, disk.Replicas.Select(r => r.StorageHost));
        await lab.Vm.WriteAsync("quorum0", 0x3c, 0, 16 * MiB);

        Tool.Run("kill", "-9", hosts[1].Pid.ToString(CultureInfo.InvariantCulture));
        await lab.Vm.WriteAsync("quorum0", 0x4d, 20 * MiB, 4 * MiB);
        var read = await lab.ReadThroughQuorumAsync(disk.QuorumNode, 0x4d, 20 * MiB, 4 * MiB);
        Assert.True(read.Matches, "the quorum serves the guest from the two replicas left: " + read.Output);
        Assert.True(lab.Vm.IsRunning);
        Assert.True(Images.HasPattern(hosts[0].Image, "raw", 0x4d, 20 * MiB, 4 * MiB));
        Assert.True(Images.HasPattern(hosts[2].Image, "raw", 0x4d, 20 * MiB, 4 * MiB));

        var lost = (await manager.GetAsync(null, probe: true)).Single();
        Assert.Equal(QuorumDiskState.Degraded, lost.State);
        Assert.Equal(new[] { QuorumReplicaHealth.Healthy, QuorumReplicaHealth.Unreachable, QuorumReplicaHealth.Healthy }, lost.Replicas.Select(r => r.Health));
        Assert.Contains("127.0.0.22", lost.Replicas[1].Reason);
        var failing = (await manager.GetAsync(null, probe: false)).Single().Replicas[1];
        Assert.Equal(QuorumReplicaHealth.Failing, failing.Health);
        Assert.NotNull(failing.LastReport?.Error);

        var inPlace = await Assert.ThrowsAsync<QuorumException>(() => manager.PlanRepairAsync(null, lost.Replicas[1].NodeName, null, null));
        Assert.Equal(QuorumErrorIds.RepairUnsupported, inPlace.ErrorId);
        Assert.Contains("-Destination", inPlace.RecommendedAction);

        var fresh = await ServeAsync("r4", "127.0.0.24");
        var replace = await manager.PlanRepairAsync(null, lost.Replicas[1].NodeName, QuorumReplicaLocation.Parse(fresh.Url), null);
        Assert.Equal(QuorumRepairMode.Replace, replace.Mode);
        Assert.Equal("quorum0-quorum-r4", replace.NewReplica!.NodeName);
        Assert.Contains(replace.Steps, s => s.Text.Contains("\"replaces\":\"quorum0-quorum-r2\""));
        Assert.DoesNotContain(replace.Steps, s => s.Text.Contains("\"stop\""));
        var replaced = await manager.RepairAsync(replace);

        Assert.Equal(QuorumDiskState.Healthy, (await manager.GetAsync(null, probe: true)).Single().State);
        Assert.Equal(fresh.Url, replaced.Replicas[1].Location);
        Assert.Equal("quorum0-quorum-r4", replaced.Replicas[1].NodeName);
        Assert.Equal("children.1", replaced.Replicas[1].Child);
        Assert.DoesNotContain("quorum0-quorum-r2", await lab.NodeNamesAsync());
        await lab.Vm.WriteAsync("quorum0", 0x5e, 30 * MiB, MiB);
        var test = await manager.TestAsync(null);
        Assert.All(test.Replicas, r => Assert.True(r.InMajority));
        Assert.True(Images.Compare(hosts[0].Image, "raw", fresh.Image, "raw").Identical);
        Assert.True(Images.Compare(hosts[2].Image, "raw", fresh.Image, "raw").Identical);
        Assert.True(Images.HasPattern(fresh.Image, "raw", 0x4d, 20 * MiB, 4 * MiB));
    }
}
