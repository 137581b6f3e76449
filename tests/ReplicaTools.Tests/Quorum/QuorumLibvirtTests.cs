using System.Security;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Quorum;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;
using static ReplicaTools.Tests.Quorum.QuorumLab;

namespace ReplicaTools.Tests.Quorum;

/// <summary>
/// Quorum disks on libvirt domains (qemu:///system): attached through libvirt's QMP passthrough with events recorded by
/// virsh qemu-monitor-event, compared and repaired while the domain runs (the switch pauses it through virsh), and the
/// -NoAttach snippet in a domain's XML.
/// </summary>
public sealed class QuorumLibvirtTests : IAsyncLifetime
{
    private LibvirtLab lab = null!;
    private string state = null!;

    public async Task InitializeAsync()
    {
        lab = await LibvirtLab.StartAsync();
        state = Path.Combine(lab.Directory, "state");
    }

    public async Task DisposeAsync() => await lab.DisposeAsync();

    /// <summary>Raw images QEMU (the libvirt-qemu user) may open: libvirt does not chown replicas it does not know.</summary>
    private string[] Replicas(string stem)
    {
        var paths = Enumerable.Range(1, 3).Select(i => Path.Combine(lab.Directory, $"{stem}{i}.raw")).ToArray();
        foreach (var path in paths)
        {
            Images.Create(path, "raw", "32M");
            File.SetUnixFileMode(path, (UnixFileMode)0b110_110_110);
        }

        return paths;
    }

    private void Hmp(string domain, string command)
    {
        var output = lab.Virsh("qemu-monitor-command", domain, "--hmp", command);
        Assert.True(string.IsNullOrWhiteSpace(output), output);
    }

    [Fact]
    public async Task ARunningDomain_GetsAQuorumDisk_ItsEventsAreRecorded_AndABadReplicaIsRepairedWhileItRuns()
    {
        lab.PciHotplug = true;
        var domain = lab.CreateDomain(lab.UniqueName("quorum"), persistent: false);
        lab.Virsh("resume", domain);
        var replicas = Replicas(domain);
        var manager = new QuorumDiskManager(VirtualMachine.Open(ReplicaSession.Local, domain, null, LibvirtLab.Uri)) { StateDirectory = state };

        var plan = await manager.PlanAttachAsync(QuorumLab.Request(replicas, size: null), null);
        Assert.Contains(plan.Steps, s => s.Text.Contains("qemu-monitor-command") && s.Text.Contains("blockdev-add"));
        Assert.Contains(plan.Steps, s => s.Text.Contains("rt-quorum-recorder libvirt"));
        var disk = await manager.AttachAsync(plan, null);
        Assert.Equal(QuorumDiskState.Healthy, disk.State);
        Assert.Equal(domain, disk.VMName);
        Assert.Contains("recorder file", disk.EventSource);

        Hmp(domain, "qemu-io -d quorum0/virtio-backend \"write -P 0x6e 0 4M\"");
        Corrupt(replicas[2], 3 * MiB + 5, new byte[] { 0x99 });
        Hmp(domain, "qemu-io -d quorum0/virtio-backend \"read 0 4M\"");
        var reported = await WaitForAsync(async () => (await manager.GetAsync(null, probe: true)).Single(), d => d.Replicas[2].Health == QuorumReplicaHealth.Corrupt);
        Assert.Equal(QuorumReplicaHealth.Corrupt, reported.Replicas[2].Health);
        Assert.Equal("recorder", reported.Replicas[2].LastReport!.Source);

        var test = await manager.TestAsync(null);
        Assert.Equal(new[] { true, true, false }, test.Replicas.Select(r => r.InMajority));
        Assert.Equal(3 * MiB + 5, test.Replicas[2].FirstDifference);

        var repair = await manager.PlanRepairAsync(null, reported.Replicas[2].NodeName, null, null);
        Assert.True(repair.PausesVm);
        Assert.Contains(repair.Steps, s => s.Text.Contains("virsh -q -c qemu:///system suspend"));
        Assert.Contains(repair.Steps, s => s.Text.Contains("virsh -q -c qemu:///system resume"));
        await manager.RepairAsync(repair);

        Assert.Equal("running", lab.Virsh("domstate", domain).Trim());
        Assert.True(Images.Compare(replicas[0], "raw", replicas[2], "raw").Identical);
        Assert.True(Images.Compare(replicas[1], "raw", replicas[2], "raw").Identical);
        Assert.Equal(QuorumDiskState.Healthy, (await manager.GetAsync(null, probe: true)).Single().State);
    }

    [Fact]
    public async Task TheLibvirtSnippet_StartsADomainWithTheQuorumDisk_AndGetQuorumDiskFindsIt()
    {
        var replicas = Replicas("snip");
        var definition = (await new QuorumDiskBuilder(ReplicaSession.Local).PlanAsync(QuorumLab.Request(replicas, size: null) with { Drive = "data" })).Definition;
        var name = lab.UniqueName("snippet");
        var xml = $"<domain type='qemu' xmlns:qemu='{QuorumDefinition.LibvirtQemuNamespace}'><name>{SecurityElement.Escape(name)}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>" +
                  "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>" +
                  "<controller type='usb' model='none'/><memballoon model='none'/></devices>" + definition.LibvirtXml + "</domain>";
        var file = Path.Combine(lab.Directory, name + ".xml");
        File.WriteAllText(file, xml);
        try
        {
            lab.Virsh("create", file, "--paused");
            var dumped = lab.Virsh("dumpxml", name);
            Assert.Contains("qemu:commandline", dumped);

            var manager = new QuorumDiskManager(VirtualMachine.Open(ReplicaSession.Local, name, null, LibvirtLab.Uri)) { StateDirectory = state };
            var disk = (await manager.GetAsync(null, probe: true)).Single();
            Assert.Equal("data", disk.Drive);
            Assert.Equal(QuorumDiskState.Healthy, disk.State);
            Assert.Equal(new[] { "children.0", "children.1", "children.2" }, disk.Replicas.Select(r => r.Child));
            Assert.StartsWith("none", disk.EventSource);
        }
        finally
        {
            lab.Destroy(name);
        }
    }
}
