using ReplicaTools.Core;
using ReplicaTools.Core.Failover;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;
using ReplicaTools.Tests.Storage;

namespace ReplicaTools.Tests.Mirror;

/// <summary>feature/storage's two-server NFS lab (nfs-ganesha on 127.0.0.2/127.0.0.3, btrfs on loop devices), shared by the seed-scenario tests.</summary>
public sealed class MirrorNfsFixture : IAsyncLifetime
{
    private NfsLab? lab;

    public NfsLab Lab => lab ?? throw new InvalidOperationException("The NFS lab is not started (see the skip reason).");

    public NfsServer Nfs1 => Lab[0];

    public NfsServer Nfs2 => Lab[1];

    public async Task InitializeAsync()
    {
        if (NfsLab.IsSupported(out _))
        {
            // 2 GiB each: mirrors to VDI targets allocate their whole virtual size.
            lab = await NfsLab.StartAsync(new NfsLabOptions { VolumeSize = 2L << 30 });
        }
    }

    public async Task DisposeAsync()
    {
        if (lab is not null)
        {
            await lab.DisposeAsync();
        }
    }

    /// <summary>Brings both servers back (a test may have killed or frozen one) and restores rpcbind's entries.</summary>
    public async Task HealAsync()
    {
        if (lab is null)
        {
            return;
        }

        foreach (var server in lab.Servers)
        {
            await server.RestoreAsync();
        }

        lab.EnsureRegistered();
    }
}

[CollectionDefinition(Name)]
public sealed class MirrorNfsCollection : ICollectionFixture<MirrorNfsFixture>
{
    public const string Name = "mirror-nfs";
}

/// <summary>
/// The seed topology: a VM whose disk is on NFS1 (QEMU's nfs:// driver), mirrored live to NFS2 while it writes;
/// both servers export btrfs on loop devices. Stop with and without pivot leaves a byte-identical copy; failover
/// starts from NFS2 when NFS1 is gone; a dead destination is an error or a Stalled job, never a hang.
/// </summary>
[Collection(MirrorNfsCollection.Name)]
public sealed class NfsSeedScenarioTests(MirrorNfsFixture nfs) : IAsyncLifetime
{
    private const long MiB = 1024 * 1024;
    private readonly string directory = Path.Combine("/tmp", "rtseed-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly List<QemuVm> vms = new();
    private readonly List<string> files = new();

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(directory);
        await nfs.HealAsync();
    }

    public async Task DisposeAsync()
    {
        foreach (var vm in vms)
        {
            await vm.DisposeAsync();
        }

        await nfs.HealAsync();
        foreach (var file in files.Where(_ => NfsLab.IsSupported(out _)))
        {
            nfs.Nfs1.DeleteFile(file);
            nfs.Nfs2.DeleteFile(file);
        }

        Directory.Delete(directory, recursive: true);
    }

    [NfsTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task VdiOnNfs1_MirroredToNfs2_WhileWriting_StopsWithAByteIdenticalCopy(bool pivot)
    {
        var (vm, file) = await StartVmOnNfs1Async("vdi", 48);
        var destination = nfs.Nfs2.Url(file);
        var mirror = vm.Machine().CreateMirrorBackend();

        // 8 MiB/s: the bulk copy takes seconds, so the writes below land while it runs.
        var job = await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), BandwidthMBps = 8 }));
        Assert.Equal(DriveMirrorState.Running, job.State);
        for (var i = 0; i < 6; i++)
        {
            await vm.WriteAsync("virtio0", (byte)(0xb0 + i), (3 + (i * 7)) * MiB, 512 * 1024);
        }

        var ready = await mirror.WaitAsync(null, new MirrorWaitOptions());
        Assert.Equal(destination, ready.Destination);
        await vm.WriteAsync("virtio0", 0xee, 44 * MiB, 2 * MiB);

        var stopped = await mirror.StopAsync(await mirror.PlanStopAsync(null, pivot, force: false), TimeSpan.FromMinutes(2));
        Assert.Equal(pivot ? DriveMirrorState.Pivoted : DriveMirrorState.Stopped, stopped.State);
        Assert.Equal(pivot ? destination : nfs.Nfs1.Url(file), (await vm.Machine().ResolveDiskAsync(null)).Source);

        await vm.DisposeAsync();
        await AssertIdenticalAsync(nfs.Nfs1.Url(file), destination);
        Assert.True(Images.HasPattern(destination, "vdi", 0xee, 44 * MiB, 2 * MiB));
        Assert.True(Images.HasPattern(destination, "vdi", 0xb5, 38 * MiB, 512 * 1024));
    }

    [NfsTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task LibvirtDomain_Qcow2OnNfs1_MirroredToNfs2_StopsWithAByteIdenticalCopy(bool pivot)
    {
        await using var libvirt = await LibvirtLab.StartAsync();
        var file = NewFile("qcow2");
        var source = nfs.Nfs1.Url(file);
        Images.Create(source, "qcow2", "40M");
        Images.Write(source, "qcow2", 0x31, 0, 24 * MiB);
        var name = libvirt.UniqueName("seed");
        var xml = $"""
            <domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
            <os><type arch='x86_64' machine='pc'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='network' device='disk'><driver name='qemu' type='qcow2'/>
              <source protocol='nfs' name='/images/{file}'><host name='{nfs.Nfs1.Address}'/><identity user='root' group='root'/></source>
              <target dev='vda' bus='virtio'/></disk>
            <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>
            """;
        var xmlFile = Path.Combine(directory, name + ".xml");
        File.WriteAllText(xmlFile, xml);
        libvirt.Virsh("create", xmlFile, "--paused");
        try
        {
            var vm = VirtualMachine.Open(ReplicaSession.Local, name, null);
            Assert.Equal(source, (await vm.ResolveDiskAsync(null)).Source);
            var mirror = vm.CreateMirrorBackend();
            var destination = nfs.Nfs2.Url(file);

            var plan = await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), BandwidthMBps = 8 });
            Assert.Contains(plan.Steps, s => s.Text.Contains("--xml /dev/stdin") && s.Text.Contains("protocol='nfs'") && s.Text.Contains("<identity"));
            await mirror.StartAsync(plan);
            libvirt.Write(name, 0x41, 4 * MiB, MiB);
            libvirt.Write(name, 0x42, 30 * MiB, MiB);
            var ready = await mirror.WaitAsync(null, new MirrorWaitOptions());
            Assert.Equal(destination, ready.Destination);
            libvirt.Write(name, 0x43, 36 * MiB, 2 * MiB);

            var stopped = await mirror.StopAsync(await mirror.PlanStopAsync(null, pivot, false), TimeSpan.FromMinutes(2));
            Assert.Equal(pivot ? DriveMirrorState.Pivoted : DriveMirrorState.Stopped, stopped.State);
            Assert.Equal(pivot ? destination : source, (await vm.ResolveDiskAsync(null)).Source);
        }
        finally
        {
            libvirt.Destroy(name);
        }

        await AssertIdenticalAsync(source, nfs.Nfs2.Url(file));
        Assert.True(Images.HasPattern(nfs.Nfs2.Url(file), "qcow2", 0x43, 36 * MiB, 2 * MiB));
    }

    [NfsFact]
    public async Task Failover_Nfs1Dead_StartsFromNfs2_AndSaysWhyNfs1WasSkipped()
    {
        var file = NewFile("vdi");
        Images.Create(nfs.Nfs1.Url(file), "vdi", "16M");
        Images.Create(nfs.Nfs2.Url(file), "vdi", "16M");
        Images.Write(nfs.Nfs2.Url(file), "vdi", 0x77, 0, MiB);
        nfs.Nfs1.SimulateOutage();
        var socket = Path.Combine(directory, "fo.qmp");
        var launcher = new ReplicaVmLauncher(ReplicaSession.Local);

        var result = await launcher.StartAsync(await launcher.PlanAsync(new ReplicaVmRequest
        {
            Name = "seedfo", Copies = new[] { ImageLocation.Parse(nfs.Nfs1.Url(file)), ImageLocation.Parse(nfs.Nfs2.Url(file)) },
            QmpSocket = socket, Machine = "pc,accel=tcg", Paused = true, MemoryMB = 32, QemuArguments = new[] { "-nodefaults" },
        }));
        vms.Add(QemuVm.Attach(directory, "fo", result.ProcessId!.Value));

        Assert.Equal(nfs.Nfs2.Url(file), result.UsedCopy);
        Assert.False(result.IsPrimary);
        Assert.Equal(DiskCopyStatus.Skipped, result.Copies[0].Status);
        Assert.StartsWith("Unreachable", result.Copies[0].Reason);
        Assert.Contains(nfs.Nfs1.Address, result.Copies[0].Reason);
        Assert.Equal(nfs.Nfs2.Url(file), (await VirtualMachine.Open(ReplicaSession.Local, null, socket).ResolveDiskAsync(null)).Source);
    }

    [NfsFact]
    public async Task Failover_Nfs1Hung_IsSkippedAfterTheProbeTimeout_NotWaitedForForever()
    {
        var file = NewFile("vdi");
        Images.Create(nfs.Nfs1.Url(file), "vdi", "16M");
        Images.Create(nfs.Nfs2.Url(file), "vdi", "16M");
        nfs.Nfs1.Freeze();
        var socket = Path.Combine(directory, "hung.qmp");
        var launcher = new ReplicaVmLauncher(ReplicaSession.Local);

        var result = await launcher.StartAsync(await launcher.PlanAsync(new ReplicaVmRequest
        {
            Name = "seedhung", Copies = new[] { ImageLocation.Parse(nfs.Nfs1.Url(file)), ImageLocation.Parse(nfs.Nfs2.Url(file)) },
            QmpSocket = socket, Machine = "pc,accel=tcg", Paused = true, MemoryMB = 32, QemuArguments = new[] { "-nodefaults" },
            ProbeTimeout = TimeSpan.FromSeconds(3),
        }));
        vms.Add(QemuVm.Attach(directory, "hung", result.ProcessId!.Value));

        Assert.Equal(2, result.UsedPreference);
        Assert.Contains("did not answer within 3 s", result.Copies[0].Reason);
    }

    [NfsFact]
    public async Task DestinationServerDown_IsAClearError_AndNothingIsLeftBehind()
    {
        var (vm, file) = await StartVmOnNfs1Async("vdi", 8);
        var mirror = vm.Machine().CreateMirrorBackend();
        nfs.Nfs2.SimulateOutage();

        var error = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(nfs.Nfs2.Url(file)) }));

        Assert.Equal("DestinationUnreachable", error.ErrorId);
        Assert.Contains(nfs.Nfs2.Address, error.Message);
        Assert.Contains("virtio0", error.Message);
        Assert.Empty(await mirror.GetAsync(null));
        await nfs.HealAsync();
        Assert.False(File.Exists(nfs.Nfs2.LocalPath(file)));
    }

    [NfsFact]
    public async Task DestinationServerHung_IsCaughtByTheProbe_SoQemuNeverBlocksOnIt()
    {
        var (vm, file) = await StartVmOnNfs1Async("vdi", 8);
        var mirror = vm.Machine().CreateMirrorBackend();
        nfs.Nfs2.Freeze();

        var error = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest
        {
            Destination = ImageLocation.Parse(nfs.Nfs2.Url(file)), ProbeTimeout = TimeSpan.FromSeconds(3),
        }));

        Assert.Equal("DestinationUnreachable", error.ErrorId);
        Assert.Contains("did not answer within 3 s", error.Message);

        // drive-mirror was never sent, so QEMU's main loop is free: it still answers at once.
        Assert.Empty(await mirror.GetAsync(null));
        Assert.Equal(VmRunState.Paused, await vm.Machine().GetStateAsync());
    }

    [NfsFact]
    public async Task SmallerDestinationOnNfs2_IsRefusedBeforeAnythingStarts()
    {
        var (vm, file) = await StartVmOnNfs1Async("vdi", 8);
        Images.Create(nfs.Nfs2.Url(file), "vdi", "4M");
        var mirror = vm.Machine().CreateMirrorBackend();

        var error = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(nfs.Nfs2.Url(file)), ReuseExisting = true }));

        Assert.Equal("DestinationSizeMismatch", error.ErrorId);
        Assert.Contains("smaller", error.Message);
        Assert.Empty(await mirror.GetAsync(null));
    }

    [NfsFact]
    public async Task DestinationDyingMidCopy_ShowsStalled_AndWaitEndsWithAClearError()
    {
        var (vm, file) = await StartVmOnNfs1Async("vdi", 48);
        var mirror = vm.Machine().CreateMirrorBackend();
        var destination = nfs.Nfs2.Url(file);
        await mirror.StartAsync(await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), BandwidthMBps = 2 }));
        await Task.Delay(TimeSpan.FromSeconds(2));
        nfs.Nfs2.SimulateOutage();

        // QEMU raises no error for a dead NFS target: the offset just stops moving.
        var seen = await mirror.GetOneAsync(null);
        Assert.Equal(DriveMirrorState.Stalled, seen.State);
        Assert.Contains(nfs.Nfs2.Address, seen.Error);

        var error = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.WaitAsync(null, new MirrorWaitOptions { ProbeAfter = TimeSpan.FromSeconds(3), StallTimeout = TimeSpan.FromSeconds(60) }));
        Assert.Equal("MirrorStalled", error.ErrorId);
        Assert.Contains("no progress", error.Message);
        Assert.Contains(destination, error.Message);
        Assert.Contains("virtio0", error.Message);
        Assert.Equal(DriveMirrorState.Stalled, error.Job!.State);

        // The server comes back: the job carries on by itself and can be stopped normally.
        await nfs.HealAsync();
        var ready = await mirror.WaitAsync(null, new MirrorWaitOptions());
        Assert.True(ready.Ready);
        await mirror.StopAsync(await mirror.PlanStopAsync(null, false, false), TimeSpan.FromMinutes(2));
    }

    /// <summary>Compare-DiskImage's core: guest-visible content, byte for byte.</summary>
    private static async Task AssertIdenticalAsync(string reference, string difference)
    {
        var comparison = await DiskImageComparer.CompareAsync(ImageEndpoint.For(ReplicaSession.Local, reference), ImageEndpoint.For(ReplicaSession.Local, difference));
        Assert.True(comparison.Identical, comparison.Message);
    }

    private string NewFile(string format)
    {
        var file = $"t{Guid.NewGuid().ToString("N")[..8]}.{format}";
        files.Add(file);
        return file;
    }

    /// <summary>A paused QEMU whose virtio0 is a <paramref name="format"/> image on NFS1 with <paramref name="dataMiB"/> MiB written.</summary>
    private async Task<(QemuVm Vm, string File)> StartVmOnNfs1Async(string format, int dataMiB)
    {
        var file = NewFile(format);
        var source = nfs.Nfs1.Url(file);
        Images.Create(source, format, $"{dataMiB}M");
        Images.Write(source, format, 0xa7, 0, dataMiB * MiB);
        var vm = await QemuVm.StartAsync(directory, "s" + vms.Count, new LabDisk("virtio0", source, format));
        vms.Add(vm);
        return (vm, file);
    }
}

/// <summary>A theory that needs the nfs-ganesha lab (root, btrfs, ganesha, rpcbind); skipped with the reason elsewhere.</summary>
public sealed class NfsTheoryAttribute : TheoryAttribute
{
    public NfsTheoryAttribute()
    {
        if (!NfsLab.IsSupported(out var why))
        {
            Skip = why;
        }
    }
}
