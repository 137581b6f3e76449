using ReplicaTools.Core;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Storage;

/// <summary>Disk images on the local machine (a plain, non-btrfs temporary directory), through the real qemu-img.</summary>
public sealed class DiskImageLocalTests : IDisposable
{
    private readonly string directory = Path.Combine("/tmp", $"rtimg-{Guid.NewGuid().ToString("N")[..8]}");
    private readonly DiskImageService service = new(LocalHost.Instance);

    public DiskImageLocalTests() => Directory.CreateDirectory(directory);

    public void Dispose() => Directory.Delete(directory, recursive: true);

    private string PathOf(string name) => Path.Combine(directory, name);

    [Theory]
    [InlineData(DiskImageFormat.Raw, "raw")]
    [InlineData(DiskImageFormat.Qcow2, "qcow2")]
    [InlineData(DiskImageFormat.Vdi, "vdi")]
    public async Task Create_Info_Remove(DiskImageFormat format, string name)
    {
        var path = PathOf("vm1." + name);

        var created = await service.CreateAsync(path, 64L << 20, format);

        Assert.Equal(path, created.Path);
        Assert.Equal(name, created.Format);
        Assert.Equal(64L << 20, created.VirtualSize);
        Assert.Equal("localhost", created.HostName);
        Assert.Null(created.NoCow); // not btrfs: No_COW does not apply
        Assert.NotEqual("btrfs", created.FileSystemType);
        Assert.False(created.InUse);
        var info = await service.GetAsync(path);
        Assert.Equal(created.VirtualSize, info.VirtualSize);
        Assert.Equal(name, info.Format);

        await service.RemoveAsync(path);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task Sizes_AreBinary()
    {
        Assert.True(Core.Text.ByteSize.TryParse("20GB", out var twenty));
        Assert.Equal(20L << 30, twenty);
        var image = await service.CreateAsync(PathOf("sparse.qcow2"), twenty, DiskImageFormat.Qcow2);
        Assert.Equal(21474836480, image.VirtualSize);
    }

    [Fact]
    public async Task ExistingImage_IsNotOverwritten_UnlessForced()
    {
        var path = PathOf("keep.qcow2");
        await service.CreateAsync(path, 64L << 20, DiskImageFormat.Qcow2);
        ImageData.Write(path, "qcow2", 4096, 512, 0xab);

        var error = await Assert.ThrowsAsync<ReplicaException>(() => service.CreateAsync(path, 128L << 20, DiskImageFormat.Raw));
        Assert.Equal(StorageErrorIds.ImageExists, error.ErrorId);
        Assert.Contains("localhost", error.Message);
        Assert.Contains(path, error.Message);
        var untouched = await service.GetAsync(path);
        Assert.Equal("qcow2", untouched.Format);
        Assert.Equal(64L << 20, untouched.VirtualSize);

        var plan = await service.PlanCreateAsync(path, 128L << 20, DiskImageFormat.Raw, force: true);
        Assert.True(plan.ReplacesExisting);
        Assert.Equal($"[localhost] rm -f -- {path}", plan.Steps[0].ToString());
        var replaced = await service.CreateAsync(plan);
        Assert.Equal("raw", replaced.Format);
        Assert.Equal(128L << 20, replaced.VirtualSize);
    }

    [Fact]
    public async Task Plan_ListsTheExactCommands_AndChangesNothing()
    {
        var path = PathOf("planned.vdi");
        var plan = await service.PlanCreateAsync(path, 64L << 20, DiskImageFormat.Vdi);

        Assert.Equal(new[]
        {
            "[localhost] " + PosixShell.Join(new[] { "dd", "if=/dev/null", $"of={path}", "conv=excl", "status=none" }),
            $"[localhost] qemu-img create -q -f vdi {path} 67108864",
        }, plan.Steps.Select(s => s.ToString()));
        Assert.False(plan.SetsNoCow);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task MissingImage_And_MissingDirectory_NameHostAndPath()
    {
        var missing = PathOf("nope.qcow2");
        var error = await Assert.ThrowsAsync<ReplicaException>(() => service.GetAsync(missing));
        Assert.Equal(StorageErrorIds.ImageNotFound, error.ErrorId);
        Assert.Contains("'localhost'", error.Message);
        Assert.Contains(missing, error.Message);

        var removeError = await Assert.ThrowsAsync<ReplicaException>(() => service.RemoveAsync(missing));
        Assert.Equal(StorageErrorIds.ImageNotFound, removeError.ErrorId);
        var directoryError = await Assert.ThrowsAsync<ReplicaException>(() => service.RemoveAsync(directory));
        Assert.Equal(StorageErrorIds.NotAnImageFile, directoryError.ErrorId);
        Assert.True(Directory.Exists(directory));

        var inMissingDirectory = PathOf("no/such/dir/x.raw");
        var createError = await Assert.ThrowsAsync<ReplicaException>(() => service.CreateAsync(inMissingDirectory, 1L << 20, DiskImageFormat.Raw));
        Assert.Equal(StorageErrorIds.DirectoryNotFound, createError.ErrorId);
        Assert.Contains(PathOf("no/such/dir"), createError.Message);
    }

    [Fact]
    public async Task ImageInUse_IsReadWithForceShareAndAWarning_AndRemovalIsRefusedUnlessForced()
    {
        var path = PathOf("busy.qcow2");
        await service.CreateAsync(path, 64L << 20, DiskImageFormat.Qcow2);
        Tool.Run("qemu-img", "bitmap", "--add", "-g", "65536", path, "bm0");
        using var vm = new QemuHolder(path, "qcow2");
        var reporter = new RecordingReporter();
        DiskImage info;
        using (OperationContext.Use(reporter))
        {
            info = await service.GetAsync(path);
        }

        Assert.True(info.InUse);
        Assert.Contains(reporter.Warnings, w => w.Contains("in use", StringComparison.Ordinal) && w.Contains(path, StringComparison.Ordinal) && w.Contains("stale", StringComparison.Ordinal));
        var bitmap = Assert.Single(info.DirtyBitmaps);
        Assert.Equal("bm0", bitmap.Name);
        Assert.True(bitmap.InUse); // the running QEMU owns it

        var error = await Assert.ThrowsAsync<ReplicaException>(() => service.RemoveAsync(path));
        Assert.Equal(StorageErrorIds.ImageInUse, error.ErrorId);
        Assert.True(File.Exists(path));
        var overwrite = await Assert.ThrowsAsync<ReplicaException>(() => service.CreateAsync(path, 64L << 20, DiskImageFormat.Raw, force: true));
        Assert.Equal(StorageErrorIds.ImageInUse, overwrite.ErrorId);

        await service.RemoveAsync(path, force: true);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task NfsUrl_CannotBeRemoved_AndTheErrorSaysWhatToDoInstead()
    {
        var error = await Assert.ThrowsAsync<ReplicaException>(() => service.RemoveAsync("nfs://192.0.2.1/images/vm1.vdi"));
        Assert.Equal(StorageErrorIds.NfsRemoveUnsupported, error.ErrorId);
        Assert.Contains("nfs://192.0.2.1/images/vm1.vdi", error.Message);
        Assert.Contains("local path", error.Message);
        Assert.Contains("192.0.2.1", error.RecommendedAction);
    }

    [Fact]
    public async Task Compare_IdenticalImagesOfDifferentFormats()
    {
        var a = PathOf("a.raw");
        var b = PathOf("b.qcow2");
        await service.CreateAsync(a, 64L << 20, DiskImageFormat.Raw);
        await service.CreateAsync(b, 64L << 20, DiskImageFormat.Qcow2);
        ImageData.Write(a, "raw", 1 << 20, 65536, 0x5a);
        ImageData.Write(b, "qcow2", 1 << 20, 65536, 0x5a);

        var result = await DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, a), new ImageEndpoint(LocalHost.Instance, b));

        Assert.True(result.Identical);
        Assert.Null(result.FirstDifferenceOffset);
        Assert.Equal("localhost", result.ComparedOn);
        Assert.Equal("raw", result.ReferenceFormat);
        Assert.Equal("qcow2", result.DifferenceFormat);
        Assert.Contains("identical", result.Message);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(1000005L)]
    [InlineData((64L << 20) - 1)]
    public async Task Compare_ReportsTheExactFirstDifferingByte(long offset)
    {
        var a = PathOf("a.qcow2");
        var b = PathOf("b.vdi");
        await service.CreateAsync(a, 64L << 20, DiskImageFormat.Qcow2);
        await service.CreateAsync(b, 64L << 20, DiskImageFormat.Vdi);
        ImageData.Write(b, "vdi", offset, 1, 0x01);
        ImageData.Write(b, "vdi", Math.Min(offset + 70000, (64L << 20) - 1), 1, 0x02);

        var result = await DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, a), new ImageEndpoint(LocalHost.Instance, b));

        Assert.False(result.Identical);
        Assert.Equal(offset, result.FirstDifferenceOffset);
        Assert.Contains(offset.ToString(), result.Message);
    }

    [Fact]
    public async Task Compare_DifferentSizes_AreNeverIdentical_AndSaySo()
    {
        var small = PathOf("small.raw");
        var large = PathOf("large.raw");
        await service.CreateAsync(small, 64L << 20, DiskImageFormat.Raw);
        await service.CreateAsync(large, 80L << 20, DiskImageFormat.Raw);

        var zeroTail = await DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, small), new ImageEndpoint(LocalHost.Instance, large));
        Assert.False(zeroTail.Identical);
        Assert.True(zeroTail.SizesDiffer);
        Assert.Equal(64L << 20, zeroTail.FirstDifferenceOffset);
        Assert.Contains("sizes differ", zeroTail.Message);

        ImageData.Write(large, "raw", (70L << 20) + 3, 1, 0x7f);
        var dataInTail = await DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, small), new ImageEndpoint(LocalHost.Instance, large));
        Assert.Equal((70L << 20) + 3, dataInTail.FirstDifferenceOffset);

        ImageData.Write(small, "raw", 777, 1, 0x7f);
        var dataInCommonPart = await DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, small), new ImageEndpoint(LocalHost.Instance, large));
        Assert.Equal(777, dataInCommonPart.FirstDifferenceOffset);
    }

    [Fact]
    public async Task Compare_MissingImage_NamesHostAndPath()
    {
        var a = PathOf("a.raw");
        await service.CreateAsync(a, 1L << 20, DiskImageFormat.Raw);
        var error = await Assert.ThrowsAsync<ReplicaException>(() =>
            DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, a), new ImageEndpoint(LocalHost.Instance, PathOf("gone.raw"))));
        Assert.Equal(StorageErrorIds.ImageNotFound, error.ErrorId);
        Assert.Contains(PathOf("gone.raw"), error.Message);
        Assert.Contains("localhost", error.Message);
    }
}
