using ReplicaTools.Core;
using ReplicaTools.Core.Iscsi;

namespace ReplicaTools.Tests.Iscsi;

public sealed class IscsiParsingTests
{
    // Captured from tgt 1.0.85 (Debian 12): two targets, one with a logged-in initiator and an allow list of an
    // address range and an initiator name, one without LUNs or ACL.
    private const string TgtadmShowTargets = """
        Target 1: iqn.2024-10.com.example:r0
            System information:
                Driver: iscsi
                State: ready
            I_T nexus information:
                I_T nexus: 1
                    Initiator: iqn.2024-10.com.example:kvm1 alias: none
                    Connection: 0
                        IP Address: 127.0.0.1
            LUN information:
                LUN: 0
                    Type: controller
                    SCSI ID: IET     00010000
                    SCSI SN: beaf10
                    Size: 0 MB, Block size: 1
                    Online: Yes
                    Removable media: No
                    Prevent removal: No
                    Readonly: No
                    SWP: No
                    Thin-provisioning: No
                    Backing store type: null
                    Backing store path: None
                    Backing store flags: 
                LUN: 1
                    Type: disk
                    SCSI ID: IET     00010001
                    SCSI SN: beaf11
                    Size: 17 MB, Block size: 512
                    Online: Yes
                    Removable media: No
                    Prevent removal: No
                    Readonly: No
                    SWP: No
                    Thin-provisioning: No
                    Backing store type: rdwr
                    Backing store path: /tmp/drbdx/t.img
                    Backing store flags: 
            Account information:
            ACL information:
                127.0.0.0/8
                iqn.2024-10.com.example:kvm1
        Target 2: iqn.2024-10.com.example:empty
            System information:
                Driver: iscsi
                State: ready
            I_T nexus information:
            LUN information:
                LUN: 0
                    Type: controller
                    Backing store path: None
            Account information:
            ACL information:

        """;

    [Fact]
    public void TgtadmTargets_AreParsed_WithTheirDataLunsAclAndLoggedInInitiators()
    {
        var targets = TgtadmShow.ParseTargets(TgtadmShowTargets);
        Assert.Equal(2, targets.Count);
        var r0 = targets[0];
        Assert.Equal(1, r0.Tid);
        Assert.Equal("iqn.2024-10.com.example:r0", r0.Iqn);
        Assert.Equal("ready", r0.State);
        Assert.Equal(new TgtLun(1, "/tmp/drbdx/t.img"), Assert.Single(r0.Luns));
        Assert.Equal(new[] { "127.0.0.0/8", "iqn.2024-10.com.example:kvm1" }, r0.Acl);
        Assert.Equal(new[] { "iqn.2024-10.com.example:kvm1" }, r0.ConnectedInitiators);
        Assert.Equal(2, targets[1].Tid);
        Assert.Empty(targets[1].Luns);
        Assert.Empty(targets[1].Acl);
        Assert.Empty(targets[1].ConnectedInitiators);
    }

    [Fact]
    public void Portals_AreParsed_IPv4AndBracketedIPv6()
    {
        var portals = TgtadmShow.ParsePortals("Portal: 0.0.0.0:3260,1\nPortal: [::]:3260,1\nPortal: 127.0.0.5:3262,1\n");
        Assert.Equal(new[] { ("0.0.0.0", 3260), ("::", 3260), ("127.0.0.5", 3262) }, portals);
    }

    [Fact]
    public void ConfigFile_RoundTrips_AndForeignFilesAreNotRead()
    {
        var request = new IscsiTargetRequest
        {
            Iqn = "iqn.2024-10.com.example:r0",
            BackingStore = "/dev/drbd0",
            Lun = 3,
            InitiatorName = new[] { "iqn.2024-10.com.example:kvm1", "iqn.2024-10.com.example:kvm2" },
            InitiatorAddress = new[] { "192.0.2.0/24" },
        };
        var text = TgtConfig.Build(request);
        Assert.Contains("<target iqn.2024-10.com.example:r0>\n    <backing-store /dev/drbd0>\n        lun 3\n    </backing-store>\n", text);
        var parsed = TgtConfig.Parse(text)!;
        Assert.Equal(request.Iqn, parsed.Iqn);
        Assert.Equal(request.BackingStore, parsed.BackingStore);
        Assert.Equal(3, parsed.Lun);
        Assert.Equal(request.InitiatorName, parsed.InitiatorName);
        Assert.Equal(request.InitiatorAddress, parsed.InitiatorAddress);
        Assert.Null(TgtConfig.Parse("<target iqn.2024-10.com.example:r0>\n    backing-store /dev/sdb\n</target>\n"));
        Assert.Equal("iqn.2024-10.com.example_r0.conf", IscsiTargetRequest.ConfigFileName(request.Iqn));
    }

    [Theory]
    [InlineData("iscsi://127.0.0.2:3261/iqn.2024-10.com.example:r0/1", "127.0.0.2", 3261, "iqn.2024-10.com.example:r0", 1)]
    [InlineData("iscsi://storage1/iqn.2024-10.com.example:r0/7", "storage1", 3260, "iqn.2024-10.com.example:r0", 7)]
    [InlineData("iscsi://[fd00::2]:3260/iqn.2024-10.com.example:r0/1", "fd00::2", 3260, "iqn.2024-10.com.example:r0", 1)]
    public void IscsiUris_RoundTrip(string uri, string host, int port, string iqn, int lun)
    {
        Assert.True(IscsiUri.TryParse(uri, out var h, out var p, out var i, out var l));
        Assert.Equal((host, port, iqn, lun), (h, p, i, l));
        Assert.True(IscsiUri.TryParse(IscsiUri.Build(h, p, i, l), out var h2, out var p2, out var i2, out var l2));
        Assert.Equal((h, p, i, l), (h2, p2, i2, l2));
    }

    [Theory]
    [InlineData("nbd://127.0.0.1:10809/r0")]
    [InlineData("iscsi://host/iqn.2024-10.com.example:r0")]
    [InlineData("iscsi://host/iqn.2024-10.com.example:r0/x")]
    public void NonIscsiUris_AreRejected(string uri) => Assert.False(IscsiUri.TryParse(uri, out _, out _, out _, out _));

    [Theory]
    [InlineData("iqn.2024-10.com.example:r0", true)]
    [InlineData("iqn.2023-10.world.srv:dlp.target01", true)]
    [InlineData("eui.02004567A425678D", true)]
    [InlineData("iqn.2024-13.com.example:r0", false)]
    [InlineData("iqn.2024-10.com.example:r0 extra", false)]
    [InlineData("iqn.2024-10.com.example:$(reboot)", false)]
    [InlineData("IQN.2024-10.com.example:r0", false)]
    [InlineData("", false)]
    public void IscsiNames_AreChecked(string name, bool valid)
    {
        var exception = Record.Exception(() => IscsiTargetRequest.ValidateIqn("host1", "-Iqn", name));
        Assert.Equal(valid, exception is null);
        if (!valid)
        {
            Assert.Equal("IscsiTargetInvalidArgument", Assert.IsType<ReplicaException>(exception).ErrorId);
        }
    }
}
