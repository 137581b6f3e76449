using System.Security;
using ReplicaTools.Core;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Tests.Drbd;

public sealed class DrbdParsingTests
{
    // Source of the layout: LINBIT/drbd-utils, user/v9/drbdsetup.c, tag v9.22.0 (the drbd-utils of these hosts):
    // resource_status_json, device_status_json, connection_status_json and peer_device_status_json, with "has-sync-details"
    // true during a resync. The same layout, for a connected UpToDate pair, is in the real output published in
    // https://github.com/ClusterLabs/ha_cluster_exporter/issues/25 (drbdsetup status --json, 2019-10-10). Neither the DRBD 9
    // User's Guide nor drbd-utils' own tests publish status --json output, so the values here are ours: mirror-a is
    // primary during the initial sync of a 64 MiB disk, a quarter of it still out of sync (sizes are KiB).
    private const string PrimaryDuringInitialSync = """
        [
        {
          "name": "r0",
          "node-id": 0,
          "role": "Primary",
          "suspended": false,
          "suspended-user": false,
          "suspended-no-data": false,
          "suspended-fencing": false,
          "suspended-quorum": false,
          "force-io-failures": false,
          "write-ordering": "flush",
          "devices": [
            {
              "volume": 0,
              "minor": 0,
              "disk-state": "UpToDate",
              "client": false,
              "quorum": true,
              "size": 65496,
              "read": 49122,
              "written": 1024,
              "al-writes": 3,
              "bm-writes": 0,
              "upper-pending": 0,
              "lower-pending": 0
            } ],
          "connections": [
            {
              "peer-node-id": 1,
              "name": "mirror-b",
              "connection-state": "Connected", 
              "congested": false,
              "peer-role": "Secondary",
              "ap-in-flight": 0,
              "rs-in-flight": 4096,
              "peer_devices": [
                {
                  "volume": 0,
                  "replication-state": "SyncSource",
                  "peer-disk-state": "Inconsistent",
                  "peer-client": false,
                  "resync-suspended": "no",
                  "received": 0,
                  "sent": 49122,
                  "out-of-sync": 16374,
                  "pending": 0,
                  "unacked": 0,
                  "has-sync-details": true,
                  "has-online-verify-details": false,
                  "percent-in-sync": 75.00,
                  "rs-total": 131000,
                  "rs-dt-start-ms": 2400,
                  "rs-paused-ms": 0,
                  "rs-dt0-ms": 1200,
                  "rs-db0-sectors": 49000,
                  "rs-dt1-ms": 1200,
                  "rs-db1-sectors": 49244,
                  "rs-failed": 0,
                  "rs-same-csum": 0,
                  "want": 102400.00,
                  "db0/dt0 [MiB/s]": 19.94,
                  "db1/dt1 [MiB/s]": 20.04,
                  "estimated-seconds-to-finish": 1,
                  "db/dt [MiB/s]": 19.99,
                  "percent-resync-done": 75.00
                } ]
            } ]
        }
        ]

        """;

    // Same source (v9.22.0 layout), the secondary's view after its primary died: the peer is unknown, no statistics from
    // the kernel for the connection (ap-in-flight left out), the device kept its data.
    private const string SecondaryAfterPeerLost = """
        [
        {
          "name": "r0",
          "node-id": 1,
          "role": "Secondary",
          "suspended": false,
          "suspended-user": false,
          "suspended-no-data": false,
          "suspended-fencing": false,
          "suspended-quorum": false,
          "force-io-failures": false,
          "write-ordering": "flush",
          "devices": [
            {
              "volume": 0,
              "minor": 0,
              "disk-state": "UpToDate",
              "client": false,
              "quorum": true
            } ],
          "connections": [
            {
              "peer-node-id": 0,
              "name": "mirror-a",
              "connection-state": "Connecting", 
              "congested": false,
              "peer-role": "Unknown",
              "peer_devices": [
                {
                  "volume": 0,
                  "replication-state": "Off",
                  "peer-disk-state": "DUnknown",
                  "peer-client": false,
                  "resync-suspended": "no",
                  "received": 0,
                  "sent": 0,
                  "out-of-sync": 0,
                  "pending": 0,
                  "unacked": 0,
                  "has-sync-details": false,
                  "has-online-verify-details": false,
                  "percent-in-sync": 100.00
                } ]
            } ]
        }
        ]

        """;

    // The layout of newer drbd-utils (LINBIT/drbd-utils HEAD b4b2f5b, user/v9/drbdsetup.c connection_status_json): a
    // "tls" flag and a "paths" array per connection; two resources, the second one resyncing without details.
    private const string NewerLayoutTwoResources = """
        [
        {
          "name": "r0",
          "node-id": 1,
          "role": "Secondary",
          "suspended": false,
          "suspended-user": false,
          "suspended-no-data": false,
          "suspended-fencing": false,
          "suspended-quorum": false,
          "force-io-failures": false,
          "write-ordering": "flush",
          "devices": [
            {
              "volume": 0,
              "minor": 0,
              "disk-state": "UpToDate",
              "client": false,
              "quorum": true,
              "size": 1048576,
              "read": 0,
              "written": 0,
              "al-writes": 0,
              "bm-writes": 0,
              "upper-pending": 0,
              "lower-pending": 0
            } ],
          "connections": [
            {
              "peer-node-id": 0,
              "name": "mirror-a",
              "connection-state": "Connected", 
              "congested": false,
              "peer-role": "Primary",
              "tls": false,
              "ap-in-flight": 0,
              "rs-in-flight": 0,
              "paths": [
                {
                  "this_host": {
                    "address": "192.0.2.12",
                    "port": 7788,
                    "family": "ipv4"
                  },
                  "remote_host": {
                    "address": "192.0.2.11",
                    "port": 7788,
                    "family": "ipv4"
                  },
                  "established": true
                } ],
              "peer_devices": [
                {
                  "volume": 0,
                  "replication-state": "Established",
                  "peer-disk-state": "UpToDate",
                  "peer-client": false,
                  "resync-suspended": "no",
                  "received": 1048576,
                  "sent": 0,
                  "out-of-sync": 0,
                  "pending": 0,
                  "unacked": 0,
                  "has-sync-details": false,
                  "has-online-verify-details": false,
                  "percent-in-sync": 100.00
                } ]
            } ]
        }
        ,
        {
          "name": "r1",
          "node-id": 1,
          "role": "Secondary",
          "suspended": false,
          "suspended-user": false,
          "suspended-no-data": false,
          "suspended-fencing": false,
          "suspended-quorum": false,
          "force-io-failures": false,
          "write-ordering": "flush",
          "devices": [
            {
              "volume": 0,
              "minor": 1,
              "disk-state": "Inconsistent",
              "client": false,
              "quorum": true,
              "size": 2048
            } ],
          "connections": [
            {
              "peer-node-id": 0,
              "name": "mirror-a",
              "connection-state": "Connected", 
              "congested": false,
              "peer-role": "Primary",
              "tls": false,
              "paths": [ ],
              "peer_devices": [
                {
                  "volume": 0,
                  "replication-state": "SyncTarget",
                  "peer-disk-state": "UpToDate",
                  "peer-client": false,
                  "resync-suspended": "no",
                  "received": 1024,
                  "sent": 0,
                  "out-of-sync": 1024,
                  "pending": 0,
                  "unacked": 0,
                  "has-sync-details": false,
                  "has-online-verify-details": false,
                  "percent-in-sync": 50.00,
                  "percent-resync-done": 50.00
                } ]
            } ]
        }
        ]

        """;

    [Fact]
    public void Status_OfAPrimaryDuringTheInitialSync_GivesRoleDiskConnectionAndSyncProgress()
    {
        var resource = Assert.Single(DrbdStatusJson.Parse(PrimaryDuringInitialSync));
        Assert.Equal(("r0", 0, "Primary", "UpToDate"), (resource.Name, resource.NodeId, resource.Role, resource.DiskState));
        Assert.Equal(new DrbdDeviceStatus(0, 0, "UpToDate", false, true, 65496), Assert.Single(resource.Devices));
        var peer = resource.Peer!;
        Assert.Equal(("mirror-b", 1, "Connected", "Secondary"), (peer.Name, peer.PeerNodeId, peer.ConnectionState, peer.PeerRole));
        var volume = peer.Volume0!;
        Assert.Equal("SyncSource", volume.ReplicationState);
        Assert.Equal("Inconsistent", volume.PeerDiskState);
        Assert.Equal(16374, volume.OutOfSyncKiB);
        Assert.Equal(75.0, volume.PercentInSync);
        Assert.Equal(75.0, volume.PercentResyncDone);
        Assert.Equal(1, volume.EstimatedSecondsToFinish);
        Assert.True(volume.IsResyncing);
    }

    [Fact]
    public void Status_OfASecondaryWhosePeerDied_SaysConnectingAndUnknownPeer()
    {
        var resource = Assert.Single(DrbdStatusJson.Parse(SecondaryAfterPeerLost));
        Assert.Equal(("Secondary", "UpToDate"), (resource.Role, resource.DiskState));
        Assert.Null(resource.Devices[0].SizeKiB);
        Assert.Equal(("Connecting", "Unknown", "Off", "DUnknown"), (resource.Peer!.ConnectionState, resource.Peer.PeerRole, resource.Peer.Volume0!.ReplicationState, resource.Peer.Volume0.PeerDiskState));
        Assert.False(resource.Peer.Volume0.IsResyncing);
        Assert.Null(resource.Peer.Volume0.PercentResyncDone);
    }

    [Fact]
    public void Status_InTheNewerLayout_WithTlsPathsAndTwoResources_IsRead()
    {
        var resources = DrbdStatusJson.Parse(NewerLayoutTwoResources);
        Assert.Equal(new[] { "r0", "r1" }, resources.Select(r => r.Name));
        Assert.Equal("Established", resources[0].Peer!.Volume0!.ReplicationState);
        Assert.Equal(("Inconsistent", "SyncTarget", 50.0, 1024L), (resources[1].DiskState, resources[1].Peer!.Volume0!.ReplicationState, resources[1].Peer!.Volume0!.PercentResyncDone!.Value, resources[1].Peer!.Volume0!.OutOfSyncKiB));
        Assert.Empty(DrbdStatusJson.Parse("[\n]\n"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("{\"name\": \"r0\"}")]
    [InlineData("[{\"role\": \"Primary\"}]")]
    public void Status_ThatIsNotDrbdsetupJson_IsRejected(string text) => Assert.ThrowsAny<System.Text.Json.JsonException>(() => DrbdStatusJson.Parse(text));

    [Fact]
    public void MetadataDump_IsRead_AndNoMetadataIsNull()
    {
        // drbdmeta 9.22 dump-md of a fresh 64 MiB internal metadata (captured on this machine), peers after the first left out.
        const string dump = """
            # DRBD meta data dump
            # 2026-11-30 06:16:51 +0000 [1796019411]
            # vm> drbdmeta 7 v09 /dev/loop0 internal dump-md
            #

            version "v09";

            max-peers 1;
            # md_size_sect 80
            # md_offset 67104768
            # al_offset 67072000
            # bm_offset 67067904

            node-id -1;
            current-uuid 0x0000000000000004;
            flags 0x00000080;
            peer[0] {
                bitmap-index -1;
                bitmap-uuid 0x0000000000000000;
                bitmap-dagtag 0x0000000000000000;
                flags 0x00000000;
            }
            la-size-sect 0;
            bm-byte-per-bit 4096;
            device-uuid 0x0000000000000000;
            """;
        var parsed = DrbdMetadata.ParseDump(dump)!;
        Assert.Equal(new DrbdMetadataDump("v09", 1, -1, "0x0000000000000004", 67067904, 80), parsed);
        Assert.Null(DrbdMetadata.ParseDump(string.Empty));
        Assert.Null(DrbdMetadata.ParseDump("No valid meta data found\n"));
    }

    [Theory]
    [InlineData(64L << 20, 40960)]
    [InlineData(1L << 30, 69632)]
    [InlineData(1000000000, 72192)]
    [InlineData(1L << 40, 33591296)]
    public void InternalMetadata_TakesWhatDrbdmetaLeaves(long disk, long metadata)
    {
        // Expected values: bm_offset of drbdmeta 9.22 create-md (1 peer) on sparse files of these sizes, measured here.
        Assert.Equal(metadata, DrbdMetadata.InternalMetadataBytes(disk));
        Assert.Equal(disk - metadata, DrbdMetadata.UsableBytes(disk));
    }

    [Fact]
    public void ResourceFile_HasEveryStatementDrbdNeeds_AndReadsBack_WithoutTheSecretInItsModel()
    {
        var config = SampleConfig();
        var text = config.Render("s3cr3t-Value");
        Assert.StartsWith(DrbdResourceConfig.Header + "\n# replicatools: {", text);
        Assert.Contains("resource r0 {\n    options {\n        auto-promote no;\n    }\n    net {\n        protocol C;\n        cram-hmac-alg sha256;\n        shared-secret \"s3cr3t-Value\";\n    }\n", text);
        Assert.Contains("    startup {\n        wfc-timeout 15;\n        degr-wfc-timeout 60;\n    }\n", text);
        Assert.Contains("    on mirror-b {\n        node-id 1;\n        device /dev/drbd3;\n        disk \"/dev/vdb\";\n        address ipv4 192.0.2.12:7790;\n        meta-disk internal;\n    }\n", text);
        Assert.Equal(1, text.Split("s3cr3t-Value").Length - 1);

        var parsed = DrbdResourceConfig.Parse(text)!;
        Assert.Empty(parsed.Differences(config));
        Assert.Equal(config.Render("x"), parsed.Render("x"));
        Assert.Null(DrbdResourceConfig.Parse("resource r0 { }\n"));

        var changed = config with { Port = 7791, Export = new DrbdExportConfig(ReplicatedDiskExport.Iscsi, Iqn: "iqn.2024-10.com.example:r0") };
        Assert.Equal(new[] { "port 7791 instead of 7790", "export iSCSI iqn.2024-10.com.example:r0 LUN 1 instead of NBD 'r0' on port 10809" }, config.Differences(changed));
    }

    [Fact]
    public void Scrub_RemovesTheSecretFromDrbdsetupArgumentsAndResourceText()
    {
        Assert.Equal("drbdsetup new-peer r0 1 --_name=mirror-b --shared-secret=******** --cram-hmac-alg=sha256",
            DrbdCommands.Scrub("drbdsetup new-peer r0 1 --_name=mirror-b --shared-secret=hunter2 --cram-hmac-alg=sha256"));
        Assert.Equal("net { shared-secret \"********\"; }", DrbdCommands.Scrub("net { shared-secret \"hunter2\"; }"));
        Assert.Equal("shared-secret \"********\";", DrbdCommands.Scrub("shared-secret    hunter2;"));
    }

    [Fact]
    public void DumpOfAnotherResource_GivesThisNodesMinorDiskAndAddress()
    {
        // drbdadm 9.22 dump (captured here) of another resource, from mirror-a's point of view.
        const string dump = """
            resource r9 {
                on mirror-a {
                    node-id 0;
                    device           /dev/drbd9 minor 9;
                    disk             /dev/loop1;
                    meta-disk        internal;
                    address          ipv4 127.0.0.2:7799;
                }
                on mirror-b {
                    node-id 1;
                    device           /dev/drbd9 minor 9;
                    disk             /dev/loop5;
                    meta-disk        internal;
                    address          ipv4 127.0.0.3:7799;
                }
            }
            """;
        Assert.Equal((9, "/dev/loop1", "127.0.0.2", 7799), DrbdCommands.ParseDumpForNode(dump, "mirror-a"));
        Assert.Equal((9, "/dev/loop5", "127.0.0.3", 7799), DrbdCommands.ParseDumpForNode(dump, "mirror-b"));
        Assert.Null(DrbdCommands.ParseDumpForNode(dump, "mirror-c"));
    }

    [Theory]
    [InlineData("r0; rm -rf /")]
    [InlineData("r0$(reboot)")]
    [InlineData("r 0")]
    [InlineData("-r0")]
    [InlineData("")]
    public void NamesWithShellOrDrbdSyntax_AreRefused(string name)
    {
        var error = Assert.Throws<ReplicaException>(() => Request(name: name).Validate());
        Assert.Equal("DrbdInvalidArgument", error.ErrorId);
        Assert.Contains("-Name", error.Message);
    }

    [Theory]
    [InlineData("", "-SharedSecret is empty")]
    [InlineData("0123456789012345678901234567890123456789012345678901234567890123", "64 characters long; DRBD takes at most 63")]
    [InlineData("with\"quote", "printable ASCII")]
    [InlineData("with space", "printable ASCII")]
    public void BadSecrets_AreRefused_WithoutShowingThem(string secret, string expected)
    {
        var error = Assert.Throws<ReplicaException>(() => Request(secret: secret).Validate());
        Assert.Equal("DrbdInvalidArgument", error.ErrorId);
        Assert.Contains(expected, error.Message);
        if (secret.Length > 3)
        {
            Assert.DoesNotContain(secret, error.Message);
        }
    }

    [Fact]
    public void TheSameSessionTwice_IsDrbdSameHost()
    {
        var error = Assert.Throws<ReplicaException>(() => Request(same: true).Validate());
        Assert.Equal("DrbdSameHost", error.ErrorId);
        Assert.Equal(ReplicaErrorCategory.InvalidArgument, error.Category);
    }

    [Fact]
    public void KernelSteps_AreTheDrbdadmVerbsThatNeedTheModule()
    {
        Assert.True(DrbdCommands.IsKernelStep(DrbdCommands.Drbdadm("/etc/drbd.d/r0.res", "up", "r0")));
        Assert.True(DrbdCommands.IsKernelStep(DrbdCommands.Drbdadm("/etc/drbd.d/r0.res", "primary", "r0", "--force")));
        Assert.False(DrbdCommands.IsKernelStep(DrbdCommands.Drbdadm("/etc/drbd.d/r0.res", "create-md", "r0")));
        Assert.Equal(("primary", "r0", true), DrbdCommands.DescribeKernelStep(DrbdCommands.Drbdadm("/etc/drbd.d/r0.res", "primary", "r0", "--force")));
        Assert.Equal(new[] { "drbdsetup new-peer r0 1 --shared-secret=********" },
            DrbdCommands.DryRunLines("/dev/stdin: in resource r0, on mirror-a:\n\tIP 127.0.0.2 not found on this host.\ndrbdsetup new-peer r0 1 --shared-secret=x1\n"));
        Assert.Equal("********", PlannedCommand.Redacted);
    }

    internal static DrbdResourceConfig SampleConfig() => new()
    {
        Name = "r0",
        Minor = 3,
        Port = 7790,
        WaitForConnectionSeconds = 15,
        DegradedWaitSeconds = 60,
        Nodes = new[]
        {
            new DrbdNodeConfig("mirror-a", 0, "/dev/vdb", "192.0.2.11", "0.0.0.0"),
            new DrbdNodeConfig("mirror-b", 1, "/dev/vdb", "192.0.2.12", "0.0.0.0"),
        },
        Export = new DrbdExportConfig(ReplicatedDiskExport.Nbd, "r0", 10809),
    };

    private static ReplicatedDiskRequest Request(string name = "r0", string secret = "good-secret", bool same = false)
    {
        // Sessions outside the registry: nothing connects, and Get-ReplicaSession tests never see them.
        static ReplicaSession Session(int id, string address)
        {
            var options = new SshConnectionOptions { HostName = address };
            return new ReplicaSession(-id, address, new SshHost(options), options, isImplicit: true);
        }

        var a = Session(1, "192.0.2.11");
        var b = same ? a : Session(2, "192.0.2.12");
        var secure = new SecureString();
        foreach (var c in secret)
        {
            secure.AppendChar(c);
        }

        return new ReplicatedDiskRequest { Name = name, Primary = a, Secondary = b, PrimaryDisk = "/dev/vdb", SecondaryDisk = "/dev/vdb", SharedSecret = secure };
    }
}
