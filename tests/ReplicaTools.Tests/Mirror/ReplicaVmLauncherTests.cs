using ReplicaTools.Core;
using ReplicaTools.Core.Failover;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.Tests.Qemu;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Mirror;

/// <summary>Start-ReplicaVM's core with local copies: picks the first usable copy and says why others were skipped.</summary>
public sealed class ReplicaVmLauncherTests : IAsyncLifetime
{
    private const long MiB = 1024 * 1024;
    private readonly string directory = Path.Combine("/tmp", "rtfo-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly List<string> pidFiles = new();

    public Task InitializeAsync()
    {
        Directory.CreateDirectory(directory);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        foreach (var pidFile in pidFiles.Where(File.Exists))
        {
            Tool.TryRun("kill", new[] { "-9", File.ReadAllText(pidFile).Trim() });
        }

        await Task.Delay(200);
        Directory.Delete(directory, recursive: true);
    }

    [Fact]
    public async Task PrimaryMissing_StartsFromTheMirrorCopy_AndSaysWhy()
    {
        var primary = Path.Combine(directory, "gone.vdi");
        var mirror = Path.Combine(directory, "mirror.vdi");
        Images.Create(mirror, "vdi", "16M");
        Images.Write(mirror, "vdi", 0x42, 0, MiB);
        var socket = Path.Combine(directory, "fo1.qmp");
        pidFiles.Add(Path.Combine(directory, "fo1.pid"));
        var launcher = new ReplicaVmLauncher(ReplicaSession.Local);

        var plan = await launcher.PlanAsync(Request("fo1", socket, primary, mirror));
        Assert.Equal(1, plan.Candidate);
        Assert.Contains(plan.Steps, s => s.Text.Contains("-daemonize") && s.Text.Contains(mirror) && s.Text.Contains("-S"));
        var result = await launcher.StartAsync(plan);

        Assert.Equal(mirror, result.UsedCopy);
        Assert.Equal(2, result.UsedPreference);
        Assert.False(result.IsPrimary);
        Assert.Equal(DiskCopyStatus.Skipped, result.Copies[0].Status);
        Assert.Contains("does not exist", result.Copies[0].Reason);
        Assert.Contains("NotFound", result.Copies[0].Reason);
        Assert.Equal(DiskCopyStatus.Used, result.Copies[1].Status);
        Assert.Equal("vdi", result.Copies[1].Format);
        Assert.Contains("gone.vdi", result.SkippedReasons);
        Assert.NotNull(result.ProcessId);
        var disk = await VirtualMachine.Open(ReplicaSession.Local, null, socket).ResolveDiskAsync(null);
        Assert.Equal("virtio0", disk.Drive);
        Assert.Equal(mirror, disk.Source);
        Assert.Equal("vdi", disk.Format);
    }

    [Fact]
    public async Task PrimaryUsable_IsUsed_AndLaterCopiesAreNotTouched()
    {
        var primary = Path.Combine(directory, "p.qcow2");
        Images.Create(primary, "qcow2", "16M");
        var socket = Path.Combine(directory, "fo2.qmp");
        pidFiles.Add(Path.Combine(directory, "fo2.pid"));
        var launcher = new ReplicaVmLauncher(ReplicaSession.Local);

        var result = await launcher.StartAsync(await launcher.PlanAsync(Request("fo2", socket, primary, "nfs://127.0.0.99/images/never.qcow2")));

        Assert.True(result.IsPrimary);
        Assert.Equal(DiskCopyStatus.NotNeeded, result.Copies[1].Status);

        // A second start on the same socket would run two VMs on one disk.
        var again = await Assert.ThrowsAsync<ReplicaException>(() => launcher.PlanAsync(Request("fo2", socket, primary)));
        Assert.Equal("VmAlreadyRunning", again.ErrorId);
    }

    [Fact]
    public async Task CorruptPrimary_AndUnreachableCopy_AreSkipped_WithTheirReasons()
    {
        var corrupt = Path.Combine(directory, "corrupt.qcow2");
        File.WriteAllBytes(corrupt, new byte[1024 * 1024]);
        var good = Path.Combine(directory, "good.qcow2");
        Images.Create(good, "qcow2", "16M");
        var socket = Path.Combine(directory, "fo3.qmp");
        pidFiles.Add(Path.Combine(directory, "fo3.pid"));
        var launcher = new ReplicaVmLauncher(ReplicaSession.Local);
        var request = Request("fo3", socket, corrupt, "nfs://127.0.0.99/images/x.qcow2", good);

        var result = await launcher.StartAsync(await launcher.PlanAsync(new ReplicaVmRequest
        {
            Name = request.Name, Copies = request.Copies, Format = "qcow2", QmpSocket = socket, Machine = "pc,accel=tcg", Paused = true,
            QemuArguments = new[] { "-nodefaults" }, MemoryMB = 32,
        }));

        Assert.Equal(3, result.UsedPreference);
        Assert.StartsWith("Unreadable", result.Copies[0].Reason);
        Assert.Contains("qcow2", result.Copies[0].Reason);
        Assert.StartsWith("Unreachable", result.Copies[1].Reason);
        Assert.Contains("127.0.0.99", result.Copies[1].Reason);
    }

    [Fact]
    public async Task NoUsableCopy_IsAnErrorListingEveryReason_AndStartsNothing()
    {
        var socket = Path.Combine(directory, "fo4.qmp");
        var launcher = new ReplicaVmLauncher(ReplicaSession.Local);

        var plan = await launcher.PlanAsync(Request("fo4", socket, Path.Combine(directory, "a.vdi"), Path.Combine(directory, "b.vdi")));
        var error = await Assert.ThrowsAsync<ReplicaException>(() => launcher.StartAsync(plan));

        Assert.Equal("NoUsableDiskCopy", error.ErrorId);
        Assert.Contains("a.vdi", error.Message);
        Assert.Contains("b.vdi", error.Message);
        Assert.False(File.Exists(socket));
    }

    [Fact]
    public void DomainTemplate_GetsNameMemoryCpusAndTheChosenDisk()
    {
        const string template = """
            <domain type='qemu'><name>template</name><uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809</uuid>
            <memory unit='KiB'>1048576</memory><currentMemory unit='KiB'>1048576</currentMemory><vcpu>4</vcpu>
            <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/old.qcow2'/><target dev='vda' bus='virtio'/>
            <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></disk>
            <disk type='file' device='cdrom'><source file='/x.iso'/><target dev='sda' bus='sata'/></disk></devices></domain>
            """;
        var request = new ReplicaVmRequest { Name = "vm1", Copies = Array.Empty<ImageLocation>(), DomainXml = template, MemoryMB = 256, CpuCount = 2 };

        var (xml, drive) = ReplicaVmLauncher.BuildDomainXml(request, ImageLocation.Parse("nfs://192.0.2.12/images/vm1.vdi"), "vdi");

        Assert.Equal("vda", drive);
        var doc = System.Xml.Linq.XDocument.Parse(xml);
        Assert.Equal("vm1", doc.Root!.Element("name")!.Value);
        Assert.Equal("256", doc.Root.Element("memory")!.Value);
        Assert.Null(doc.Root.Element("currentMemory"));
        Assert.Equal("2", doc.Root.Element("vcpu")!.Value);
        var disk = doc.Root.Element("devices")!.Elements("disk").First();
        Assert.Equal("network", (string?)disk.Attribute("type"));
        Assert.Equal("/images/vm1.vdi", (string?)disk.Element("source")!.Attribute("name"));
        Assert.Equal("192.0.2.12", (string?)disk.Element("source")!.Element("host")!.Attribute("name"));
        Assert.Equal("vdi", (string?)disk.Element("driver")!.Attribute("type"));
        Assert.Equal("0x05", (string?)disk.Element("address")!.Attribute("slot"));
        Assert.Equal("cdrom", (string?)doc.Root.Element("devices")!.Elements("disk").Last().Attribute("device"));
    }

    private ReplicaVmRequest Request(string name, string socket, params string[] copies) => new()
    {
        Name = name,
        Copies = copies.Select(c => ImageLocation.Parse(c, "DiskPath")).ToArray(),
        QmpSocket = socket,
        Machine = "pc,accel=tcg",
        Paused = true,
        MemoryMB = 32,
        QemuArguments = new[] { "-nodefaults" },
    };
}

/// <summary>Start-ReplicaVM with a libvirt template.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtReplicaVmLauncherTests(LibvirtFixture fixture)
{
    [Fact]
    public async Task LibvirtTemplate_StartsFromTheFirstReadableCopy()
    {
        var lab = fixture.Lab;
        var copy = Path.Combine(lab.Directory, Guid.NewGuid().ToString("N")[..6] + "-fo.qcow2");
        Images.Create(copy, "qcow2", "16M");
        var name = lab.UniqueName("fo");
        const string template = """
            <domain type='qemu'><name>x</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
            <os><type arch='x86_64' machine='pc'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/nowhere.qcow2'/><target dev='vda' bus='virtio'/></disk>
            <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>
            """;
        var launcher = new ReplicaVmLauncher(ReplicaSession.Local);
        try
        {
            var result = await launcher.StartAsync(await launcher.PlanAsync(new ReplicaVmRequest
            {
                Name = name, Copies = new[] { ImageLocation.Parse(Path.Combine(lab.Directory, "missing.qcow2")), ImageLocation.Parse(copy) },
                DomainXml = template, Paused = true, Persistent = true, MemoryMB = 48,
            }));

            Assert.Equal(name, result.VMName);
            Assert.Equal("vda", result.Drive);
            Assert.Equal(2, result.UsedPreference);
            Assert.Contains("does not exist", result.Copies[0].Reason);
            var vm = VirtualMachine.Open(ReplicaSession.Local, name, null);
            Assert.Equal(VmRunState.Paused, await vm.GetStateAsync());
            Assert.Equal(copy, (await vm.ResolveDiskAsync(null)).Source);
            Assert.Contains("Persistent:     yes", lab.Virsh("dominfo", name));
        }
        finally
        {
            lab.Destroy(name);
        }
    }

    /// <summary>Regression (issue 7): a pid of 0 reached Start-ReplicaVM's output, and Stop-Process -Id 0 killed the caller's process group.</summary>
    [Theory]
    [InlineData("4242\n", 4242)]
    [InlineData("  77 ", 77)]
    [InlineData("0\n", null)]
    [InlineData("1", null)]
    [InlineData("-5", null)]
    [InlineData("", null)]
    [InlineData("cat: /run/vm.pid: No such file or directory", null)]
    public void ProcessId_FromThePidFile_IsNeverZeroOrAnotherProcessGroupsId(string content, int? expected) =>
        Assert.Equal(expected, ReplicaVmLauncher.ParseProcessId(content));
}
