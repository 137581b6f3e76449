using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Iscsi;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Drbd;

/// <summary>
/// A replicated disk exported over iSCSI: a tgtd per storage host (TgtLab), the target served by mirror-a and on standby
/// on mirror-b, read by a userspace initiator on the client host, switched over to mirror-b, and removed.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class ReplicatedDiskIscsiTests : DrbdLabTest
{
    public ReplicatedDiskIscsiTests(LabFixture fixture)
        : base(fixture, withTgt: true)
    {
        Tool.Require("tgtd", "tgtadm", "iscsi-inq");
    }

    [Fact]
    public async Task IscsiExport_RunsOnThePrimary_StandsByOnTheSecondary_FollowsASwitch_AndIsRemoved()
    {
        const string initiator = "iqn.2024-10.org.replicatools.lab:kvm1";
        var disk = await CreateInSyncAsync(Request(ReplicatedDiskExport.Iscsi) with { InitiatorName = new[] { initiator } });
        Assert.Equal($"iscsi://127.0.0.2:{Text(Lab.TgtA!.Port)}/{Iqn}/1", disk.Uri);
        Assert.Equal(new[] { Iqn }, Lab.TgtA.TargetNames());
        Assert.Empty(Lab.TgtB!.TargetNames());
        var standby = Assert.Single(await new IscsiTargetManager(Lab.SessionB.Host, Lab.TgtB.ConfigDirectory, Lab.TgtB.ControlPort).ListAsync());
        Assert.Equal((IscsiTargetState.Standby, Lab.StandIn), (standby.State, standby.BackingStore));

        // The allowed initiator reads what is on the device; another one is refused.
        Tool.Run("qemu-io", "-f", "raw", "-c", $"write -P 0x6b {3 * MiB} {MiB}", Lab.StandIn);
        await ReadAsync(disk.Uri!, initiator, $"read -P 0x6b {3 * MiB} {MiB}");
        var refused = await Client.RunAsync(new CommandSpec("iscsi-inq", "-i", "iqn.2024-10.org.replicatools.lab:other", disk.Uri!) { ThrowOnFailure = false });
        Assert.NotEqual(0, refused.ExitCode);

        // The switch moves the target: deleted from mirror-a's tgtd (file kept as standby), started on mirror-b's.
        disk = (await Manager.RunAsync(await Manager.PlanSwitchAsync(Both, "r0", "mirror-b", force: false)))!;
        Assert.Equal($"iscsi://127.0.0.3:{Text(Lab.TgtB.Port)}/{Iqn}/1", disk.Uri);
        Assert.Empty(Lab.TgtA.TargetNames());
        Assert.Equal(new[] { Iqn }, Lab.TgtB.TargetNames());
        Assert.Equal(ReplicatedDiskExportState.Standby, disk.Hosts.Single(h => h.NodeName == "mirror-a").ExportState);
        await ReadAsync(disk.Uri!, initiator, $"read -P 0x6b {3 * MiB} {MiB}");

        // A tgtd restart on the old primary does not bring the target back there.
        await Lab.TgtA.RestartAsync();
        Assert.Empty(Lab.TgtA.TargetNames());

        await Manager.RunAsync(await Manager.PlanRemoveAsync(Both, "r0", wipeMetadata: false, force: false), readBack: false);
        Assert.Empty(Lab.TgtB.TargetNames());
        Assert.Empty(FilesIn(Lab.TgtA.ConfigDirectory));
        Assert.Empty(FilesIn(Lab.TgtB.ConfigDirectory));
        Assert.Empty(FilesIn(Lab.Layout(Lab.SessionA).ConfigDirectory));
    }

    private async Task ReadAsync(string uri, string initiator, string command)
    {
        Assert.True(IscsiUri.TryParse(uri, out var host, out var port, out var iqn, out var lun));
        var result = await Client.RunAsync(new CommandSpec("qemu-io", "-c", command, "--image-opts",
            $"driver=raw,file.driver=iscsi,file.transport=tcp,file.portal={host}:{Text(port)},file.target={iqn},file.lun={Text(lun)},file.initiator-name={initiator}"));
        Assert.DoesNotContain("Pattern verification failed", result.StandardOutput);
        Assert.Contains("read ", result.StandardOutput);
    }
}
