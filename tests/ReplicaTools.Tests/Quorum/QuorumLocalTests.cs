using ReplicaTools.Core.Quorum;
using ReplicaTools.TestLab;
using static ReplicaTools.Tests.Quorum.QuorumLab;

namespace ReplicaTools.Tests.Quorum;

/// <summary>Quorum disks of three local raw images on a running (paused, OS-less) QEMU: corruption, health, comparison, repair.</summary>
public sealed class QuorumLocalTests : IAsyncLifetime
{
    private QuorumLab lab = null!;

    private string[] Replicas => new[] { "r1.raw", "r2.raw", "r3.raw" }.Select(n => Path.Combine(lab.Directory, n)).ToArray();

    public async Task InitializeAsync() => lab = await QuorumLab.StartAsync("rtquorum");

    public async Task DisposeAsync() => await lab.DisposeAsync();

    private async Task<QuorumDisk> AttachAsync(Func<QuorumDiskRequest, QuorumDiskRequest>? change = null)
    {
        var manager = lab.Manager;
        var request = QuorumLab.Request(Replicas);
        request = change?.Invoke(request) ?? request;
        var plan = await manager.PlanAttachAsync(request, lab.Vm.EventSocketPath);
        return await manager.AttachAsync(plan, lab.Vm.EventSocketPath);
    }

    [Fact]
    public async Task OneCorruptReplica_IsOutvoted_ReportedByName_NamedByTheComparison_AndRepairedInPlace()
    {
        var disk = await AttachAsync();
        Assert.Equal("quorum0", disk.Drive);
        Assert.Equal("quorum0-quorum", disk.QuorumNode);
        Assert.Equal(QuorumDiskState.Healthy, disk.State);
        Assert.All(Replicas, r => Assert.True(File.Exists(r)));
        await lab.Vm.WriteAsync("quorum0", 0x5a, 0, 8 * MiB);
        await lab.Vm.WriteAsync("quorum0", 0x6b, 40 * MiB, 4 * MiB);
        Assert.All(Replicas, r => Assert.True(Images.HasPattern(r, "raw", 0x5a, 0, 8 * MiB), "every replica got the guest's write"));

        Corrupt(Replicas[1], 2 * MiB + 1000, new byte[] { 0xde, 0xad, 0xbe, 0xef });
        var read = await lab.ReadThroughQuorumAsync(disk.QuorumNode, 0x5a, 0, 8 * MiB);
        Assert.True(read.Matches, "the quorum returns the majority's data: " + read.Output);

        // QEMU throttles QUORUM_REPORT_BAD to one per second per node: give the recorder that second.
        var bad = await WaitForAsync(async () => (await lab.Manager.GetAsync(null, probe: true)).Single().Replicas[1], r => r.Health == QuorumReplicaHealth.Corrupt);
        Assert.Equal("quorum0-quorum-r2", bad.NodeName);
        Assert.Equal(Replicas[1], bad.Location);
        Assert.True(bad.BadReports >= 1);
        var listed = (await lab.Manager.GetAsync("quorum0", probe: true)).Single();
        Assert.Equal(QuorumDiskState.Degraded, listed.State);
        Assert.Equal(new[] { QuorumReplicaHealth.Healthy, QuorumReplicaHealth.Corrupt, QuorumReplicaHealth.Healthy }, listed.Replicas.Select(r => r.Health));
        Assert.Contains("recorder file", listed.EventSource);

        var test = await lab.Manager.TestAsync(null);
        Assert.Null(test.NoMajority);
        Assert.Equal(new[] { true, false, true }, test.Replicas.Select(r => r.InMajority));
        Assert.Equal(2 * MiB + 1000, test.Replicas[1].FirstDifference);
        Assert.Equal(512, test.Replicas[1].DifferingBytes);
        Assert.Equal(1, test.Replicas[1].DifferingRegions);

        var plan = await lab.Manager.PlanRepairAsync(null, "quorum0-quorum-r2", null, null);
        Assert.Equal(QuorumRepairMode.InPlace, plan.Mode);
        Assert.Equal("children.1", plan.Child);
        Assert.Contains(plan.Steps, s => s.Text.Contains("\"execute\":\"x-blockdev-change\"") && s.Text.Contains("\"child\":\"children.1\""));
        Assert.Contains(plan.Steps, s => s.Text.Contains("\"execute\":\"blockdev-mirror\"") && s.Text.Contains("\"copy-mode\":\"write-blocking\""));
        Assert.False(plan.PausesVm, "a VM paused before start (-S) is not paused or resumed");
        var repaired = await lab.Manager.RepairAsync(plan);

        Assert.Equal(QuorumDiskState.Healthy, repaired.State);
        Assert.Equal("children.3", repaired.Replicas[1].Child);
        Assert.True(Images.Compare(Replicas[0], "raw", Replicas[1], "raw").Identical);
        Assert.True(Images.Compare(Replicas[0], "raw", Replicas[2], "raw").Identical);
        Assert.True(Images.HasPattern(Replicas[1], "raw", 0x5a, 0, 8 * MiB));
        var after = await lab.Manager.TestAsync(null);
        Assert.All(after.Replicas, r => Assert.True(r.InMajority));
        Assert.Equal("prelaunch", (await lab.Vm.QmpAsync("query-status")).GetProperty("status").GetString());
    }

    [Fact]
    public async Task TwoReplicasCorruptedDifferently_TheReadFails_AndTheComparisonNamesTheReplicasThatDisagree()
    {
        var disk = await AttachAsync();
        await lab.Vm.WriteAsync("quorum0", 0x11, 0, 4 * MiB);
        Corrupt(Replicas[1], 3 * MiB, new byte[] { 1, 2, 3 });
        Corrupt(Replicas[2], 3 * MiB, new byte[] { 7, 8, 9 });

        var read = await lab.ReadThroughQuorumAsync(disk.QuorumNode, 0x11, 3 * MiB, 4096);
        Assert.False(read.Read, "no two replicas agree: the quorum fails the read. qemu-io said: " + read.Output);
        Assert.Contains("Input/output error", read.Output);

        var test = await lab.Manager.TestAsync(null);
        Assert.NotNull(test.NoMajority);
        Assert.Equal(QuorumErrorIds.NoMajority, test.NoMajority!.ErrorId);
        Assert.Equal(3 * MiB, test.Raw.NoMajorityAt);
        foreach (var replica in Replicas)
        {
            Assert.Contains(replica, test.NoMajority.Message);
        }

        Assert.Contains("quorum0-quorum-r2", test.NoMajority.Message);
        var failed = await WaitForAsync(async () => (await lab.Manager.GetAsync(null, probe: false)).Single(), d => d.Failures.Count > 0);
        Assert.Equal(QuorumEvent.Failure, failed.Failures[0].Name);
        Assert.Equal(3 * MiB, failed.Failures[0].Offset);
    }

    [Fact]
    public async Task TheCommandLineArgumentsAndTheRecord_StartAQemuWithTheSameQuorumDisk()
    {
        var plan = await new QuorumDiskBuilder(Core.Remote.ReplicaSession.Local).PlanAsync(QuorumLab.Request(Replicas) with { Drive = "qd" });
        await new QuorumDiskBuilder(Core.Remote.ReplicaSession.Local).CreateReplicasAsync(plan);
        var arguments = new List<string> { "-machine", "pc,accel=tcg", "-S", "-m", "16", "-nodefaults", "-display", "none", "-daemonize",
            "-qmp", $"unix:{Path.Combine(lab.Directory, "cli.qmp")},server=on,wait=off", "-pidfile", Path.Combine(lab.Directory, "cli.pid") };
        arguments.AddRange(plan.Definition.QemuArguments);
        Tool.Run("qemu-system-x86_64", arguments, TimeSpan.FromSeconds(60));
        var pid = int.Parse(File.ReadAllText(Path.Combine(lab.Directory, "cli.pid")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        await using var cli = QemuVm.Attach(lab.Directory, "cli", pid);

        var manager = new QuorumDiskManager(Core.Qemu.VirtualMachine.Open(Core.Remote.ReplicaSession.Local, null, Path.Combine(lab.Directory, "cli.qmp")));
        var disk = (await manager.GetAsync(null, probe: true)).Single();
        Assert.Equal("qd", disk.Drive);
        Assert.Equal("qd", disk.DeviceId);
        Assert.Equal(3, disk.Replicas.Count);
        Assert.Equal(new[] { "children.0", "children.1", "children.2" }, disk.Replicas.Select(r => r.Child));
        Assert.Equal(QuorumDiskState.Healthy, disk.State);
        Assert.Contains("qemu:commandline", plan.Definition.LibvirtXml);
    }

    [Fact]
    public async Task BadInput_IsRefusedWithAClearError_BeforeAnythingIsAttached()
    {
        var before = await lab.NodeNamesAsync();
        var manager = lab.Manager;
        Images.Create(Replicas[0], "raw", "64M");
        Images.Create(Replicas[1], "raw", "32M");

        var threshold = await Assert.ThrowsAsync<QuorumException>(() => manager.PlanAttachAsync(QuorumLab.Request(Replicas, threshold: 4), null));
        Assert.Equal(QuorumErrorIds.ThresholdInvalid, threshold.ErrorId);
        Assert.Contains("-VoteThreshold 4", threshold.Message);

        var sizes = await Assert.ThrowsAsync<QuorumException>(() => manager.PlanAttachAsync(QuorumLab.Request(Replicas.Take(2), size: null), null));
        Assert.Equal(QuorumErrorIds.SizeMismatch, sizes.ErrorId);
        Assert.Contains("67108864", sizes.Message);
        Assert.Contains("33554432", sizes.Message);

        var twice = await Assert.ThrowsAsync<QuorumException>(() => manager.PlanAttachAsync(QuorumLab.Request(new[] { Replicas[0], Replicas[2], Replicas[0] }), null));
        Assert.Equal(QuorumErrorIds.ReplicaTwice, twice.ErrorId);
        Assert.Contains("Replicas 1 and 3", twice.Message);

        var link = Path.Combine(lab.Directory, "link.raw");
        File.CreateSymbolicLink(link, Replicas[0]);
        var linked = await Assert.ThrowsAsync<QuorumException>(() => manager.PlanAttachAsync(QuorumLab.Request(new[] { Replicas[0], link, Replicas[2] }), null));
        Assert.Equal(QuorumErrorIds.ReplicaTwice, linked.ErrorId);

        var missing = await Assert.ThrowsAsync<QuorumException>(() => manager.PlanAttachAsync(QuorumLab.Request(new[] { Replicas[0], Path.Combine(lab.Directory, "nope.raw"), Replicas[2] }, size: null), null));
        Assert.Equal(QuorumErrorIds.ReplicaNotFound, missing.ErrorId);
        Assert.Contains("nope.raw", missing.Message);
        Assert.Contains("-Size", missing.RecommendedAction);

        Assert.Equal(before, await lab.NodeNamesAsync());
        Assert.False(File.Exists(Replicas[2]), "nothing was created");
    }

    [Fact]
    public async Task ExistingReplicasWithDifferentData_AreRefused_UnlessForced()
    {
        foreach (var replica in Replicas)
        {
            Images.Create(replica, "raw", "64M");
        }

        Images.Write(Replicas[2], "raw", 0x77, 5 * MiB, 4096);
        var manager = lab.Manager;

        var differ = await Assert.ThrowsAsync<QuorumException>(() => manager.PlanAttachAsync(QuorumLab.Request(Replicas, size: null), null));
        Assert.Equal(QuorumErrorIds.ReplicasDiffer, differ.ErrorId);
        Assert.Contains(Replicas[2], differ.Message);
        Assert.Contains((5 * MiB).ToString(System.Globalization.CultureInfo.InvariantCulture), differ.Message);

        var forced = await manager.PlanAttachAsync(QuorumLab.Request(Replicas, size: null) with { Force = true }, null);
        Assert.Single(forced.Warnings);
        var disk = await manager.AttachAsync(forced, null);
        Assert.Equal(3, disk.Replicas.Count);
        var read = await lab.ReadThroughQuorumAsync(disk.QuorumNode, 0x00, 5 * MiB, 4096);
        Assert.True(read.Matches, "the two zero replicas outvote the third: " + read.Output);
    }

    [Fact]
    public async Task BlkverifyAndFifo_AreAcceptedByQemu_AndABlkverifyQuorumIsNotRepairedLive()
    {
        var fifo = await AttachAsync(r => r with { ReadPattern = QuorumReadPattern.Fifo, Drive = "fifo" });
        Assert.Equal(QuorumReadPattern.Fifo, fifo.ReadPattern);
        Assert.Contains("\"read-pattern\":\"fifo\"", fifo.BlockdevJson[^1]);

        var pair = new[] { "b1.raw", "b2.raw" }.Select(n => Path.Combine(lab.Directory, n)).ToArray();
        var plan = await lab.Manager.PlanAttachAsync(QuorumLab.Request(pair) with { Blkverify = true, Drive = "verify" }, null);
        var verify = await lab.Manager.AttachAsync(plan, null);
        Assert.True(verify.Blkverify);
        Assert.Equal(2, (await lab.Manager.GetAsync(null, probe: false)).Count);

        var refused = await Assert.ThrowsAsync<QuorumException>(() => lab.Manager.PlanRepairAsync("verify", verify.Replicas[0].NodeName, null, null));
        Assert.Equal(QuorumErrorIds.RepairUnsupported, refused.ErrorId);
        Assert.Contains("blkverify", refused.Message);
    }

    [Fact]
    public async Task TheEventSocket_MustBeASecondSocketOfTheVm()
    {
        var same = await Assert.ThrowsAsync<QuorumException>(() => lab.Manager.PlanAttachAsync(QuorumLab.Request(Replicas), lab.Vm.SocketPath));
        Assert.Equal(QuorumErrorIds.EventSocketInvalid, same.ErrorId);
        Assert.Contains("second -qmp socket", same.Message);

        var missing = await Assert.ThrowsAsync<QuorumException>(() => lab.Manager.PlanAttachAsync(QuorumLab.Request(Replicas), Path.Combine(lab.Directory, "nope.qmp")));
        Assert.Equal(QuorumErrorIds.EventSocketInvalid, missing.ErrorId);
        Assert.All(Replicas, r => Assert.False(File.Exists(r)));
    }

    [Fact]
    public async Task AQuorumWiredByHand_IsNamedInAWarning_NotListed()
    {
        foreach (var (replica, i) in Replicas.Select((r, i) => (r, i)))
        {
            Images.Create(replica, "raw", "16M");
            await lab.Vm.QmpAsync("blockdev-add", new System.Text.Json.Nodes.JsonObject
            {
                ["driver"] = "raw", ["node-name"] = $"hand{i}", ["file"] = new System.Text.Json.Nodes.JsonObject { ["driver"] = "file", ["filename"] = replica },
            });
        }

        await lab.Vm.QmpAsync("blockdev-add", System.Text.Json.Nodes.JsonNode.Parse("""{"driver":"quorum","node-name":"byhand","vote-threshold":2,"children":["hand0","hand1","hand2"]}""")!.AsObject());
        var reporter = new Storage.RecordingReporter();
        IReadOnlyList<QuorumDisk> disks;
        using (Core.OperationContext.Use(reporter))
        {
            disks = await lab.Manager.GetAsync(null, probe: false);
        }

        Assert.Empty(disks);
        Assert.Contains(reporter.Warnings, w => w.Contains("byhand", StringComparison.Ordinal) && w.Contains("no record", StringComparison.Ordinal));
    }
}
