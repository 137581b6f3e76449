using ReplicaTools.Core.Storage;

namespace ReplicaTools.Tests.Storage;

public sealed class StorageParsingTests
{
    [Fact]
    public void NfsUrl_SplitsServerExportDirectoryAndFile_LikeQemu()
    {
        var location = ImageLocation.Parse("nfs://127.0.0.2/images/sub/vm1.vdi");
        Assert.True(location.IsNfsUrl);
        Assert.Equal("127.0.0.2", location.NfsServer);
        Assert.Equal("/images/sub", location.NfsDirectory);
        Assert.Equal("vm1.vdi", location.FileName);
        Assert.Null(location.Directory);
    }

    [Theory]
    [InlineData("relative/vm1.vdi", "absolute path")]
    [InlineData("nfs://server/vm1.vdi", "export directory and a file name")]
    [InlineData("nfs://server/images/", "export directory and a file name")]
    [InlineData("iscsi://server/iqn/0", "nfs://server/export/file")]
    [InlineData("/srv/images/", "directory")]
    [InlineData("", "empty")]
    public void BadLocations_AreRefusedWithAReason(string text, string reason)
    {
        var error = Assert.Throws<ArgumentException>(() => ImageLocation.Parse(text, "Path"));
        Assert.Contains(reason, error.Message);
    }

    [Fact]
    public void LocalPath_HasItsDirectory()
    {
        var location = ImageLocation.Parse("/srv/vdis/vm 1.vdi");
        Assert.False(location.IsNfsUrl);
        Assert.Equal("/srv/vdis", location.Directory);
        Assert.Equal("vm 1.vdi", location.FileName);
    }

    [Fact]
    public void QemuImgInfo_ReadsSizesBackingAndBitmapsWithFlags()
    {
        const string json = """
            {
                "backing-filename-format": "qcow2",
                "virtual-size": 67108864,
                "filename": "l.qcow2",
                "cluster-size": 65536,
                "format": "qcow2",
                "actual-size": 208896,
                "backing-filename": "base.qcow2",
                "format-specific": {
                    "type": "qcow2",
                    "data": {
                        "compat": "1.1",
                        "bitmaps": [
                            { "flags": [ "in-use", "auto" ], "name": "bm0", "granularity": 65536 },
                            { "flags": [ "inconsistent" ], "name": "old", "granularity": 1048576 }
                        ],
                        "corrupt": false
                    }
                },
                "dirty-flag": false
            }
            """;

        var info = QemuImgInfo.Parse(json, "test");

        Assert.Equal("qcow2", info.Format);
        Assert.Equal(64L << 20, info.VirtualSize);
        Assert.Equal(208896, info.ActualSize);
        Assert.Equal(65536, info.ClusterSize);
        Assert.Equal("base.qcow2", info.BackingFile);
        Assert.Equal("qcow2", info.BackingFormat);
        Assert.False(info.DirtyFlag);
        Assert.Equal(2, info.DirtyBitmaps.Count);
        Assert.True(info.DirtyBitmaps[0].InUse);
        Assert.True(info.DirtyBitmaps[0].Auto);
        Assert.False(info.DirtyBitmaps[0].Inconsistent);
        Assert.Equal(65536, info.DirtyBitmaps[0].Granularity);
        Assert.True(info.DirtyBitmaps[1].Inconsistent);
        Assert.Equal("old", info.DirtyBitmaps[1].Name);
    }

    [Fact]
    public void QemuImgInfo_GarbageIsAnErrorNamingTheSource()
    {
        var error = Assert.Throws<Core.ReplicaException>(() => QemuImgInfo.Parse("qemu-img: oops", "'/x.raw' on host 'h1'"));
        Assert.Equal("ImageInfoUnreadable", error.ErrorId);
        Assert.Contains("'/x.raw' on host 'h1'", error.Message);
    }

    [Fact]
    public void QemuIoHexDump_IsParsedByPosition()
    {
        const string dump = "00003000:  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................\n" +
                            "00003010:  ff 41 00 00 00 00 00 00 00 00 00 00 00 00 00 00  .A..............\n" +
                            "read 32/32 bytes at offset 12288\n";
        var bytes = DiskImageComparer.ParseHexDump(dump, 12288, 32);
        Assert.Equal(0x0f, bytes[15]);
        Assert.Equal(0xff, bytes[16]);
        Assert.Equal(0x41, bytes[17]);
        Assert.Throws<Core.ReplicaException>(() => DiskImageComparer.ParseHexDump(dump, 12288, 48));
    }

    [Fact]
    public void BtrfsSubvolumeShow_IsParsed()
    {
        const string output = "store.checkpoints/20250101T000000Z\n" +
                              "\tName: \t\t\t20250101T000000Z\n" +
                              "\tUUID: \t\t\tdb659dd6-5a07-7a43-8b53-8d54ec9bf7d1\n" +
                              "\tParent UUID: \t\t55d482cf-d9d9-1d4b-8e9a-a0e45416251a\n" +
                              "\tReceived UUID: \t\t-\n" +
                              "\tCreation time: \t\t2026-11-21 20:38:13 +0000\n" +
                              "\tSubvolume ID: \t\t257\n" +
                              "\tGeneration: \t\t10\n" +
                              "\tFlags: \t\t\treadonly\n" +
                              "\tSnapshot(s):\n";
        var info = BtrfsSubvolumeInfo.Parse(output);
        Assert.Equal("20250101T000000Z", info.Name);
        Assert.Equal("db659dd6-5a07-7a43-8b53-8d54ec9bf7d1", info.Uuid);
        Assert.Equal("55d482cf-d9d9-1d4b-8e9a-a0e45416251a", info.ParentUuid);
        Assert.Equal(257, info.SubvolumeId);
        Assert.Equal(10, info.Generation);
        Assert.True(info.ReadOnly);
        Assert.Equal(new DateTimeOffset(2026, 11, 21, 20, 38, 13, TimeSpan.Zero), info.CreatedAt);
        Assert.Empty(info.Snapshots);

        var store = BtrfsSubvolumeInfo.Parse(output.Replace("\tParent UUID: \t\t55d482cf-d9d9-1d4b-8e9a-a0e45416251a", "\tParent UUID: \t\t-")
            .Replace("readonly", "-") + "\t\t\t\tstore.checkpoints/a\n\t\t\t\tstore.checkpoints/b\n");
        Assert.Null(store.ParentUuid);
        Assert.False(store.ReadOnly);
        Assert.Equal(new[] { "store.checkpoints/a", "store.checkpoints/b" }, store.Snapshots);
    }

    [Fact]
    public void CheckpointNames_AreUtcTimestampsThatSortByTime()
    {
        var name = DiskStoreService.CheckpointName(new DateTimeOffset(2025, 1, 31, 16, 25, 1, 123, TimeSpan.FromHours(2)));
        Assert.Equal("20250131T142501.123Z", name);
        Assert.Equal("/srv/images.checkpoints", DiskStoreService.DefaultCheckpointDirectory("/srv/images/"));
    }

    [Theory]
    [InlineData("---------------C------ /x/a.qcow2", true)]
    [InlineData("--------------e------- /x/C.qcow2", false)]
    public void Lsattr_NoCowIsTheCInTheAttributeField(string output, bool expected) =>
        Assert.Equal(expected, DiskImageService.LsattrHasNoCow(output));
}
