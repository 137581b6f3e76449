using ReplicaTools.Core.Clone;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Tests.Clone;

public sealed class CloneUnitTests
{
    [Fact]
    public void CheckpointNames_CarryChainAndGeneration_AndOnlyTheirOwnShapeParses()
    {
        var chain = CloneNames.NewChain();
        var name = CloneNames.Checkpoint(chain, 12);

        Assert.Equal($"rtclone-{chain}-000012", name);
        Assert.True(CloneNames.TryParseCheckpoint(name, out var parsedChain, out var generation));
        Assert.Equal((chain, 12L), (parsedChain, generation));
        Assert.False(CloneNames.TryParseCheckpoint("rtclone-r1234567-backup", out _, out _));
        Assert.False(CloneNames.TryParseCheckpoint("nightly", out _, out _));
        Assert.True(CloneNames.IsCloneObject(CloneNames.Job(CloneNames.NewRunId())));
        Assert.NotEqual(CloneNames.NewRunId(), CloneNames.NewRunId());
    }

    [Fact]
    public void NextGeneration_IsPastTheRecordAndEveryExistingCheckpointOfTheChain()
    {
        // The field report: the destination was restored to generation 1 while the VM already has generation 2.
        Assert.Equal(3, CloneNames.NextGeneration("0123abcd", 1, new[] { "rtclone-0123abcd-000002", "rtclone-99999999-000007", "nightly" }));
        Assert.Equal(2, CloneNames.NextGeneration("0123abcd", 1, new[] { "rtclone-0123abcd-000001" }));
        Assert.Equal(6, CloneNames.NextGeneration("0123abcd", 5, new[] { "rtclone-0123abcd-000003" })); // the VM went back: the record wins
        Assert.Equal(1, CloneNames.NextGeneration("0123abcd", 0, Array.Empty<string>()));
    }

    [Fact]
    public void ChainMismatch_NamesARestoredDestination_AndARestoredVm()
    {
        var destination = new CloneDestination(LocalHost.Instance, "/tmp/x/a.raw");
        DiskCheckpoint At(long generation) => new(VmTarget.Qmp(ReplicaSession.Local, "/run/vm.qmp")) { Drive = "virtio0", Name = CloneNames.Checkpoint("0123abcd", generation) };

        var restored = NbdCloneOperation.ChainMismatch(destination, CloneNames.Checkpoint("0123abcd", 1), new[] { At(2) });
        Assert.Contains("matches checkpoint 'rtclone-0123abcd-000001', older than the VM's newest checkpoint of its chain, 'rtclone-0123abcd-000002'", restored);
        Assert.Contains("restored from an older copy", restored);
        Assert.Contains("/tmp/x/a.raw.rtclone.json", restored);

        var vmWentBack = NbdCloneOperation.ChainMismatch(destination, CloneNames.Checkpoint("0123abcd", 3), new[] { At(2) });
        Assert.Contains("the older 'rtclone-0123abcd-000002'", vmWentBack);

        Assert.Null(NbdCloneOperation.ChainMismatch(destination, CloneNames.Checkpoint("0123abcd", 2), new[] { At(2), At(3) })); // it exists: an incremental from it is sound
        Assert.Null(NbdCloneOperation.ChainMismatch(destination, CloneNames.Checkpoint("0123abcd", 2), Array.Empty<DiskCheckpoint>())); // nothing known: asked elsewhere
    }

    [Fact]
    public void VmKeys_AreStable_AndDifferPerVm()
    {
        var a = new LibvirtVirtualMachine(ReplicaSession.Local, "vm1");
        Assert.Equal(CloneNames.VmKey(a), CloneNames.VmKey(new LibvirtVirtualMachine(ReplicaSession.Local, "vm1")));
        Assert.NotEqual(CloneNames.VmKey(a), CloneNames.VmKey(new LibvirtVirtualMachine(ReplicaSession.Local, "vm2")));
        Assert.NotEqual(CloneNames.VmKey(a), CloneNames.VmKey(new QmpVirtualMachine(ReplicaSession.Local, "/run/vm1.qmp")));
        Assert.Matches("^rtclone-[0-9a-f]{10}-r[0-9a-f]{7}\\.qcow2$", Path.GetFileName(CloneNames.ScratchFile("/var/tmp/", CloneNames.VmKey(a), CloneNames.NewRunId())));
    }

    [Fact]
    public void Sidecar_RoundTrips_AndUnknownFormatsAreIgnored()
    {
        var sidecar = new CloneSidecar
        {
            Chain = "0123abcd",
            Generation = 3,
            Checkpoint = "rtclone-0123abcd-000003",
            Source = new SidecarSource { Host = "kvm1", Backend = "Libvirt", VM = "vm1", Drive = "vda", Image = "/var/lib/libvirt/images/vm1.qcow2", VirtualSize = 1 << 30 },
            File = new SidecarFile { Size = 1 << 30, Inode = 42, ModifiedNs = "1795293835.436034367" },
        };

        var parsed = CloneSidecar.Parse(sidecar.Serialize())!;

        Assert.True(parsed.IsComplete);
        Assert.Equal("rtclone-0123abcd-000003", parsed.Checkpoint);
        Assert.Equal("vm1", parsed.Source.VM);
        Assert.True(new DestinationStat(DestinationKind.File, 1 << 30, 42, "1795293835.436034367").SameFileAs(parsed.File));
        Assert.False(new DestinationStat(DestinationKind.File, 1 << 30, 43, "1795293835.436034367").SameFileAs(parsed.File));
        Assert.False(new DestinationStat(DestinationKind.File, 1 << 30, 42, "1795293835.436034368").SameFileAs(parsed.File));
        Assert.Null(CloneSidecar.Parse("{\"format\":\"something-else/9\"}"));
        Assert.Null(CloneSidecar.Parse("not json"));
    }

    [Fact]
    public void Requests_AreValidated()
    {
        CloneRequest Request(string destination, string scratch = "/var/tmp", int? connections = null) => new()
        {
            VirtualMachine = new LibvirtVirtualMachine(ReplicaSession.Local, "vm1"),
            Destination = destination,
            DestinationSession = ReplicaSession.Local,
            ScratchDirectory = scratch,
            Connections = connections,
        };

        Assert.Contains("absolute", Assert.Throws<ArgumentException>(() => new NbdCloneOperation(Request("clone.raw"))).Message);
        Assert.Contains("directory", Assert.Throws<ArgumentException>(() => new NbdCloneOperation(Request("/srv/clones/"))).Message);
        Assert.Throws<ArgumentException>(() => new NbdCloneOperation(Request("/srv/c.raw", scratch: "tmp")));
        Assert.Throws<ArgumentException>(() => new NbdCloneOperation(Request("/srv/c.raw", connections: 0)));
        _ = new NbdCloneOperation(Request("/srv/c.raw", connections: 4));
    }

    [Fact]
    public void ThePlan_NamesEveryStepAndHost_ForWhatIf()
    {
        var operation = new NbdCloneOperation(new CloneRequest
        {
            VirtualMachine = new LibvirtVirtualMachine(ReplicaSession.Local, "vm1"),
            Drive = "vda",
            Destination = "/srv/clones/vm1 disk.raw",
            DestinationSession = ReplicaSession.Local,
            Incremental = true,
            Verify = true,
        });

        var plan = string.Join('\n', operation.DescribePlan());

        Assert.Contains("[localhost] virsh -q -c qemu:///system backup-begin -- vm1", plan);
        Assert.Contains("qemu:dirty-bitmap:", plan);
        // The promotion is HostFiles.Promote (flush, rename with mv -f -T, flush the directory), the paths quoted as arguments.
        Assert.Contains("mv -f -T -- \"$1\" \"$2\"", plan);
        Assert.Contains("'/srv/clones/vm1 disk.raw.rtclone-partial' '/srv/clones/vm1 disk.raw' overwrite", plan);
        Assert.Contains("virsh -q -c qemu:///system domjobabort -- vm1", plan);
        Assert.Contains("checksum", plan);
    }

    [Fact]
    public async Task ExportAddress_IsLoopback_WhenBothHostsAreLocal_AndExplicitWins()
    {
        Assert.Equal("127.0.0.1", await ExportAddressResolver.ResolveAsync(LocalHost.Instance, LocalHost.Instance, null, CancellationToken.None));
        Assert.Equal("10.1.2.3", await ExportAddressResolver.ResolveAsync(LocalHost.Instance, LocalHost.Instance, " 10.1.2.3 ", CancellationToken.None));
        Assert.Equal("nbd://[fd00::5]:10901/rtclone-r1", new NbdExportAddress("fd00::5", 10901, "rtclone-r1").Uri);
    }
}
