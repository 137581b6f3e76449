using System.Text.Json.Nodes;
using ReplicaTools.Core;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Mirror;

/// <summary>drive-mirror on a real (paused, OS-less) QEMU with local images: copies, pivots, stops, errors.</summary>
public sealed class QmpDriveMirrorTests : IAsyncLifetime
{
    private const long MiB = 1024 * 1024;
    private readonly string directory = Path.Combine("/tmp", "rtmir-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly List<QemuVm> vms = new();
    private readonly List<string> mounts = new();

    public Task InitializeAsync()
    {
        Directory.CreateDirectory(directory);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        foreach (var vm in vms)
        {
            await vm.DisposeAsync();
        }

        foreach (var mount in mounts)
        {
            Tool.TryRun("umount", new[] { "-l", mount });
        }

        Directory.Delete(directory, recursive: true);
    }

    [Theory]
    [InlineData("qcow2")]
    [InlineData("vdi")]
    [InlineData("raw")]
    public async Task Mirror_WithWritesDuringAndAfterSync_StopWithoutPivot_LeavesAByteIdenticalCopy(string format)
    {
        var (vm, source) = await StartVmAsync(format, "64M");
        var destination = Path.Combine(directory, "copy." + format);
        var mirror = Open(vm);

        var plan = await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination) });
        Assert.True(plan.CreatesDestination);
        Assert.Equal(format, plan.Format);
        Assert.Equal(2, plan.Steps.Count);
        Assert.Contains("\"execute\":\"object-add\"", plan.Steps[0].Text);
        Assert.Contains(destination, plan.Steps[0].Text);
        var step = plan.Steps[1];
        Assert.Contains("\"execute\":\"drive-mirror\"", step.Text);
        Assert.Contains("\"job-id\":\"rt-mirror-virtio0\"", step.Text);
        Assert.Contains("\"auto-dismiss\":false", step.Text);
        Assert.Contains("\"mode\":\"absolute-paths\"", step.Text);
        Assert.False(File.Exists(destination), "planning must not create anything");

        var started = await mirror.StartAsync(plan);
        Assert.Equal("rt-mirror-virtio0", started.JobId);
        Assert.Equal(destination, started.Destination);
        for (var i = 0; i < 4; i++)
        {
            await vm.WriteAsync("virtio0", (byte)(0xc0 + i), (10 + (i * 7)) * MiB, MiB);
        }

        var ready = await mirror.WaitAsync(null, new MirrorWaitOptions());
        Assert.True(ready.Ready);
        Assert.Equal(DriveMirrorState.Ready, ready.State);

        await vm.WriteAsync("virtio0", 0xe1, 40 * MiB, 2 * MiB);
        await vm.WriteAsync("virtio0", 0xe2, 63 * MiB, MiB);
        var listed = Assert.Single(await mirror.GetAsync(null));
        Assert.Equal(DriveMirrorState.Ready, listed.State);
        Assert.True(listed.CreatedDestination);
        Assert.Equal(format, listed.Format);
        Assert.Equal(source, listed.Source);

        var stopPlan = await mirror.PlanStopAsync(null, pivot: false, force: false);
        Assert.Contains(stopPlan.Steps, s => s.Text.Contains("\"block-job-cancel\"") && s.Text.Contains("\"force\":false"));
        var stopped = await mirror.StopAsync(stopPlan, TimeSpan.FromMinutes(2));
        Assert.Equal(DriveMirrorState.Stopped, stopped.State);
        Assert.Empty(await mirror.GetAsync(null));
        Assert.Equal(source, (await vm.Machine().ResolveDiskAsync(null)).Source);

        await vm.DisposeAsync();
        var (identical, output) = Images.Compare(source, format, destination, format);
        Assert.True(identical, output);
        Assert.True(Images.HasPattern(destination, format, 0xe1, 40 * MiB, 2 * MiB));
        Assert.True(Images.HasPattern(destination, format, 0xc3, 31 * MiB, MiB));
    }

    /// <summary>
    /// Regression (issue 7): a storage-only QEMU (-machine none) has no QOM /objects container until its first object, and
    /// qom-list '/objects' answered DeviceNotFound, which failed Get-DriveMirror, -WhatIf and Start-DriveMirror.
    /// </summary>
    [Fact]
    public async Task MachineNone_NoObjectsContainer_MeansNoMirrorState_AndTheMirrorStillCopiesEveryByte()
    {
        var source = Path.Combine(directory, "storage-only.qcow2");
        Images.Create(source, "qcow2", "32M");
        Images.Write(source, "qcow2", 0xa1, 0, 2 * MiB);
        var vm = await QemuVm.StartStorageOnlyAsync(directory, "none0", new LabDisk("disk0", source, "qcow2"));
        vms.Add(vm);
        var mirror = vm.Machine().CreateMirrorBackend();

        Assert.Empty(await mirror.GetAsync(null));
        var destination = Path.Combine(directory, "storage-only-copy.qcow2");
        var plan = await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), Drive = "disk0" });
        Assert.Contains("\"execute\":\"drive-mirror\"", plan.Steps[^1].Text);
        await mirror.StartAsync(plan);
        await vm.WriteNodeAsync("disk0", 0xb7, 5 * MiB, MiB);
        Assert.True((await mirror.WaitAsync("disk0", new MirrorWaitOptions())).Ready);
        Assert.Equal(DriveMirrorState.Ready, Assert.Single(await mirror.GetAsync("disk0")).State);
        await mirror.StopAsync(await mirror.PlanStopAsync("disk0", pivot: false, force: false), TimeSpan.FromMinutes(2));
        await vm.DisposeAsync();

        var (identical, output) = Images.Compare(source, "qcow2", destination, "qcow2");
        Assert.True(identical, output);
        Assert.True(Images.HasPattern(destination, "qcow2", 0xb7, 5 * MiB, MiB));
    }

    [Fact]
    public async Task SyncTop_CopiesOnlyTheTopImage_AndTheCopyKeepsTheBackingFile()
    {
        var baseImage = Path.Combine(directory, "base.qcow2");
        Images.Create(baseImage, "qcow2", "32M");
        Images.Write(baseImage, "qcow2", 0x0b, 0, 16 * MiB);
        var top = Path.Combine(directory, "top.qcow2");
        Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", baseImage, top);
        Images.Write(top, "qcow2", 0x7a, 4 * MiB, MiB);
        var vm = await QemuVm.StartAsync(directory, "top", new LabDisk("virtio0", top, "qcow2"));
        vms.Add(vm);
        var destination = Path.Combine(directory, "top-copy.qcow2");
        var mirror = vm.Machine().CreateMirrorBackend();

        var plan = await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), Sync = MirrorSyncMode.Top });
        Assert.Contains("\"sync\":\"top\"", plan.Steps[^1].Text);
        await mirror.StartAsync(plan);
        await mirror.WaitAsync(null, new MirrorWaitOptions());
        await vm.WriteAsync("virtio0", 0x7b, 20 * MiB, MiB);
        await mirror.StopAsync(await mirror.PlanStopAsync(null, false, false), TimeSpan.FromMinutes(2));
        await vm.DisposeAsync();

        var info = System.Text.Json.JsonDocument.Parse(Tool.Run("qemu-img", "info", "--output=json", destination)).RootElement;
        Assert.Equal(baseImage, info.GetProperty("backing-filename").GetString());
        Assert.True(new FileInfo(destination).Length < 8 * MiB, "only the top image's clusters are copied");
        var (identical, output) = Images.Compare(top, "qcow2", destination, "qcow2");
        Assert.True(identical, output);
    }

    [Fact]
    public async Task Format_ConvertsWhileMirroring()
    {
        var (vm, source) = await StartVmAsync("qcow2", "16M");
        var destination = Path.Combine(directory, "converted.raw");
        var mirror = Open(vm);

        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), Format = "raw" }));
        await mirror.WaitAsync(null, new MirrorWaitOptions());
        var stopped = await mirror.StopAsync(await mirror.PlanStopAsync(null, false, false), TimeSpan.FromMinutes(2));
        await vm.DisposeAsync();

        Assert.Equal("raw", stopped.Format);
        Assert.Equal("raw", Images.Format(destination));
        var (identical, output) = Images.Compare(source, "qcow2", destination, "raw");
        Assert.True(identical, output);
    }

    [Fact]
    public async Task Pivot_SwitchesTheVmOntoTheCopy_AndClosesTheOldSource()
    {
        var (vm, source) = await StartVmAsync("vdi", "32M");
        var destination = Path.Combine(directory, "pivot.vdi");
        var mirror = Open(vm);
        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination) }));
        await vm.WriteAsync("virtio0", 0xd1, 3 * MiB, MiB);
        await mirror.WaitAsync("virtio0", new MirrorWaitOptions());
        await vm.WriteAsync("virtio0", 0xd2, 20 * MiB, MiB);

        var plan = await mirror.PlanStopAsync("virtio0", pivot: true, force: false);
        Assert.Contains(plan.Steps, s => s.Text.Contains("\"block-job-complete\""));
        var pivoted = await mirror.StopAsync(plan, TimeSpan.FromMinutes(2));

        Assert.Equal(DriveMirrorState.Pivoted, pivoted.State);
        Assert.Equal(destination, (await vm.Machine().ResolveDiskAsync(null)).Source);
        await using (var qmp = await QmpClient.ConnectLocalAsync(vm.SocketPath))
        {
            var nodes = await qmp.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true });
            Assert.DoesNotContain(nodes.EnumerateArray(), n => n.GetProperty("file").GetString() == source);
        }

        await vm.DisposeAsync();
        var (identical, output) = Images.Compare(source, "vdi", destination, "vdi");
        Assert.True(identical, output);
        Assert.True(Images.HasPattern(destination, "vdi", 0xd2, 20 * MiB, MiB));
    }

    [Fact]
    public async Task AfterAPivot_TheVmWritesOnlyToTheCopy()
    {
        var (vm, source) = await StartVmAsync("raw", "16M");
        var destination = Path.Combine(directory, "after.raw");
        var mirror = Open(vm);
        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination) }));
        await mirror.WaitAsync(null, new MirrorWaitOptions());
        await mirror.StopAsync(await mirror.PlanStopAsync(null, pivot: true, force: false), TimeSpan.FromMinutes(2));

        await vm.WriteAsync("virtio0", 0x5a, 0, MiB);

        Assert.True(Images.HasPattern(destination, "raw", 0x5a, 0, MiB));
        Assert.False(Images.HasPattern(source, "raw", 0x5a, 0, MiB));
    }

    [Fact]
    public async Task StopBeforeSync_IsRefused_UnlessForced_AndTheCreatedCopyIsRemoved()
    {
        var (vm, _) = await StartVmAsync("raw", "48M", fill: true);
        var destination = Path.Combine(directory, "slow.raw");
        var mirror = Open(vm);
        var job = await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), BandwidthMBps = 1 }));
        Assert.Equal(DriveMirrorState.Running, job.State);
        Assert.Equal(1, job.BandwidthMBps);

        var refused = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStopAsync(null, pivot: false, force: false));
        Assert.Equal("MirrorNotReady", refused.ErrorId);
        Assert.Contains("virtio0", refused.Message);
        Assert.Contains(destination, refused.Message);
        var noPivot = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStopAsync(null, pivot: true, force: true));
        Assert.Equal("MirrorNotReady", noPivot.ErrorId);
        Assert.Single(await mirror.GetAsync(null, checkStall: false));

        var plan = await mirror.PlanStopAsync(null, pivot: false, force: true);
        Assert.True(plan.Cancel);
        Assert.True(plan.RemovesDestination);
        var cancelled = await mirror.StopAsync(plan, TimeSpan.FromMinutes(2));

        Assert.Equal(DriveMirrorState.Cancelled, cancelled.State);
        Assert.Contains("removed", cancelled.Error);
        Assert.False(File.Exists(destination));
        Assert.Empty(await mirror.GetAsync(null));
    }

    [Fact]
    public async Task ForcedStop_OfAReusedDestination_LeavesTheFileInPlace()
    {
        var (vm, _) = await StartVmAsync("raw", "48M", fill: true);
        var destination = Path.Combine(directory, "kept.raw");
        Images.Create(destination, "raw", "48M");
        var mirror = Open(vm);
        var plan = await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), ReuseExisting = true, BandwidthMBps = 1 });
        Assert.False(plan.CreatesDestination);
        Assert.Contains("\"mode\":\"existing\"", plan.Steps[^1].Text);
        await mirror.StartAsync(plan);

        var cancelled = await mirror.StopAsync(await mirror.PlanStopAsync(null, pivot: false, force: true), TimeSpan.FromMinutes(2));

        Assert.Equal(DriveMirrorState.Cancelled, cancelled.State);
        Assert.True(File.Exists(destination));
        Assert.Contains("left in place", cancelled.Error);
    }

    [Fact]
    public async Task ReuseExisting_RefusesARawImageThatAnotherRunningVmHolds()
    {
        // Issue 9, case 1's kind: -ReuseExisting overwrites the image; a raw disk of another VM (-blockdev) is refused first.
        var (vm, _) = await StartVmAsync("raw", "32M");
        var (other, busy) = await StartVmAsync("raw", "32M");
        var before = File.GetLastWriteTimeUtc(busy);

        var error = await Assert.ThrowsAsync<ReplicaException>(() => Open(vm).PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(busy), ReuseExisting = true }));

        Assert.Equal(StorageErrorIds.ImageInUse, error.ErrorId);
        Assert.Contains($"pid {other.ProcessId}", error.Message);
        Assert.Empty(await Open(vm).GetAsync(null));
        Assert.Equal(before, File.GetLastWriteTimeUtc(busy));
    }

    [Fact]
    public async Task SuspendAndResume_PauseTheJob()
    {
        var (vm, _) = await StartVmAsync("raw", "48M", fill: true);
        var mirror = Open(vm);
        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(Path.Combine(directory, "p.raw")), BandwidthMBps = 1 }));

        var paused = await mirror.SuspendAsync(null);
        Assert.Equal(DriveMirrorState.Paused, paused.State);
        Assert.Equal(DriveMirrorState.Paused, (await mirror.GetOneAsync(null)).State);
        var waiting = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.WaitAsync(null, new MirrorWaitOptions()));
        Assert.Equal("MirrorPaused", waiting.ErrorId);

        var resumed = await mirror.ResumeAsync(null);
        Assert.Equal(DriveMirrorState.Running, resumed.State);
        await mirror.StopAsync(await mirror.PlanStopAsync(null, false, true), TimeSpan.FromMinutes(2));
    }

    [Fact]
    public async Task ErrorPaths_AreClear_AndLeaveNoJobAndNoFile()
    {
        var (vm, source) = await StartVmAsync("qcow2", "32M");
        var mirror = Open(vm);

        var drive = await Assert.ThrowsAsync<ReplicaException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Drive = "vdz", Destination = ImageLocation.Parse(Path.Combine(directory, "x.qcow2")) }));
        Assert.Equal("DriveNotFound", drive.ErrorId);
        Assert.Contains("virtio0", drive.Message);

        var smaller = Path.Combine(directory, "smaller.qcow2");
        Images.Create(smaller, "qcow2", "16M");
        var small = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(smaller), ReuseExisting = true }));
        Assert.Equal("DestinationSizeMismatch", small.ErrorId);
        Assert.Contains("smaller", small.Message);
        Assert.Contains("virtio0", small.Message);
        Assert.Contains(smaller, small.Message);

        var exists = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(smaller) }));
        Assert.Equal("DestinationExists", exists.ErrorId);
        Assert.Equal(16 * MiB, System.Text.Json.JsonDocument.Parse(Tool.Run("qemu-img", "info", "--output=json", smaller)).RootElement.GetProperty("virtual-size").GetInt64());

        var missingDirectory = Path.Combine(directory, "no-such-dir", "x.qcow2");
        var dir = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(missingDirectory) }));
        Assert.Equal("DestinationDirectoryNotFound", dir.ErrorId);

        var unreachable = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse("nfs://127.0.0.99/images/x.qcow2") }));
        Assert.Equal("DestinationUnreachable", unreachable.ErrorId);
        Assert.Contains("127.0.0.99", unreachable.Message);

        var same = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(source) }));
        Assert.Equal("DestinationIsSource", same.ErrorId);

        Assert.Throws<ArgumentException>(() => ImageLocation.Parse("relative/x.qcow2"));
        Assert.Throws<ArgumentException>(() => ImageLocation.Parse("iscsi://127.0.0.3/iqn/0"));

        Assert.Empty(await mirror.GetAsync(null));
        Assert.Equal(new[] { "smaller.qcow2", Path.GetFileName(source) }.Order(), Directory.GetFiles(directory, "*.qcow2").Select(Path.GetFileName).Order());

        vm.Kill();
        await Task.Delay(300);
        var stopped = await Assert.ThrowsAsync<VmNotRunningException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(Path.Combine(directory, "y.qcow2")) }));
        Assert.Contains(vm.SocketPath, stopped.Message);
        Assert.Contains("not running", stopped.Message);
    }

    [Fact]
    public async Task SecondMirrorOfTheSameDrive_IsRefused()
    {
        var (vm, _) = await StartVmAsync("raw", "48M", fill: true);
        var mirror = Open(vm);
        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(Path.Combine(directory, "one.raw")), BandwidthMBps = 1 }));

        var second = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(Path.Combine(directory, "two.raw")) }));

        Assert.Equal("MirrorAlreadyRunning", second.ErrorId);
        Assert.False(File.Exists(Path.Combine(directory, "two.raw")));
        await mirror.StopAsync(await mirror.PlanStopAsync(null, false, true), TimeSpan.FromMinutes(2));
    }

    [Fact]
    public async Task DestinationFull_SurfacesAsAFailedJob_NamingVmDriveAndDestination()
    {
        var (vm, _) = await StartVmAsync("raw", "32M", fill: true);
        var full = Path.Combine(directory, "full");
        Directory.CreateDirectory(full);
        Tool.Run("mount", "-t", "tmpfs", "-o", "size=8m", "rt-mirror-test", full);
        mounts.Add(full);
        var destination = Path.Combine(full, "copy.raw");
        var mirror = Open(vm);
        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination) }));

        var error = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.WaitAsync(null, new MirrorWaitOptions { Timeout = TimeSpan.FromMinutes(3) }));

        Assert.Equal("MirrorFailed", error.ErrorId);
        Assert.Contains(vm.SocketPath, error.Message);
        Assert.Contains("virtio0", error.Message);
        Assert.Contains(destination, error.Message);
        var failed = await mirror.GetOneAsync(null);
        Assert.Equal(DriveMirrorState.Failed, failed.State);
        Assert.NotNull(failed.Error);
        var refused = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStopAsync(null, false, false));
        Assert.Equal("MirrorFailed", refused.ErrorId);

        var cleared = await mirror.StopAsync(await mirror.PlanStopAsync(null, false, true), TimeSpan.FromMinutes(2));
        Assert.Equal(DriveMirrorState.Cancelled, cleared.State);
        Assert.Empty(await mirror.GetAsync(null));
        Assert.False(File.Exists(destination));
    }

    private async Task<(QemuVm Vm, string Source)> StartVmAsync(string format, string size, bool fill = false)
    {
        var name = "m" + vms.Count;
        var source = Path.Combine(directory, $"{name}-src.{format}");
        Images.Create(source, format, size);
        Images.Write(source, format, 0xa1, 0, 2 * MiB);
        if (fill)
        {
            var bytes = long.Parse(size.TrimEnd('M')) * MiB;
            Images.Write(source, format, 0xa2, 2 * MiB, bytes - (2 * MiB));
        }

        var vm = await QemuVm.StartAsync(directory, name, new LabDisk("virtio0", source, format));
        vms.Add(vm);
        return (vm, source);
    }

    private static DriveMirrorBackend Open(QemuVm vm) => vm.Machine().CreateMirrorBackend();
}

internal static class QemuVmExtensions
{
    public static VirtualMachine Machine(this QemuVm vm, ReplicaSession? session = null) => VirtualMachine.Open(session ?? ReplicaSession.Local, null, vm.SocketPath);
}
