using ReplicaTools.Core;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Remote;
using ReplicaTools.Tests.Storage;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Drbd;

/// <summary>
/// A replicated disk exported over NBD (nbd-server) from mirror-a, with mirror-b on standby: set up for real (resource
/// files, metadata, image copy, exports) with the simulated kernel, read and written by a client host through the
/// export, failed over to mirror-b (also when the switch is interrupted, and when mirror-a is dead), and removed.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class ReplicatedDiskNbdTests : DrbdLabTest
{
    public ReplicatedDiskNbdTests(LabFixture fixture)
        : base(fixture)
    {
    }

    [Fact]
    public async Task New_WritesBothHosts_CopiesTheImage_ExportsFromThePrimaryOnly_AndSaysSoWhenRunAgain()
    {
        // A qcow2 image with two known stripes, copied onto the new disk.
        var image = Path.Combine(Lab.Root, "seed.qcow2");
        Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", image, Text(16 * MiB));
        Tool.Run("qemu-io", "-f", "qcow2", "-c", $"write -P 0x5a {MiB} {MiB}", "-c", $"write -P 0xa5 {8 * MiB} {MiB}", image);
        Lab.Kernel.SyncStepPercent = 30;
        var reporter = new RecordingReporter();
        ReplicatedDisk disk;
        using (OperationContext.Use(reporter))
        {
            disk = await Manager.ExecuteAsync(await Manager.PlanNewAsync(Request(sourceImage: image)));
        }

        // The same 0600 file on both hosts, the only place the secret is written.
        var files = Both.Select(s => Lab.Layout(s).ConfigFile("r0")).ToArray();
        Assert.Equal(File.ReadAllText(files[0]), File.ReadAllText(files[1]));
        Assert.All(files, f => Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(f)));
        Assert.Contains($"shared-secret \"{Secret}\";", File.ReadAllText(files[0]));

        // Real metadata on both disks; the kernel steps in order; the image on the device, the metadata intact after it.
        Assert.True(HasMetadata(Lab.DiskA) && HasMetadata(Lab.DiskB));
        Assert.Equal(new[] { "[mirror-a] up r0", "[mirror-b] up r0", "[mirror-a] primary r0 --force" }, Lab.Kernel.Steps);
        Assert.Equal(0, Tool.TryRun("qemu-img", new[] { "compare", "-q", "-f", "qcow2", "-F", "raw", image, Lab.StandIn }).ExitCode);
        Assert.Equal(DrbdMetadata.UsableBytes(Lab.DiskBytes), DrbdMetadata.ParseDump(Tool.Run("drbdmeta", "-", "v09", Lab.DiskA, "internal", "dump-md"))!.BitmapOffset);
        Assert.Contains(reporter.Progress, p => p.Activity.StartsWith("Copying ", StringComparison.Ordinal) && p.Completed);

        // State: mirror-a primary and exporting, mirror-b secondary with the export configured but not running.
        // Hosts are named as the module reaches them (the session's host name: the lab's addresses).
        Assert.Equal(("127.0.0.2", "127.0.0.3", "127.0.0.2", ReplicatedDiskExport.Nbd), (disk.Primary, disk.Secondary, disk.ExportHost, disk.ExportProtocol));
        Assert.Equal(new[] { "mirror-a", "mirror-b" }, disk.Hosts.Select(h => h.NodeName));
        Assert.Equal($"nbd://127.0.0.2:{Text(NbdPort)}/r0", disk.Uri);
        Assert.Equal(ReplicatedDiskExportState.Standby, disk.Hosts[1].ExportState);
        Assert.True(File.Exists(Path.Combine(Lab.Layout(Lab.SessionB).NbdStateDirectory!, "r0.conf")));
        Assert.DoesNotContain(FilesIn(Lab.Layout(Lab.SessionB).NbdStateDirectory!), f => f.EndsWith(".json", StringComparison.Ordinal) || f.EndsWith(".pid", StringComparison.Ordinal));

        // Wait-ReplicatedDisk follows the initial sync to the end.
        var progress = new RecordingReporter();
        using (OperationContext.Use(progress))
        {
            disk = await Manager.WaitAsync(Both, "r0", TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(20));
        }

        Assert.True(disk.InSync);
        Assert.All(disk.Hosts, h => Assert.Equal(("UpToDate", "Connected", "Established"), (h.DiskState, h.ConnectionState, h.ReplicationState)));
        var percents = progress.Progress.Where(p => !p.Completed).Select(p => p.PercentComplete).ToArray();
        Assert.True(percents.Length >= 1 && percents.SequenceEqual(percents.Order()), $"progress {string.Join(",", percents)}");
        Assert.Contains(progress.Progress, p => p.Status.Contains("SyncTarget", StringComparison.Ordinal));

        // A KVM host reads the image's data through the export, exactly, and writes land on the device.
        var copy = Path.Combine(Lab.Root, "read-back.raw");
        await Client.RunAsync(new CommandSpec("nbdcopy", disk.Uri!, copy));
        Assert.Equal(0, Tool.TryRun("qemu-img", new[] { "compare", "-q", "-f", "qcow2", "-F", "raw", image, copy }).ExitCode);
        await QemuIoAsync(disk.Uri!, $"write -P 0x77 {20 * MiB} {MiB}");
        Assert.All(ReadBytes(Lab.StandIn, 20 * MiB, (int)MiB), b => Assert.Equal(0x77, b));

        // Run again: nothing to do, and it says so; nothing runs.
        var again = await Manager.PlanNewAsync(Request(sourceImage: image) with { Port = disk.Port });
        Assert.True(again.IsEmpty);
        Assert.Contains(again.Notes, n => n.Contains("already set up on mirror-a and mirror-b as requested; nothing to do", StringComparison.Ordinal));
        Assert.Contains(again.Notes, n => n.Contains("is not copied", StringComparison.Ordinal));
        await Manager.ExecuteAsync(again);
        Assert.Equal(3, Lab.Kernel.Steps.Count);

        // The same name with other settings is a conflict that names them.
        var conflict = await Assert.ThrowsAsync<ReplicaException>(() => Manager.PlanNewAsync(Request() with { Port = disk.Port + 1 }));
        Assert.Equal(("DrbdResourceConflict", ReplicaErrorCategory.ResourceExists), (conflict.ErrorId, conflict.Category));
        Assert.Contains($"port {Text(disk.Port)} there, requested {Text(disk.Port + 1)}", conflict.Message);
        var secret = await Assert.ThrowsAsync<ReplicaException>(() => Manager.PlanNewAsync(Request(secret: "another-secret") with { Port = disk.Port }));
        Assert.Contains("the shared secret differs", secret.Message);

        Assert.All(reporter.Verbose.Concat(reporter.Warnings).Concat(reporter.Progress.Select(p => p.Status)), m => Assert.DoesNotContain(Secret, m));
        Assert.All(Lab.Kernel.DryRuns, line => Assert.DoesNotContain(Secret, line));
    }

    [Fact]
    public async Task Switch_MovesTheExportToTheNewPrimary_RefusesAStaleCopy_AndFinishesAfterAnInterruption()
    {
        Lab.Kernel.SyncStepPercent = 0;
        await Manager.ExecuteAsync(await Manager.PlanNewAsync(Request()));
        Tool.Run("qemu-io", "-f", "raw", "-c", $"write -P 0x3c {2 * MiB} {MiB}", Lab.StandIn);

        // mirror-b is still Inconsistent: refused without -Force.
        var stale = await Assert.ThrowsAsync<ReplicaException>(() => Manager.PlanSwitchAsync(Both, "r0", "mirror-b", force: false));
        Assert.Equal(("DrbdNotUpToDate", "mirror-b"), (stale.ErrorId, stale.HostName));
        Assert.Contains("Inconsistent (SyncTarget, 0.00% done)", stale.Message);
        Lab.Kernel.SyncStepPercent = 100;
        await Manager.WaitAsync(Both, "r0", TimeSpan.FromSeconds(10), TimeSpan.FromMilliseconds(20));

        var plan = await Manager.PlanSwitchAsync(Both, "r0", "mirror-b", force: false);
        Assert.Equal(new[]
        {
            "[mirror-a] stop the Nbd export of r0 and keep it configured",
            "[mirror-a] demote mirror-a to secondary",
            "[mirror-b] promote mirror-b to primary",
            "[mirror-b] start the Nbd export of r0",
        }, plan.Actions.Select(a => a.ToString()));

        // Interrupted after the demotion: running the switch again finishes it.
        foreach (var action in plan.Actions.Take(2))
        {
            await action.Run(CancellationToken.None);
        }

        var rest = await Manager.PlanSwitchAsync(Both, "r0", "mirror-b", force: false);
        Assert.Equal(new[] { "[mirror-b] promote mirror-b to primary", "[mirror-b] start the Nbd export of r0" }, rest.Actions.Select(a => a.ToString()));
        var disk = (await Manager.RunAsync(rest))!;
        Assert.Equal(("127.0.0.3", "127.0.0.3", $"nbd://127.0.0.3:{Text(NbdPort)}/r0"), (disk.Primary, disk.ExportHost, disk.Uri));
        Assert.Equal(ReplicatedDiskExportState.Standby, disk.Hosts.Single(h => h.NodeName == "mirror-a").ExportState);
        await QemuIoAsync(disk.Uri!, $"read -P 0x3c {2 * MiB} {MiB}");
        var refused = await Client.RunAsync(new CommandSpec("qemu-io", "-f", "raw", "-c", "read 0 512", $"nbd://127.0.0.2:{Text(NbdPort)}/r0") { ThrowOnFailure = false });
        Assert.NotEqual(0, refused.ExitCode);

        // Switched already: nothing to do.
        Assert.True((await Manager.PlanSwitchAsync(Both, "r0", "mirror-b", force: false)).IsEmpty);
        Assert.Equal(new[] { "[mirror-a] up r0", "[mirror-b] up r0", "[mirror-a] primary r0 --force", "[mirror-a] secondary r0", "[mirror-b] primary r0" }, Lab.Kernel.Steps);
    }

    [Fact]
    public async Task Failover_WithThePrimaryDead_NeedsForce_ThenServesTheDataFromTheSecondary()
    {
        await CreateInSyncAsync(Request());
        Tool.Run("qemu-io", "-f", "raw", "-c", $"write -P 0xe1 {5 * MiB} {MiB}", Lab.StandIn);
        Lab.Kill(Lab.MirrorA);

        var unreachable = await Assert.ThrowsAsync<ReplicaException>(() => Manager.PlanSwitchAsync(Both, "r0", "mirror-b", force: false));
        Assert.Equal(("DrbdPeerUnreachable", ReplicaErrorCategory.ConnectionError), (unreachable.ErrorId, unreachable.Category));
        Assert.Contains("pass -Force", unreachable.Message);

        var plan = await Manager.PlanSwitchAsync(Both, "r0", "mirror-b", force: true);
        Assert.Equal(new[] { "[mirror-b] promote mirror-b to primary", "[mirror-b] start the Nbd export of r0" }, plan.Actions.Select(a => a.ToString()));
        Assert.Contains(plan.Warnings, w => w.HostName == "mirror-b" && w.Message.Contains("cannot be reached", StringComparison.Ordinal));
        var disk = (await Manager.RunAsync(plan))!;
        var b = disk.Hosts.Single(h => h.NodeName == "mirror-b");
        Assert.Equal(("Primary", "UpToDate", "Connecting", ReplicatedDiskExportState.Running), (b.Role, b.DiskState, b.ConnectionState, b.ExportState));
        var a = disk.Hosts.Single(h => h.NodeName == "mirror-a");
        Assert.False(a.Queried);
        Assert.Contains("not reachable", a.Problem);
        await QemuIoAsync(disk.Uri!, $"read -P 0xe1 {5 * MiB} {MiB}");
    }

    [Fact]
    public async Task Remove_TakesExportsResourceAndFilesAway_AndWipeMetadataErasesTheSignature()
    {
        await CreateInSyncAsync(Request());
        var plan = await Manager.PlanRemoveAsync(Both, "r0", wipeMetadata: true, force: false);
        Assert.Equal(new[]
        {
            "[mirror-a] remove the Nbd export of r0",
            "[mirror-b] remove the Nbd export of r0",
            "[mirror-a] take r0 down",
            "[mirror-b] take r0 down",
            $"[mirror-a] wipe the DRBD metadata on {Lab.DiskA}",
            $"[mirror-a] remove the resource file {Lab.Layout(Lab.SessionA).ConfigFile("r0")}",
            $"[mirror-b] wipe the DRBD metadata on {Lab.DiskB}",
            $"[mirror-b] remove the resource file {Lab.Layout(Lab.SessionB).ConfigFile("r0")}",
        }, plan.Actions.Select(x => x.ToString()));
        Assert.Null(await Manager.RunAsync(plan, readBack: false));

        AssertNothingLeft();
        Assert.False(HasMetadata(Lab.DiskA));
        Assert.False(HasMetadata(Lab.DiskB));
        var gone = await Assert.ThrowsAsync<ReplicaException>(() => Manager.GetAsync(Both, "r0"));
        Assert.Equal(("ReplicatedDiskNotFound", ReplicaErrorCategory.ObjectNotFound), (gone.ErrorId, gone.Category));
        Assert.Empty(await Manager.GetAsync(Both, include: null));
    }

    [Fact]
    public async Task Remove_KeepsTheMetadataByDefault_AndNewAdoptsItOnlyWhenAsked()
    {
        await CreateInSyncAsync(Request());
        await Manager.RunAsync(await Manager.PlanRemoveAsync(Both, "r0", wipeMetadata: false, force: false), readBack: false);
        AssertNothingLeft();
        Assert.True(HasMetadata(Lab.DiskA) && HasMetadata(Lab.DiskB));

        var refused = await Assert.ThrowsAsync<ReplicaException>(() => Manager.PlanNewAsync(Request()));
        Assert.Equal("DrbdDiskHasMetadata", refused.ErrorId);
        var adopted = await Manager.PlanNewAsync(Request() with { UseExistingMetadata = true });
        Assert.DoesNotContain(adopted.Actions, a => a.Description.StartsWith("initialise DRBD metadata", StringComparison.Ordinal));
        Assert.Contains(adopted.Actions, a => a.ToString() == "[mirror-a] make mirror-a primary");
    }

    private void AssertNothingLeft()
    {
        foreach (var session in Both)
        {
            Assert.Empty(FilesIn(Lab.Layout(session).ConfigDirectory));
            Assert.Empty(FilesIn(Lab.Layout(session).NbdStateDirectory!));
        }

        Assert.False(SimulatedDrbdKernel.IsHeldOpen(Lab.StandIn));
    }
}
