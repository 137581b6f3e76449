using ReplicaTools.Core;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Storage;

/// <summary>Disk images through SSH lab hosts (real sshd on 127.0.0.2-4, the same machine's tools and files).</summary>
[Collection(LabCollection.Name)]
public sealed class DiskImageSshTests : IAsyncLifetime
{
    private readonly SshLab lab;
    private readonly SshHost host2;
    private readonly SshHost host3;
    private readonly string directory;

    public DiskImageSshTests(LabFixture fixture)
    {
        lab = fixture.Lab;
        host2 = lab[0].CreateHost();
        host3 = lab[1].CreateHost();
        directory = Path.Combine(lab.Root, "img-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(directory);
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await host2.DisconnectAsync();
        await host3.DisconnectAsync();
        Directory.Delete(directory, recursive: true);
    }

    private string PathOf(string name) => Path.Combine(directory, name);

    [Fact]
    public async Task CreateInfoRemove_ThroughSsh()
    {
        var service = new DiskImageService(host2);
        var path = PathOf("vm 1 'quoted'.qcow2");

        var image = await service.CreateAsync(path, 256L << 20, DiskImageFormat.Qcow2);

        Assert.Equal("host2", image.HostName);
        Assert.Equal(256L << 20, image.VirtualSize);
        Assert.True(File.Exists(path));
        Assert.Equal("qcow2", (await service.GetAsync(path)).Format);
        var exists = await Assert.ThrowsAsync<ReplicaException>(() => service.CreateAsync(path, 256L << 20, DiskImageFormat.Qcow2));
        Assert.Contains("'host2'", exists.Message);
        await service.RemoveAsync(path);
        Assert.False(File.Exists(path));

        var missing = await Assert.ThrowsAsync<ReplicaException>(() => service.GetAsync(path));
        Assert.Equal(StorageErrorIds.ImageNotFound, missing.ErrorId);
        Assert.Contains("'host2'", missing.Message);
        Assert.Contains(path, missing.Message);
    }

    [Fact]
    public async Task Compare_AcrossTwoSshHosts_ExportsOneOverNbd_AndFindsTheExactByte()
    {
        var reference = PathOf("ref.qcow2");
        var difference = PathOf("diff.vdi");
        await new DiskImageService(host2).CreateAsync(reference, 64L << 20, DiskImageFormat.Qcow2);
        await new DiskImageService(host3).CreateAsync(difference, 64L << 20, DiskImageFormat.Vdi);
        ImageData.Write(reference, "qcow2", 8 << 20, 1 << 20, 0x33);
        ImageData.Write(difference, "vdi", 8 << 20, 1 << 20, 0x33);

        var reporter = new RecordingReporter();
        ImageComparison same;
        using (OperationContext.Use(reporter))
        {
            same = await DiskImageComparer.CompareAsync(new ImageEndpoint(host2, reference), new ImageEndpoint(host3, difference));
        }

        Assert.True(same.Identical, same.Message);
        Assert.Equal("host2", same.ReferenceHost);
        Assert.Equal("host3", same.DifferenceHost);
        Assert.Equal("host3", same.ComparedOn);
        Assert.Contains("qemu-nbd export on 'host2'", same.Method);
        Assert.Contains(reporter.Verbose, v => v.StartsWith("[host2] qemu-nbd --read-only", StringComparison.Ordinal) && v.Contains("--bind=127.0.0.2", StringComparison.Ordinal));
        AssertNoNbdLeft(reference);

        ImageData.Write(difference, "vdi", (40L << 20) + 511, 1, 0x01);
        var different = await DiskImageComparer.CompareAsync(new ImageEndpoint(host2, reference), new ImageEndpoint(host3, difference));
        Assert.False(different.Identical);
        Assert.Equal((40L << 20) + 511, different.FirstDifferenceOffset);
        AssertNoNbdLeft(reference);
    }

    [Fact]
    public async Task Compare_LocalWithSshHost_ExportsTheRemoteSide()
    {
        var reference = PathOf("local.raw");
        var difference = PathOf("remote.qcow2");
        await new DiskImageService(LocalHost.Instance).CreateAsync(reference, 64L << 20, DiskImageFormat.Raw);
        await new DiskImageService(host3).CreateAsync(difference, 64L << 20, DiskImageFormat.Qcow2);
        ImageData.Write(reference, "raw", 4096, 1, 0x09);

        var result = await DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, reference), new ImageEndpoint(host3, difference));

        Assert.False(result.Identical);
        Assert.Equal(4096, result.FirstDifferenceOffset);
        Assert.Equal("localhost", result.ComparedOn);
        Assert.Contains("'host3'", result.Method);
        AssertNoNbdLeft(difference);
    }

    [Fact]
    public async Task Compare_ImageMissingOnTheExportingHost_NamesThatHost()
    {
        var present = PathOf("present.raw");
        await new DiskImageService(host3).CreateAsync(present, 1L << 20, DiskImageFormat.Raw);
        var error = await Assert.ThrowsAsync<ReplicaException>(() =>
            DiskImageComparer.CompareAsync(new ImageEndpoint(host2, PathOf("absent.raw")), new ImageEndpoint(host3, present)));
        Assert.Equal(StorageErrorIds.ImageNotFound, error.ErrorId);
        Assert.Contains("'host2'", error.Message);
        Assert.Contains(PathOf("absent.raw"), error.Message);
    }

    private static void AssertNoNbdLeft(string image)
    {
        for (var i = 0; i < 50; i++)
        {
            var (code, output, _) = Tool.TryRun("pgrep", new[] { "-f", "qemu-nbd.*" + Path.GetFileName(image) });
            if (code != 0 || output.Trim().Length == 0)
            {
                return;
            }

            Thread.Sleep(100);
        }

        Assert.Fail($"a qemu-nbd export of {image} is still running");
    }
}
