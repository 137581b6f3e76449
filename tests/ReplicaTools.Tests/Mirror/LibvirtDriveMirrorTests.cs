using ReplicaTools.Core;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.Tests.Qemu;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Mirror;

/// <summary>virsh blockcopy on real (paused, OS-less) libvirt domains with local qcow2 images.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtDriveMirrorTests(LibvirtFixture fixture)
{
    private const long MiB = 1024 * 1024;

    private LibvirtLab Lab => fixture.Lab;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Blockcopy_WithWrites_StopWithoutPivot_LeavesAByteIdenticalCopy(bool persistent)
    {
        var source = NewImage("src", "32M");
        var destination = Path.Combine(Lab.Directory, Guid.NewGuid().ToString("N")[..6] + "-copy.qcow2");
        var name = Lab.CreateDomain(Lab.UniqueName("mir"), persistent, (source, "qcow2"));
        var mirror = VirtualMachine.Open(ReplicaSession.Local, name, null).CreateMirrorBackend();

        var plan = await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination) });
        Assert.Contains(plan.Steps, s => s.Text.Contains("blockcopy") && s.Text.Contains(destination));
        Assert.Equal(persistent, plan.Steps.Any(s => s.Text.Contains("--transient-job")));
        Assert.False(File.Exists(destination));

        var job = await mirror.StartAsync(plan);
        Assert.Equal(name, job.VMName);
        Assert.Equal("vda", job.Drive);
        Lab.Write(name, 0xc1, 5 * MiB, MiB);
        var ready = await mirror.WaitAsync(null, new MirrorWaitOptions());
        Assert.True(ready.Ready);
        Lab.Write(name, 0xc2, 20 * MiB, 2 * MiB);

        var listed = Assert.Single(await mirror.GetAsync("vda"));
        Assert.Equal(DriveMirrorState.Ready, listed.State);
        Assert.Equal(destination, listed.Destination);
        Assert.True(listed.CreatedDestination);
        var stopped = await mirror.StopAsync(await mirror.PlanStopAsync(null, pivot: false, force: false), TimeSpan.FromMinutes(2));
        Assert.Equal(DriveMirrorState.Stopped, stopped.State);
        Assert.Empty(await mirror.GetAsync(null));

        // Compare once QEMU has closed the images (a running QEMU caches qcow2 metadata).
        Lab.Destroy(name);
        var (identical, output) = Images.Compare(source, "qcow2", destination, "qcow2");
        Assert.True(identical, output);
        Assert.True(Images.HasPattern(destination, "qcow2", 0xc2, 20 * MiB, 2 * MiB));
    }

    [Fact]
    public async Task Pivot_SwitchesThePersistentDomain_AndItsDefinition()
    {
        var source = NewImage("psrc", "32M");
        var destination = Path.Combine(Lab.Directory, Guid.NewGuid().ToString("N")[..6] + "-pivot.qcow2");
        var name = Lab.CreateDomain(Lab.UniqueName("piv"), persistent: true, (source, "qcow2"));
        var vm = VirtualMachine.Open(ReplicaSession.Local, name, null);
        var mirror = vm.CreateMirrorBackend();
        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination) }));
        await mirror.WaitAsync("vda", new MirrorWaitOptions());
        Lab.Write(name, 0xd1, 8 * MiB, MiB);

        var pivoted = await mirror.StopAsync(await mirror.PlanStopAsync("vda", pivot: true, force: false), TimeSpan.FromMinutes(2));

        Assert.Equal(DriveMirrorState.Pivoted, pivoted.State);
        Assert.Equal(destination, (await vm.ResolveDiskAsync("vda")).Source);
        Assert.Contains(destination, Lab.Virsh("dumpxml", "--inactive", name));
        Lab.Destroy(name);
        var (identical, output) = Images.Compare(source, "qcow2", destination, "qcow2");
        Assert.True(identical, output);
    }

    [Fact]
    public async Task NotReady_ForcedStop_Suspend_AndErrors()
    {
        var source = NewImage("nsrc", "48M");
        Images.Write(source, "qcow2", 0xa5, 0, 48 * MiB);
        var destination = Path.Combine(Lab.Directory, Guid.NewGuid().ToString("N")[..6] + "-slow.qcow2");
        var name = Lab.CreateDomain(Lab.UniqueName("slow"), persistent: false, (source, "qcow2"));
        var mirror = VirtualMachine.Open(ReplicaSession.Local, name, null).CreateMirrorBackend();

        var missing = await Assert.ThrowsAsync<ReplicaException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Drive = "vdq", Destination = ImageLocation.Parse(destination) }));
        Assert.Equal("DriveNotFound", missing.ErrorId);
        var smaller = NewImage("small", "16M");
        var small = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(smaller), ReuseExisting = true }));
        Assert.Equal("DestinationSizeMismatch", small.ErrorId);
        Assert.Contains(name, small.Message);

        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), BandwidthMBps = 1 }));
        var suspend = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.SuspendAsync(null));
        Assert.Equal("MirrorPauseNotSupported", suspend.ErrorId);
        Assert.Equal(ReplicaErrorCategory.NotImplemented, suspend.Category);
        Assert.Contains("--bandwidth", suspend.RecommendedAction);
        var notReady = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStopAsync(null, false, false));
        Assert.Equal("MirrorNotReady", notReady.ErrorId);
        var second = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination + "2") }));
        Assert.Equal("MirrorAlreadyRunning", second.ErrorId);

        var cancelled = await mirror.StopAsync(await mirror.PlanStopAsync(null, false, true), TimeSpan.FromMinutes(2));
        Assert.Equal(DriveMirrorState.Cancelled, cancelled.State);
        Assert.False(File.Exists(destination));
        Assert.Empty(await mirror.GetAsync(null));

        Lab.Destroy(name);
        var gone = await Assert.ThrowsAnyAsync<ReplicaException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination) }));
        Assert.Contains(name, gone.Message);
    }

    [Fact]
    public async Task ShutOffDomain_IsNotRunning()
    {
        var source = NewImage("off", "16M");
        var name = Lab.CreateDomain(Lab.UniqueName("off"), persistent: true, (source, "qcow2"));
        Lab.Virsh("destroy", name);
        var mirror = VirtualMachine.Open(ReplicaSession.Local, name, null).CreateMirrorBackend();

        var error = await Assert.ThrowsAsync<VmNotRunningException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(source + ".copy") }));

        Assert.Contains(name, error.Message);
        Assert.False(File.Exists(source + ".copy"));
        Lab.Destroy(name);
    }

    [Fact]
    public async Task ACopyThatEndsBehindOurBack_IsReportedFailed_UntilCleared()
    {
        var source = NewImage("fsrc", "32M");
        Images.Write(source, "qcow2", 0xa5, 0, 32 * MiB);
        var destination = Path.Combine(Lab.Directory, Guid.NewGuid().ToString("N")[..6] + "-lost.qcow2");
        var name = Lab.CreateDomain(Lab.UniqueName("lost"), persistent: false, (source, "qcow2"));
        var mirror = VirtualMachine.Open(ReplicaSession.Local, name, null).CreateMirrorBackend();
        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), BandwidthMBps = 1 }));

        // What libvirt shows after a failed copy: no job, no <mirror>; only our record remains.
        Lab.Virsh("blockjob", name, "vda", "--abort");

        var failed = Assert.Single(await mirror.GetAsync(null));
        Assert.Equal(DriveMirrorState.Failed, failed.State);
        Assert.Contains("ended without Stop-DriveMirror", failed.Error);
        var wait = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.WaitAsync(null, new MirrorWaitOptions()));
        Assert.Equal("MirrorFailed", wait.ErrorId);
        Assert.Contains(name, wait.Message);
        Assert.Contains(destination, wait.Message);

        var cleared = await mirror.StopAsync(await mirror.PlanStopAsync(null, false, false), TimeSpan.FromMinutes(1));
        Assert.Equal(DriveMirrorState.Failed, cleared.State);
        Assert.Empty(await mirror.GetAsync(null));
        Assert.False(File.Exists(destination));
        Lab.Destroy(name);
    }

    private string NewImage(string stem, string size)
    {
        var path = Path.Combine(Lab.Directory, $"{stem}-{Guid.NewGuid().ToString("N")[..6]}.qcow2");
        Images.Create(path, "qcow2", size);
        Images.Write(path, "qcow2", 0x11, 0, MiB);
        return path;
    }
}
