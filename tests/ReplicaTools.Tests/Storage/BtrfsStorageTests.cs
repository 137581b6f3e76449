using ReplicaTools.Core;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Storage;

/// <summary>Images and stores on a real loop-mounted btrfs (root only).</summary>
public sealed class BtrfsStorageTests : IClassFixture<BtrfsFixture>
{
    private readonly BtrfsFixture fixture;
    private readonly DiskImageService images = new(LocalHost.Instance);
    private readonly DiskStoreService stores = new(LocalHost.Instance);

    public BtrfsStorageTests(BtrfsFixture fixture) => this.fixture = fixture;

    private string Unique(string name) => Path.Combine(fixture.Volume.MountPoint, $"{name}-{Guid.NewGuid().ToString("N")[..6]}");

    [BtrfsFact]
    public async Task ImageOnBtrfs_GetsNoCow_BeforeAnyDataIsWritten_AndReportsIt()
    {
        var directory = Unique("plain");
        Directory.CreateDirectory(directory); // a plain directory without 'C': the attribute must come from New-DiskImage itself
        foreach (var format in new[] { DiskImageFormat.Raw, DiskImageFormat.Qcow2, DiskImageFormat.Vdi })
        {
            var path = Path.Combine(directory, "vm1." + format.ToQemuName());
            var plan = await images.PlanCreateAsync(path, 64L << 20, format);
            Assert.True(plan.SetsNoCow);
            Assert.Equal("btrfs", plan.FileSystemType);
            Assert.Equal(
                new[] { "dd", "chattr", "qemu-img" },
                plan.Steps.Select(s => s.Command.Arguments[0]));
            Assert.Equal($"[localhost] chattr +C {path}", plan.Steps[1].ToString());

            var reporter = new RecordingReporter();
            DiskImage image;
            using (OperationContext.Use(reporter))
            {
                image = await images.CreateAsync(plan);
            }

            Assert.True(image.NoCow);
            Assert.Equal("btrfs", image.FileSystemType);
            Assert.Contains("C", Tool.Run("lsattr", path).Split(' ')[0]);
            Assert.Contains(reporter.Verbose, m => m.Contains("No_COW is set", StringComparison.Ordinal));
        }
    }

    [BtrfsFact]
    public async Task Store_Initialize_SetsNoCow_AndImagesInItInheritIt()
    {
        var path = Unique("store");
        var store = await stores.InitializeAsync(path);

        Assert.Equal(path, store.Path);
        Assert.True(store.NoCow);
        Assert.True(store.SubvolumeId > 5);
        Assert.Equal(path + ".checkpoints", store.CheckpointDirectory);
        Assert.Contains("C", Tool.Run("lsattr", "-d", path).Split(' ')[0]);
        Assert.Contains("ID", Tool.Run("btrfs", "subvolume", "show", path)); // a real subvolume

        var again = await Assert.ThrowsAsync<ReplicaException>(() => stores.InitializeAsync(path));
        Assert.Equal(StorageErrorIds.StoreExists, again.ErrorId);
        Assert.Contains("btrfs subvolume", again.Message);
    }

    [BtrfsFact]
    public async Task Store_OutsideBtrfs_IsRefusedNamingHostAndPath()
    {
        var path = Path.Combine("/tmp", $"rtnotbtrfs-{Guid.NewGuid().ToString("N")[..6]}");
        var error = await Assert.ThrowsAsync<ReplicaException>(() => stores.PlanInitializeAsync(path));
        Assert.Equal(StorageErrorIds.NotBtrfs, error.ErrorId);
        Assert.Contains("'localhost'", error.Message);
        Assert.Contains(path, error.Message);
        Assert.Contains("not btrfs", error.Message);
        Assert.False(Directory.Exists(path));
    }

    [BtrfsFact]
    public async Task Checkpoint_IsReadOnly_OutsideTheStore_AndHoldsTheDataOfThatInstant()
    {
        var store = await stores.InitializeAsync(Unique("ckstore"));
        var image = Path.Combine(store.Path, "vm1.qcow2");
        await images.CreateAsync(image, 64L << 20, DiskImageFormat.Qcow2);
        ImageData.Write(image, "qcow2", 5 << 20, 4096, 0x11);

        var plan = await stores.PlanCheckpointAsync(store.Path);
        Assert.StartsWith(store.Path + ".checkpoints/", plan.CheckpointPath);
        Assert.Equal($"[localhost] btrfs subvolume snapshot -r {store.Path} {plan.CheckpointPath}", plan.Steps[^1].ToString());
        var first = await stores.CheckpointAsync(plan);

        ImageData.Write(image, "qcow2", 5 << 20, 4096, 0x22); // the VM writes on after the checkpoint
        var second = await stores.CheckpointAsync(store.Path);

        Assert.True(first.ReadOnly);
        Assert.Equal(store.Uuid, first.ParentUuid);
        Assert.Matches(@"^\d{8}T\d{6}\.\d{3}Z$", first.Name);
        Assert.Contains("readonly", Tool.Run("btrfs", "property", "get", first.Path, "ro").Replace("ro=true", "readonly"));
        var write = Tool.TryRun("touch", new[] { Path.Combine(first.Path, "x") });
        Assert.NotEqual(0, write.ExitCode);

        // Data at the instant of each checkpoint: the first holds 0x11, the second (and the store) 0x22.
        var atFirst = Path.Combine(first.Path, "vm1.qcow2");
        Assert.Contains("Pattern verification", Tool.TryRun("qemu-io", new[] { "-r", "-f", "qcow2", "-c", $"read -P 0x22 {5 << 20} 4096", atFirst }).StandardOutput);
        Tool.Run("qemu-io", "-r", "-f", "qcow2", "-c", $"read -P 0x11 {5 << 20} 4096", atFirst);
        var compare = await DiskImageComparer.CompareAsync(new ImageEndpoint(LocalHost.Instance, Path.Combine(second.Path, "vm1.qcow2")), new ImageEndpoint(LocalHost.Instance, image));
        Assert.True(compare.Identical);

        var listed = await stores.GetCheckpointsAsync(store.Path);
        Assert.Equal(new[] { first.Path, second.Path }, listed.Select(c => c.Path));
        Assert.All(listed, c => Assert.Equal(store.Path, c.StorePath));

        // Not nested: a checkpoint of the store holds no older checkpoints.
        Assert.False(Directory.Exists(Path.Combine(second.Path, Path.GetFileName(store.CheckpointDirectory))));

        var removePlan = await stores.PlanRemoveCheckpointAsync(first.Path);
        Assert.Equal($"[localhost] btrfs subvolume delete {first.Path}", Assert.Single(removePlan.Steps).ToString());
        await stores.RemoveCheckpointAsync(removePlan);
        Assert.Equal(new[] { second.Path }, (await stores.GetCheckpointsAsync(store.Path)).Select(c => c.Path));

        // The store itself is no checkpoint: refusing to delete it.
        var notCheckpoint = await Assert.ThrowsAsync<ReplicaException>(() => stores.PlanRemoveCheckpointAsync(store.Path));
        Assert.Equal(StorageErrorIds.NotACheckpoint, notCheckpoint.ErrorId);
    }

    [BtrfsFact]
    public async Task Checkpoint_OfAStoreWithoutCheckpoints_ListsNothing_AndAPlainDirectoryIsNoStore()
    {
        var store = await stores.InitializeAsync(Unique("empty"));
        Assert.Empty(await stores.GetCheckpointsAsync(store.Path));

        var plain = Unique("plaindir");
        Directory.CreateDirectory(plain);
        var error = await Assert.ThrowsAsync<ReplicaException>(() => stores.CheckpointAsync(plain));
        Assert.Equal(StorageErrorIds.StoreNotFound, error.ErrorId);
        Assert.Contains(plain, error.Message);
    }
}
