using ReplicaTools.Core;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Qemu;

public sealed class QmpVirtualMachineTests : IAsyncLifetime
{
    private readonly string directory = Path.Combine("/tmp", "rtvm-" + Guid.NewGuid().ToString("N")[..8]);
    private QemuVm vm = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(directory);
        Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", Path.Combine(directory, "a.qcow2"), "32M");
        Tool.Run("qemu-img", "create", "-q", "-f", "raw", Path.Combine(directory, "b.raw"), "16M");
        vm = await QemuVm.StartAsync(directory, "vm2",
            new LabDisk("virtio0", Path.Combine(directory, "a.qcow2"), "qcow2"),
            new LabDisk("virtio1", Path.Combine(directory, "b.raw"), "raw"));
    }

    public async Task DisposeAsync()
    {
        await vm.DisposeAsync();
        Directory.Delete(directory, recursive: true);
    }

    [Fact]
    public async Task Disks_AreNamedByDeviceId_WithNodeSourceAndFormat()
    {
        var machine = VirtualMachine.Open(ReplicaSession.Local, null, vm.SocketPath);

        var disks = await machine.GetDisksAsync();

        Assert.Equal(new[] { "virtio0", "virtio1" }, disks.Select(d => d.Drive));
        Assert.Equal("drive-virtio0", disks[0].NodeName);
        Assert.Equal(Path.Combine(directory, "a.qcow2"), disks[0].Source);
        Assert.Equal("raw", disks[1].Format);
        Assert.Equal(VmRunState.Paused, await machine.GetStateAsync());
    }

    [Fact]
    public async Task ResolveDisk_ByName_ByNode_AndErrorsListTheDisks()
    {
        var machine = VirtualMachine.Open(ReplicaSession.Local, null, vm.SocketPath);

        Assert.Equal("virtio1", (await machine.ResolveDiskAsync("virtio1")).Drive);
        Assert.Equal("virtio0", (await machine.ResolveDiskAsync("drive-virtio0")).Drive);
        var ambiguous = await Assert.ThrowsAsync<ReplicaException>(() => machine.ResolveDiskAsync(null));
        Assert.Equal("DriveAmbiguous", ambiguous.ErrorId);
        Assert.Contains("virtio0", ambiguous.Message);
        Assert.Contains("virtio1", ambiguous.Message);
        var missing = await Assert.ThrowsAsync<ReplicaException>(() => machine.ResolveDiskAsync("vdz"));
        Assert.Equal("DriveNotFound", missing.ErrorId);
        Assert.Contains("'vdz'", missing.Message);
        Assert.Contains("virtio1", missing.Message);
    }

    [Fact]
    public async Task StoppedVm_IsReportedAsNotRunning()
    {
        var machine = VirtualMachine.Open(ReplicaSession.Local, null, vm.SocketPath);
        vm.Kill();
        await Task.Delay(200);

        var error = await Assert.ThrowsAsync<VmNotRunningException>(() => machine.EnsureRunningAsync());
        Assert.Contains(vm.SocketPath, error.Message);
        Assert.Contains("localhost", error.Message);
    }

    [Fact]
    public void VmParameters_AreValidated()
    {
        Assert.Throws<ArgumentException>(() => VirtualMachine.Open(ReplicaSession.Local, "vm1", "/run/vm1.qmp"));
        Assert.Throws<ArgumentException>(() => VirtualMachine.Open(ReplicaSession.Local, null, null));
        Assert.Throws<ArgumentException>(() => VirtualMachine.Open(ReplicaSession.Local, null, "relative.qmp"));
    }
}

[CollectionDefinition(Name)]
public sealed class LibvirtCollection : ICollectionFixture<LibvirtFixture>
{
    public const string Name = "libvirt";
}

public sealed class LibvirtFixture : IAsyncLifetime
{
    public LibvirtLab Lab { get; private set; } = null!;

    public async Task InitializeAsync() => Lab = await LibvirtLab.StartAsync();

    public async Task DisposeAsync() => await Lab.DisposeAsync();
}

[Collection(LibvirtCollection.Name)]
public sealed class LibvirtVirtualMachineTests(LibvirtFixture fixture)
{
    private LibvirtLab Lab => fixture.Lab;

    [Fact]
    public async Task Disks_StateAndErrors_ComeFromLibvirt()
    {
        var image = Path.Combine(Lab.Directory, Guid.NewGuid().ToString("N")[..6] + ".qcow2");
        Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "32M");
        var name = Lab.CreateDomain(Lab.UniqueName("disks"), persistent: false, (image, "qcow2"));
        var machine = VirtualMachine.Open(ReplicaSession.Local, name, null);

        var disk = Assert.Single(await machine.GetDisksAsync());
        Assert.Equal("vda", disk.Drive);
        Assert.Equal(image, disk.Source);
        Assert.Equal("qcow2", disk.Format);
        Assert.Equal("virtio-disk0", disk.DeviceId);
        Assert.Equal(VmRunState.Paused, await machine.GetStateAsync());
        Assert.Equal("vda", (await machine.ResolveDiskAsync(null)).Drive);

        Lab.Destroy(name);
        var gone = await Assert.ThrowsAsync<VmNotFoundException>(() => machine.GetDisksAsync());
        Assert.Contains(name, gone.Message);
    }

    [Fact]
    public void NetworkDisks_AreShownAsUrls()
    {
        var xml = System.Xml.Linq.XDocument.Parse("""
            <domain><devices>
              <disk type='network' device='disk'><driver name='qemu' type='raw'/>
                <source protocol='nbd' name='r0' index='3'><host name='192.0.2.5' port='10809'/></source>
                <target dev='vdc' bus='virtio'/><alias name='virtio-disk2'/></disk>
              <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda'/></disk>
            </devices></domain>
            """);

        var disk = Assert.Single(LibvirtVirtualMachine.ParseDisks(xml));
        Assert.Equal("nbd://192.0.2.5:10809/r0", disk.Source);
        Assert.Equal("libvirt-3-format", disk.NodeName);
    }
}
