namespace ReplicaTools.TestLab;

/// <summary>
/// A btrfs file system in a sparse file, loop-mounted under its own temporary directory. Needs root (mount, losetup).
/// Subvolumes can be created in it and mounted on their own (<see cref="MountSubvolume"/>), as nfs-ganesha needs.
/// <see cref="Dispose"/> unmounts everything, detaches the loop device and frees the backing file, even after failures.
/// </summary>
public sealed class BtrfsVolume : IDisposable
{
    private readonly List<string> mounts = new();
    private bool disposed;

    private BtrfsVolume(string root, string imagePath, string mountPoint)
    {
        Root = root;
        ImagePath = imagePath;
        MountPoint = mountPoint;
    }

    /// <summary>The directory holding the backing file and the mount points.</summary>
    public string Root { get; }

    /// <summary>The sparse file holding the file system.</summary>
    public string ImagePath { get; }

    /// <summary>Where the whole file system (its top-level subvolume) is mounted.</summary>
    public string MountPoint { get; }

    /// <summary>True when this machine can host the fixture: root, mkfs.btrfs, losetup and a loop device.</summary>
    public static bool IsSupported(out string why)
    {
        if (Environment.UserName != "root")
        {
            why = "btrfs loop volumes need root (mount, losetup)";
            return false;
        }

        var missing = new[] { "mkfs.btrfs", "btrfs", "losetup", "mount", "umount", "chattr", "lsattr" }.Where(p => !Tool.Exists(p)).ToArray();
        if (missing.Length > 0)
        {
            why = "missing " + string.Join(", ", missing) + " (btrfs-progs, util-linux, e2fsprogs)";
            return false;
        }

        if (!File.Exists("/dev/loop-control"))
        {
            why = "no /dev/loop-control (loop devices unavailable)";
            return false;
        }

        why = string.Empty;
        return true;
    }

    /// <summary>Creates and mounts a btrfs volume of <paramref name="size"/> bytes (sparse; btrfs needs at least about 120 MiB).</summary>
    /// <param name="root">Directory for the fixture's files (created; default: a new /tmp/rtbtrfs-* directory removed on dispose).</param>
    public static BtrfsVolume Create(long size = 512L << 20, string? root = null, string label = "rtlab")
    {
        if (!IsSupported(out var why))
        {
            throw new InvalidOperationException("BtrfsVolume: " + why);
        }

        root ??= Path.Combine("/tmp", $"rtbtrfs-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}");
        Directory.CreateDirectory(root);
        var volume = new BtrfsVolume(root, Path.Combine(root, "btrfs.img"), Path.Combine(root, "mnt"));
        try
        {
            using (var file = new FileStream(volume.ImagePath, FileMode.CreateNew))
            {
                file.SetLength(size);
            }

            Tool.Run("mkfs.btrfs", "-q", "-L", label, volume.ImagePath);
            Directory.CreateDirectory(volume.MountPoint);
            Tool.Run("mount", "-o", "loop", volume.ImagePath, volume.MountPoint);
            volume.mounts.Add(volume.MountPoint);
            return volume;
        }
        catch
        {
            volume.Dispose();
            throw;
        }
    }

    /// <summary>Creates a subvolume at MountPoint/<paramref name="name"/>, with No_COW (chattr +C) unless told otherwise; returns its path.</summary>
    public string CreateSubvolume(string name, bool noCow = true)
    {
        var path = Path.Combine(MountPoint, name);
        Tool.Run("btrfs", "subvolume", "create", path);
        if (noCow)
        {
            Tool.Run("chattr", "+C", path);
        }

        return path;
    }

    /// <summary>Mounts the subvolume <paramref name="name"/> by itself (mount -o loop,subvol=NAME) at <paramref name="mountPoint"/>.</summary>
    public string MountSubvolume(string name, string mountPoint)
    {
        Directory.CreateDirectory(mountPoint);
        Tool.Run("mount", "-o", $"loop,subvol={name}", ImagePath, mountPoint);
        mounts.Add(mountPoint);
        return mountPoint;
    }

    /// <summary>Frees a (large) file inside the volume at once: truncate first, so space comes back even if a daemon still holds it open.</summary>
    public static void FreeFile(string path)
    {
        if (File.Exists(path))
        {
            using (var file = new FileStream(path, FileMode.Open, FileAccess.Write))
            {
                file.SetLength(0);
            }

            File.Delete(path);
        }
    }

    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        var problems = new List<string>();
        for (var i = mounts.Count - 1; i >= 0; i--)
        {
            Unmount(mounts[i], problems);
        }

        // mount -o loop attaches with autoclear; detach whatever is still attached to the backing file.
        if (problems.Count == 0 && File.Exists(ImagePath))
        {
            var (_, attached, _) = Tool.TryRun("losetup", new[] { "-j", ImagePath });
            foreach (var line in attached.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                var device = line.Split(':')[0];
                Tool.TryRun("losetup", new[] { "-d", device });
            }

            try
            {
                FreeFile(ImagePath);
            }
            catch (IOException ex)
            {
                problems.Add(ex.Message);
            }
        }

        try
        {
            if (!problems.Any())
            {
                Directory.Delete(Root, recursive: true);
            }
        }
        catch (IOException ex)
        {
            problems.Add(ex.Message);
        }

        if (problems.Count > 0)
        {
            Console.Error.WriteLine($"BtrfsVolume {Root}: cleanup problems: {string.Join("; ", problems)}");
        }
    }

    private static void Unmount(string mountPoint, List<string> problems)
    {
        for (var attempt = 1; attempt <= 20; attempt++)
        {
            var (code, _, stderr) = Tool.TryRun("umount", new[] { mountPoint });
            if (code == 0 || stderr.Contains("not mounted", StringComparison.Ordinal) || stderr.Contains("no mount point", StringComparison.Ordinal))
            {
                return;
            }

            Thread.Sleep(250);
        }

        // Still busy (a process of a failed test holds a file): detach lazily so the loop device goes when it lets go.
        var (lazy, _, error) = Tool.TryRun("umount", new[] { "-l", mountPoint });
        problems.Add(lazy == 0 ? $"{mountPoint} was busy and was unmounted lazily" : $"umount {mountPoint}: {error.Trim()}");
    }
}
