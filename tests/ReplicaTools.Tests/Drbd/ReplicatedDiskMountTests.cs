using ReplicaTools.Core;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Drbd;

/// <summary>
/// The VM team's side: the generated &lt;disk type='network'&gt; element attached live to a running libvirt domain (TCG, no
/// guest OS), whose QEMU then reads the replicated disk's data through the export (qemu-io on the attached drive, over
/// HMP), before and after a switch of the storage pair.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class ReplicatedDiskMountTests : DrbdLabTest
{
    public ReplicatedDiskMountTests(LabFixture fixture)
        : base(fixture)
    {
        Tool.Require("virsh", "virt-xml-validate");
    }

    [Fact]
    public async Task TheDiskElement_AttachedToARunningDomain_ReadsTheReplicatedData_ThroughItsExport()
    {
        var disk = await CreateInSyncAsync(Request());
        Tool.Run("qemu-io", "-f", "raw", "-c", $"write -P 0x5d {MiB} {MiB}", Lab.StandIn);

        await using var libvirt = await LibvirtLab.StartAsync();
        libvirt.PciHotplug = true;
        var os = Path.Combine(libvirt.Directory, "os.qcow2");
        Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", os, "16M");
        var name = libvirt.CreateDomain(libvirt.UniqueName("mount"), persistent: false, (os, "qcow2"));
        var vm = VmTarget.Libvirt(ReplicaSession.Local, name, libvirt.ConnectionUri).Open();

        var plan = await NetworkDiskAttacher.PlanAsync(vm, disk.Uri!, LibvirtDiskBus.Virtio, targetDev: null, initiatorName: null, persistent: false);
        Assert.Equal("vdb", plan.Disk.TargetDev);
        Assert.Equal(
            $"<disk type=\"network\" device=\"disk\">\n  <driver name=\"qemu\" type=\"raw\" cache=\"none\" />\n  <source protocol=\"nbd\" name=\"r0\">\n    <host name=\"127.0.0.2\" port=\"{Text(NbdPort)}\" />\n  </source>\n  <target dev=\"vdb\" bus=\"virtio\" />\n</disk>",
            plan.Disk.Xml.ReplaceLineEndings("\n"));
        Assert.Contains("attach-device --domain " + name + " --file /dev/stdin --live <<< <disk type=\"network\"", plan.Describe());
        var attached = await NetworkDiskAttacher.AttachAsync(plan);
        Assert.Equal((name, "vdb", "nbd"), (attached.VMName, attached.Drive, attached.Protocol));
        Assert.Equal(disk.Uri, (await vm.GetDisksAsync()).Single(d => d.Drive == "vdb").Source);

        // The VM's QEMU reads the replicated disk through the export.
        var read = ReadInGuest(libvirt, name, 1, $"read -P 0x5d {MiB} {MiB}");
        Assert.Contains($"read 1048576/1048576 bytes at offset {Text(MiB)}", read);
        Assert.DoesNotContain("Pattern verification failed", read);
        Assert.Contains("Pattern verification failed", ReadInGuest(libvirt, name, 1, $"read -P 0x5e {MiB} 512"));

        // Attached already: planning again finds it and changes nothing.
        var again = await NetworkDiskAttacher.PlanAsync(vm, disk.Uri!, LibvirtDiskBus.Virtio, null, null, persistent: false);
        Assert.Null(again.Step);
        Assert.Equal("vdb", again.Disk.TargetDev);

        // A taken target name is refused before anything runs.
        var taken = await Assert.ThrowsAsync<ReplicaException>(() => NetworkDiskAttacher.PlanAsync(vm, $"nbd://127.0.0.3:{Text(NbdPort)}/r0", LibvirtDiskBus.Virtio, "vda", null, persistent: false));
        Assert.Equal("TargetDevInUse", taken.ErrorId);

        // After a switch, the export moves to mirror-b: the element for the new Uri attaches as the next drive and reads the same data.
        disk = (await Manager.RunAsync(await Manager.PlanSwitchAsync(Both, "r0", "mirror-b", force: false)))!;
        var second = await NetworkDiskAttacher.AttachAsync(await NetworkDiskAttacher.PlanAsync(vm, disk.Uri!, LibvirtDiskBus.Virtio, null, null, persistent: false));
        Assert.Equal("vdc", second.Drive);
        read = ReadInGuest(libvirt, name, 2, $"read -P 0x5d {MiB} {MiB}");
        Assert.Contains("read 1048576/1048576", read);
        Assert.DoesNotContain("Pattern verification failed", read);
    }

    [Fact]
    public async Task DiskElements_ForNbdAndIscsi_PassLibvirtsSchema_AndTakeTheNextFreeName()
    {
        var nbd = LibvirtDiskXmlBuilder.FromUri("nbd://mirror-a:10809/r0", LibvirtDiskBus.Virtio, usedTargetDevs: new[] { "vda", "vdb" });
        Assert.Equal(("nbd", "mirror-a", 10809, "r0", "vdc"), (nbd.Protocol, nbd.ExportHost, nbd.Port, nbd.SourceName, nbd.TargetDev));
        var iscsi = LibvirtDiskXmlBuilder.FromUri("iscsi://192.0.2.11:3260/iqn.2023-10.world.srv:dlp.target01/1", LibvirtDiskBus.Sata, initiatorName: "iqn.2023-10.world.srv:node01.initiator01");
        Assert.Equal(("iscsi", "iqn.2023-10.world.srv:dlp.target01/1", "sda"), (iscsi.Protocol, iscsi.SourceName, iscsi.TargetDev));
        Assert.Contains("<initiator>\n      <iqn name=\"iqn.2023-10.world.srv:node01.initiator01\" />\n    </initiator>", iscsi.Xml.ReplaceLineEndings("\n"));
        Assert.Null(await LibvirtDiskXmlBuilder.ValidateAsync(LocalHost.Instance, nbd));
        Assert.Null(await LibvirtDiskXmlBuilder.ValidateAsync(LocalHost.Instance, iscsi));
        Assert.Null(await LibvirtDiskXmlBuilder.ValidateAsync(LocalHost.Instance, LibvirtDiskXmlBuilder.FromUri("nbd://[fd00::2]/r0", LibvirtDiskBus.Scsi, "sdab")));

        var broken = new LibvirtDiskXml { Protocol = "nbd", ExportHost = "h", SourceName = "r0", TargetDev = "vda", Uri = "nbd://h/r0", Xml = nbd.Xml.Replace("bus=\"virtio\"", "bus=\"floppy-tape\"", StringComparison.Ordinal) };
        Assert.Contains("fails to validate", await LibvirtDiskXmlBuilder.ValidateAsync(LocalHost.Instance, broken));

        Assert.Equal("vdaa", LibvirtDiskXmlBuilder.NextTargetDev(LibvirtDiskBus.Virtio, Enumerable.Range(0, 26).Select(i => "vd" + (char)('a' + i))));
        Assert.Throws<ArgumentException>(() => LibvirtDiskXmlBuilder.FromUri("nfs://server/export/disk", LibvirtDiskBus.Virtio));
        Assert.Throws<ArgumentException>(() => LibvirtDiskXmlBuilder.FromUri("nbd://h/r0", LibvirtDiskBus.Sata, "vdb"));
        Assert.Throws<ArgumentException>(() => LibvirtDiskXmlBuilder.FromUri("nbd://h/r0", LibvirtDiskBus.Virtio, initiatorName: "iqn.2024-10.com.example:kvm1"));
    }

    /// <summary>
    /// qemu-io on the drive's block backend inside the VM's QEMU (HMP), as the guest would read it. HMP's qemu-io prints to
    /// QEMU's standard output, which libvirt keeps in the domain's log: returns what the command added there.
    /// </summary>
    private static string ReadInGuest(LibvirtLab libvirt, string domain, int index, string command)
    {
        var log = $"/var/log/libvirt/qemu/{domain}.log";
        var before = new FileInfo(log).Length;
        var error = libvirt.Virsh("qemu-monitor-command", domain, "--hmp", $"qemu-io -d /machine/peripheral/virtio-disk{index}/virtio-backend \"{command}\"");
        Assert.True(string.IsNullOrWhiteSpace(error), error);
        for (var i = 0; i < 50 && new FileInfo(log).Length == before; i++)
        {
            Thread.Sleep(20);
        }

        using var stream = new FileStream(log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        stream.Position = before;
        return new StreamReader(stream).ReadToEnd();
    }
}
