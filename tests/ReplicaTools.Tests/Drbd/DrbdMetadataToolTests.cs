using System.Globalization;
using ReplicaTools.Core.Drbd;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Drbd;

/// <summary>The metadata size formula against the real drbdmeta: create-md on sparse files, then dump-md.</summary>
public sealed class DrbdMetadataToolTests : IDisposable
{
    private readonly string directory = Path.Combine(Path.GetTempPath(), $"rtdrbdmeta-{Guid.NewGuid().ToString("N")[..8]}");

    public DrbdMetadataToolTests()
    {
        Tool.Require("drbdmeta");
        Directory.CreateDirectory(directory);
    }

    public void Dispose() => Directory.Delete(directory, recursive: true);

    [Theory]
    [InlineData(10L << 20)]
    [InlineData(128L << 20)]
    [InlineData((128L << 20) + 4096)]
    [InlineData(1000000000)]
    [InlineData(100L << 30)]
    [InlineData(3L << 40)]
    public void UsableSize_IsWhereDrbdmetaPutsTheBitmap(long size)
    {
        var file = Path.Combine(directory, size.ToString(CultureInfo.InvariantCulture) + ".img");
        using (var stream = new FileStream(file, FileMode.CreateNew))
        {
            stream.SetLength(size);
        }

        Tool.Run("drbdmeta", "--force", "-", "v09", file, "internal", "create-md", DrbdMetadata.Peers.ToString(CultureInfo.InvariantCulture));
        var dump = DrbdMetadata.ParseDump(Tool.Run("drbdmeta", "--force", "-", "v09", file, "internal", "dump-md"))!;
        Assert.Equal(dump.BitmapOffset, DrbdMetadata.UsableBytes(size));
        Assert.Equal(size - dump.BitmapOffset, DrbdMetadata.InternalMetadataBytes(size));
    }
}
