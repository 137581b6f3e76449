using System.Diagnostics;
using ReplicaTools.Core;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Storage;

/// <summary>Images on the two-server nfs-ganesha lab, reached by nfs:// URL (QEMU's libnfs, no kernel mount).</summary>
[Collection(LabCollection.Name)]
public sealed class NfsStorageTests : IClassFixture<NfsFixture>
{
    private readonly NfsFixture nfs;
    private readonly SshLab ssh;
    private readonly DiskImageService local = new(LocalHost.Instance, options: new StorageOptions { NfsTimeout = TimeSpan.FromSeconds(4) });

    public NfsStorageTests(NfsFixture nfs, LabFixture lab)
    {
        this.nfs = nfs;
        ssh = lab.Lab;
    }

    private NfsLab Lab
    {
        get
        {
            nfs.Lab.EnsureRegistered(); // another lab on this machine may have unregistered NFS from the shared rpcbind
            return nfs.Lab;
        }
    }

    private static string Name(string extension) => $"t-{Guid.NewGuid().ToString("N")[..8]}.{extension}";

    [NfsFact]
    public async Task CreateInfo_ThroughNfsUrl_OnBothServers_InheritsNoCowFromTheStore()
    {
        foreach (var server in Lab.Servers)
        {
            var name = Name("vdi");
            var plan = await local.PlanCreateAsync(server.Url(name), 128L << 20, DiskImageFormat.Vdi);
            var step = Assert.Single(plan.Steps);
            Assert.Equal($"[localhost] timeout -s KILL 4 qemu-img create -q -f vdi {server.Url(name)} 134217728", step.ToString());
            Assert.Contains(plan.Notes, n => n.Contains("inherited attribute", StringComparison.Ordinal));

            var image = await local.CreateAsync(plan);

            Assert.Equal(server.Url(name), image.Path);
            Assert.True(image.IsNfsUrl);
            Assert.Equal("vdi", image.Format);
            Assert.Equal(128L << 20, image.VirtualSize);
            Assert.Null(image.NoCow); // unknown through NFS ...
            Assert.Contains("C", Tool.Run("lsattr", server.LocalPath(name)).Split(' ')[0]); // ... but inherited on the server
            server.DeleteFile(name);
        }
    }

    [NfsFact]
    public async Task ExistingNfsImage_IsNotOverwritten_UnlessForced()
    {
        var server = Lab[0];
        var name = Name("qcow2");
        await local.CreateAsync(server.Url(name), 64L << 20, DiskImageFormat.Qcow2);

        var error = await Assert.ThrowsAsync<ReplicaException>(() => local.CreateAsync(server.Url(name), 64L << 20, DiskImageFormat.Raw));
        Assert.Equal(StorageErrorIds.ImageExists, error.ErrorId);
        Assert.Equal("qcow2", (await local.GetAsync(server.Url(name))).Format);

        var replaced = await local.CreateAsync(server.Url(name), 64L << 20, DiskImageFormat.Raw, force: true);
        Assert.Equal("raw", replaced.Format);
        Tool.Run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0 0 1M", server.Url(name)); // no old qcow2 header shows through
        server.DeleteFile(name);
    }

    [NfsFact]
    public async Task Compare_AcrossTheTwoServers_IdenticalThenTheExactFirstDifference()
    {
        var (one, two) = (Lab[0], Lab[1]);
        var name = Name("vdi");
        await local.CreateAsync(one.Url(name), 64L << 20, DiskImageFormat.Vdi);
        await local.CreateAsync(two.Url(name), 64L << 20, DiskImageFormat.Vdi);
        ImageData.Write(one.Url(name), "vdi", 3 << 20, 1 << 20, 0xcd);
        ImageData.Write(two.Url(name), "vdi", 3 << 20, 1 << 20, 0xcd);

        var same = await DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, one.Url(name)), new ImageEndpoint(LocalHost.Instance, two.Url(name)));
        Assert.True(same.Identical, same.Message);

        const long offset = (17L << 20) + 4097;
        ImageData.Write(two.Url(name), "vdi", offset, 1, 0xee);
        var different = await DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, one.Url(name)), new ImageEndpoint(LocalHost.Instance, two.Url(name)));
        Assert.False(different.Identical);
        Assert.Equal(offset, different.FirstDifferenceOffset);
        Assert.Equal("qemu-img compare", different.Method);

        one.DeleteFile(name);
        two.DeleteFile(name);
    }

    [NfsFact]
    public async Task NfsUrl_ThroughAnSshHost_AndComparedWithALocalFileOnThatHost()
    {
        var server = Lab[1];
        var host = ssh[0].CreateHost();
        try
        {
            var remote = new DiskImageService(host, options: new StorageOptions { NfsTimeout = TimeSpan.FromSeconds(10) });
            var name = Name("qcow2");
            var image = await remote.CreateAsync(server.Url(name), 64L << 20, DiskImageFormat.Qcow2);
            Assert.Equal("host2", image.HostName);
            ImageData.Write(server.Url(name), "qcow2", 12345, 1, 0x42);

            var copy = Path.Combine(ssh.Root, name);
            Tool.Run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", server.Url(name), copy);
            var result = await DiskImageComparer.CompareAsync(new ImageEndpoint(host, server.Url(name)), new ImageEndpoint(host, copy));
            Assert.True(result.Identical, result.Message);
            Assert.Equal("host2", result.ComparedOn);
            server.DeleteFile(name);
            File.Delete(copy);
        }
        finally
        {
            await host.DisconnectAsync();
        }
    }

    [NfsFact]
    public async Task ServerOutage_IsAnErrorNamingHostUrlAndServer_AndRestoreBringsItBack()
    {
        var server = Lab[0];
        var name = Name("raw");
        await local.CreateAsync(server.Url(name), 1L << 20, DiskImageFormat.Raw);
        server.SimulateOutage();
        try
        {
            var error = await Assert.ThrowsAsync<ReplicaException>(() => local.GetAsync(server.Url(name)));
            Assert.Equal(StorageErrorIds.NfsServerUnreachable, error.ErrorId);
            Assert.Contains("'localhost'", error.Message);
            Assert.Contains(server.Url(name), error.Message);
            Assert.Contains(server.Address, error.Message);
            Assert.Equal(ReplicaErrorCategory.ConnectionError, error.Category);

            var other = await local.CreateAsync(Lab[1].Url(name), 1L << 20, DiskImageFormat.Raw); // the other server is unaffected
            Assert.Equal("raw", other.Format);
            Lab[1].DeleteFile(name);
        }
        finally
        {
            await server.RestoreAsync();
        }

        Assert.Equal(1L << 20, (await local.GetAsync(server.Url(name))).VirtualSize);
        server.DeleteFile(name);
    }

    [NfsFact]
    public async Task HungServer_IsKilledAfterTheNfsTimeout_NotWaitedForForever()
    {
        var server = Lab[1];
        var name = Name("raw");
        await local.CreateAsync(server.Url(name), 1L << 20, DiskImageFormat.Raw);
        server.Freeze();
        var stopwatch = Stopwatch.StartNew();
        try
        {
            var error = await Assert.ThrowsAsync<ReplicaException>(() => local.GetAsync(server.Url(name)));
            Assert.Equal(StorageErrorIds.NfsServerNotResponding, error.ErrorId);
            Assert.Contains(server.Url(name), error.Message);
            Assert.Contains("4 s", error.Message);
            Assert.InRange(stopwatch.Elapsed.TotalSeconds, 3.5, 30);
        }
        finally
        {
            server.Thaw();
        }

        Assert.Equal("raw", (await local.GetAsync(server.Url(name))).Format);
        server.DeleteFile(name);
    }

    [NfsFact]
    public async Task MissingNfsImage_IsNotFound_WithHostAndUrl()
    {
        var url = Lab[0].Url("does-not-exist.vdi");
        var error = await Assert.ThrowsAsync<ReplicaException>(() => local.GetAsync(url));
        Assert.Equal(StorageErrorIds.ImageNotFound, error.ErrorId);
        Assert.Contains(url, error.Message);
        Assert.Contains("'localhost'", error.Message);
        Assert.False(await local.ExistsAsync(url));
    }

    [NfsFact]
    public async Task ExportedStore_CanBeCheckpointed_ThroughTheWholeFileSystemMount()
    {
        var server = Lab[0];
        var stores = new DiskStoreService(LocalHost.Instance);
        var name = Name("qcow2");
        await local.CreateAsync(server.Url(name), 64L << 20, DiskImageFormat.Qcow2);

        var checkpoint = await stores.CheckpointAsync(server.StorePath);
        try
        {
            Assert.True(File.Exists(Path.Combine(checkpoint.Path, name)));
            Assert.True(checkpoint.ReadOnly);

            // The export mount is the subvolume mounted by itself: its sibling is not on btrfs, so a checkpoint there is refused clearly.
            var error = await Assert.ThrowsAsync<ReplicaException>(() => stores.CheckpointAsync(server.ExportDirectory));
            Assert.Equal(StorageErrorIds.NotBtrfs, error.ErrorId);
            Assert.Contains(server.ExportDirectory, error.Message);
        }
        finally
        {
            await stores.RemoveCheckpointAsync(checkpoint.Path);
            server.DeleteFile(name);
        }
    }
}
