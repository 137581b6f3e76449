using ReplicaTools.Core.Quorum;
using ReplicaTools.TestLab;
using static ReplicaTools.Tests.Quorum.QuorumLab;

namespace ReplicaTools.Tests.Quorum;

/// <summary>Three NFS servers (nfs-ganesha on three loopback addresses), shared by the tests of <see cref="QuorumNfsTests"/>.</summary>
public sealed class ThreeNfsServers : IAsyncLifetime
{
    public NfsLab Lab { get; private set; } = null!;

    public async Task InitializeAsync() => Lab = await NfsLab.StartAsync(new NfsLabOptions { Addresses = new[] { "127.0.0.2", "127.0.0.3", "127.0.0.4" } });

    public async Task DisposeAsync() => await Lab.DisposeAsync();
}

/// <summary>
/// Quorum disks whose three replicas live on three NFS servers (QEMU's libnfs driver), threshold 2, on a running QEMU:
/// the seed's setup. Corruption is written into the exported files on the servers' side.
/// </summary>
public sealed class QuorumNfsTests : IClassFixture<ThreeNfsServers>, IAsyncLifetime
{
    private readonly NfsLab nfs;
    private readonly string file = $"vm-{Guid.NewGuid().ToString("N")[..6]}.raw";
    private QuorumLab lab = null!;

    public QuorumNfsTests(ThreeNfsServers servers)
    {
        nfs = servers.Lab;
    }

    private string[] Urls => nfs.Servers.Select(s => s.Url(file)).ToArray();

    private string[] Files => nfs.Servers.Select(s => s.LocalPath(file)).ToArray();

    public async Task InitializeAsync()
    {
        nfs.EnsureRegistered();
        foreach (var server in nfs.Servers)
        {
            await server.RestoreAsync();
        }

        lab = await QuorumLab.StartAsync("rtqnfs");
    }

    public async Task DisposeAsync()
    {
        foreach (var server in nfs.Servers)
        {
            await server.RestoreAsync();
        }

        await lab.DisposeAsync();
        foreach (var server in nfs.Servers)
        {
            server.DeleteFile(file);
        }
    }

    private async Task<QuorumDisk> AttachAsync()
    {
        var manager = lab.Manager;
        var plan = await manager.PlanAttachAsync(QuorumLab.Request(Urls), lab.Vm.EventSocketPath);
        Assert.Equal(3, plan.Creates.Count);
        Assert.All(plan.Creates, c => Assert.True(c.Location.IsNfsUrl));
        return await manager.AttachAsync(plan, lab.Vm.EventSocketPath);
    }

    [Fact]
    public async Task ACorruptReplica_IsOutvoted_ReportedByName_AndAfterRepairAllThreeAreByteIdentical()
    {
        var disk = await AttachAsync();
        Assert.Equal(nfs.Servers.Select(s => s.Address), disk.Replicas.Select(r => r.StorageHost));
        await lab.Vm.WriteAsync("quorum0", 0x2b, 0, 16 * MiB);
        Assert.All(Files, f => Assert.True(Images.HasPattern(f, "raw", 0x2b, 0, 16 * MiB)));

        Corrupt(Files[1], 9 * MiB + 77, new byte[] { 0xff, 0x00, 0xff });
        var read = await lab.ReadThroughQuorumAsync(disk.QuorumNode, 0x2b, 0, 16 * MiB);
        Assert.True(read.Matches, "reads through the quorum node return the majority's data: " + read.Output);

        var reported = await WaitForAsync(async () => (await lab.Manager.GetAsync(null, probe: true)).Single(), d => d.Replicas[1].Health == QuorumReplicaHealth.Corrupt);
        Assert.Equal(QuorumReplicaHealth.Corrupt, reported.Replicas[1].Health);
        Assert.Equal(Urls[1], reported.Replicas[1].Location);
        Assert.Equal(QuorumReplicaHealth.Healthy, reported.Replicas[0].Health);
        Assert.Equal(QuorumReplicaHealth.Healthy, reported.Replicas[2].Health);

        var test = await lab.Manager.TestAsync(null);
        Assert.Equal(new[] { true, false, true }, test.Replicas.Select(r => r.InMajority));
        Assert.Equal(9 * MiB + 77, test.Replicas[1].FirstDifference);

        await lab.Manager.RepairAsync(await lab.Manager.PlanRepairAsync(null, Urls[1], null, null));
        Assert.True(Images.Compare(Files[0], "raw", Files[1], "raw").Identical);
        Assert.True(Images.Compare(Files[0], "raw", Files[2], "raw").Identical);
        Assert.True(Images.HasPattern(Files[1], "raw", 0x2b, 9 * MiB, MiB));
        Assert.Equal(QuorumDiskState.Healthy, (await lab.Manager.GetAsync(null, probe: true)).Single().State);
    }

    [Fact]
    public async Task TwoReplicasCorruptedDifferently_TheReadFails_NamingTheReplicasThatDisagree()
    {
        var disk = await AttachAsync();
        await lab.Vm.WriteAsync("quorum0", 0x2c, 0, 4 * MiB);
        Corrupt(Files[0], MiB, new byte[] { 0x01 });
        Corrupt(Files[2], MiB, new byte[] { 0x02 });

        var read = await lab.ReadThroughQuorumAsync(disk.QuorumNode, 0x2c, MiB, 4096);
        Assert.False(read.Read, read.Output);
        var test = await lab.Manager.TestAsync(null);
        Assert.Equal(MiB, test.Raw.NoMajorityAt);
        Assert.Contains(Urls[0], test.NoMajority!.Message);
        Assert.Contains(Urls[2], test.NoMajority.Message);
    }

    /// <summary>
    /// QEMU 7.2's libnfs client retries a dead server forever, without a timeout: the guest's requests that reach the
    /// lost replica wait (and with them the quorum's) until the server is back. The VM process and its monitor keep
    /// running, Get-QuorumDisk names the lost replica without touching QEMU's block layer, and once the server returns
    /// the waiting requests complete and the replicas are identical again.
    /// </summary>
    [Fact]
    public async Task AnNfsServerIsKilled_TheVmRunsOn_GetShowsTheLostReplica_AndItsRequestsWaitForTheServer()
    {
        var disk = await AttachAsync();
        await lab.Vm.WriteAsync("quorum0", 0x2d, 0, 8 * MiB);

        nfs[2].SimulateOutage();
        var lost = (await lab.Manager.GetAsync(null, probe: true)).Single();
        Assert.Equal(QuorumDiskState.Degraded, lost.State);
        Assert.Equal(new[] { QuorumReplicaHealth.Healthy, QuorumReplicaHealth.Healthy, QuorumReplicaHealth.Unreachable }, lost.Replicas.Select(r => r.Health));
        Assert.Contains(nfs[2].Address, lost.Replicas[2].Reason);
        var replace = await Assert.ThrowsAsync<QuorumException>(() => lab.Manager.PlanRepairAsync(null, lost.Replicas[2].NodeName, QuorumReplicaLocation.Parse(Path.Combine(lab.Directory, "new.raw")), null));
        Assert.Equal(QuorumErrorIds.RepairUnsupported, replace.ErrorId);
        Assert.Contains("libnfs", replace.Message);

        var url = await lab.ExportQuorumAsync(disk.QuorumNode);
        var stalled = Read(url, 0x2d, 0, MiB, TimeSpan.FromSeconds(5));
        Assert.False(stalled.Read, "the read waits for the dead server: " + stalled.Output);
        Assert.Contains("killed", stalled.Output);
        Assert.True(lab.Vm.IsRunning);
        Assert.Equal("prelaunch", (await lab.Vm.QmpAsync("query-status")).GetProperty("status").GetString());
        Assert.Equal(QuorumReplicaHealth.Unreachable, (await lab.Manager.GetAsync(null, probe: true)).Single().Replicas[2].Health);

        await nfs[2].RestoreAsync();
        var resumed = Read(url, 0x2d, 0, 8 * MiB, TimeSpan.FromSeconds(60));
        await lab.UnexportQuorumAsync();
        Assert.True(resumed.Matches, resumed.Output);
        Assert.Equal(QuorumDiskState.Healthy, (await lab.Manager.GetAsync(null, probe: true)).Single().State);
        Assert.True(Images.Compare(Files[0], "raw", Files[2], "raw").Identical);
    }
}
