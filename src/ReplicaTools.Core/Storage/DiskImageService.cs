using System.Globalization;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Storage;

/// <summary>The plan of New-DiskImage: probes done, commands decided.</summary>
public sealed class CreateDiskImagePlan : StoragePlan
{
    internal CreateDiskImagePlan(string target, IReadOnlyList<PlannedCommand> steps, IReadOnlyList<string> notes)
        : base(target, steps, notes)
    {
    }

    public required ImageLocation Location { get; init; }

    public required long Size { get; init; }

    public required DiskImageFormat Format { get; init; }

    /// <summary>The file system type of the target directory (stat -f -c %T); null for nfs:// URLs.</summary>
    public string? FileSystemType { get; init; }

    /// <summary>True when the plan sets No_COW (chattr +C) on the empty file before qemu-img writes into it.</summary>
    public bool SetsNoCow { get; init; }

    /// <summary>True when an existing image is replaced (-Force).</summary>
    public bool ReplacesExisting { get; init; }
}

/// <summary>The plan of Remove-DiskImage.</summary>
public sealed class RemoveDiskImagePlan : StoragePlan
{
    internal RemoveDiskImagePlan(string target, IReadOnlyList<PlannedCommand> steps, IReadOnlyList<string> notes)
        : base(target, steps, notes)
    {
    }

    public required ImageLocation Location { get; init; }

    /// <summary>A running QEMU held the image's lock when the plan was made (removal then needs -Force).</summary>
    public bool InUse { get; init; }
}

/// <summary>
/// Creates, reads and removes disk images on one host through qemu-img (paths on the host, or nfs:// URLs opened by
/// QEMU's libnfs driver from that host). Every command is an argument list run through <see cref="IReplicaHost"/>.
/// </summary>
public sealed class DiskImageService
{
    public DiskImageService(IReplicaHost host, ReplicaSession? session = null, StorageOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(host);
        Host = host;
        Session = session;
        Options = options ?? StorageOptions.Default;
    }

    /// <summary>A service for the host of <paramref name="session"/>; results carry the session for the next cmdlet.</summary>
    public static DiskImageService For(ReplicaSession session, StorageOptions? options = null) => new(session.Host, session, options);

    public IReplicaHost Host { get; }

    public ReplicaSession? Session { get; }

    public StorageOptions Options { get; }

    // ---------------------------------------------------------------- info

    /// <summary>
    /// qemu-img info of one image. An image a running QEMU holds is read again with -U (force share) and a warning:
    /// the result may then be stale. Local images also report their file system and (on btrfs) No_COW.
    /// </summary>
    public async Task<DiskImage> GetAsync(string path, CancellationToken cancellationToken = default)
    {
        var location = ImageLocation.Parse(path);
        var (info, locks) = await ReadInfoAsync(location, allowForceShare: true, cancellationToken).ConfigureAwait(false);
        string? fileSystem = null;
        bool? noCow = null;
        if (!location.IsNfsUrl)
        {
            fileSystem = await FileSystemTypeAsync(location.Text, cancellationToken).ConfigureAwait(false);
            if (fileSystem == "btrfs")
            {
                noCow = await HasNoCowAsync(location.Text, cancellationToken).ConfigureAwait(false);
            }
        }

        return ToImage(location, info, locks, fileSystem, noCow);
    }

    /// <summary>True when the image (or any file) exists at <paramref name="path"/>; for nfs:// URLs, when qemu-img can open it.</summary>
    public async Task<bool> ExistsAsync(string path, CancellationToken cancellationToken = default)
    {
        var location = ImageLocation.Parse(path);
        if (!location.IsNfsUrl)
        {
            return await LocalFileTypeAsync(location, cancellationToken).ConfigureAwait(false) is not null;
        }

        var result = await StorageCommands.RunAsync(Host, InfoCommand(location, forceShare: true), cancellationToken).ConfigureAwait(false);
        if (result.Succeeded)
        {
            return true;
        }

        if (StorageCommands.IsNotFound(result.StandardError))
        {
            return false;
        }

        throw StorageCommands.ImageError(result, location, "reading the image");
    }

    // ---------------------------------------------------------------- create

    /// <summary>Probes the host (file system, existing image, locks) and decides the commands that create the image.</summary>
    public async Task<CreateDiskImagePlan> PlanCreateAsync(string path, long size, DiskImageFormat format, bool force = false, CancellationToken cancellationToken = default)
    {
        var location = ImageLocation.Parse(path);
        if (size <= 0)
        {
            throw new ArgumentException($"-Size must be positive; got {size} bytes for image '{path}'.", nameof(size));
        }

        var sizeText = size.ToString(CultureInfo.InvariantCulture);
        var steps = new List<PlannedCommand>();
        var notes = new List<string>();
        var target = $"[{Host.Name}] {location.Text}";

        if (location.IsNfsUrl)
        {
            var exists = await ExistsAsync(location.Text, cancellationToken).ConfigureAwait(false);
            if (exists && !force)
            {
                throw ImageExists(location);
            }

            if (exists)
            {
                // Over NFS, qemu-img create only truncates the file to the new size: old bytes would show through a raw image
                // (and a raw image would even be probed as the old format). Truncating to 0 first drops them.
                notes.Add($"'{location.Text}' exists and is replaced (-Force): it is truncated to 0 bytes first.");
                steps.Add(new PlannedCommand(Host.Name, StorageCommands.ImageCommand(Options, true, Options.CommandTimeout, "qemu-img", "create", "-q", "-f", "raw", location.Text, "0"), "truncate the existing file to 0 bytes"));
            }

            notes.Add($"The image is created through QEMU's libnfs driver from host '{Host.Name}'. No_COW cannot be set over NFS: on a btrfs server it comes from the " +
                      $"export directory's inherited attribute (chattr +C on the store, as Initialize-DiskStore does).");
            steps.Add(new PlannedCommand(Host.Name, StorageCommands.ImageCommand(Options, true, Options.CommandTimeout, "qemu-img", "create", "-q", "-f", format.ToQemuName(), location.Text, sizeText), "create the image"));
            return new CreateDiskImagePlan(target, steps, notes) { Location = location, Size = size, Format = format, ReplacesExisting = exists };
        }

        var fileSystem = await DirectoryFileSystemTypeAsync(location, cancellationToken).ConfigureAwait(false);
        var existing = await LocalFileTypeAsync(location, cancellationToken).ConfigureAwait(false);
        if (existing is not null && existing != "regular file" && existing != "regular empty file")
        {
            throw new ReplicaException(StorageErrorIds.ImageExists, ReplicaErrorCategory.ResourceExists,
                $"On host '{Host.Name}', '{location.Text}' exists and is a {existing}, not an image file; refusing to touch it.", Host.Name, location.Text);
        }

        if (existing is not null)
        {
            if (!force)
            {
                throw ImageExists(location);
            }

            var locks = await ImageLocks.ProbeAsync(Host, location.Text, cancellationToken).ConfigureAwait(false);
            if (locks.InUse)
            {
                throw ImageLocks.InUse(Host.Name, locks, "to replace it (-Force does not replace an image in use)");
            }

            // Replace, not rewrite: a fresh file is the only way to get No_COW on btrfs (chattr +C has no effect on a file with data).
            notes.Add($"'{location.Text}' exists and is replaced (-Force).");
            steps.Add(new PlannedCommand(Host.Name, new CommandSpec("rm", "-f", "--", location.Text) { Timeout = Options.CommandTimeout }, "remove the image it replaces"));
        }

        // dd with conv=excl creates the empty file atomically and fails if it exists: no silent overwrite, even in a race.
        steps.Add(new PlannedCommand(Host.Name, new CommandSpec("dd", "if=/dev/null", $"of={location.Text}", "conv=excl", "status=none") { Timeout = Options.CommandTimeout }, "create the empty file, failing if it exists"));
        var btrfs = fileSystem == "btrfs";
        if (btrfs)
        {
            notes.Add($"'{location.Directory}' is on btrfs: No_COW is set (chattr +C) on the empty file before qemu-img writes any data.");
            steps.Add(new PlannedCommand(Host.Name, new CommandSpec("chattr", "+C", location.Text) { Timeout = Options.CommandTimeout }, "set No_COW while the file is empty"));
        }
        else
        {
            notes.Add($"'{location.Directory}' is on {fileSystem}, not btrfs: No_COW does not apply.");
        }

        steps.Add(new PlannedCommand(Host.Name, new CommandSpec("qemu-img", "create", "-q", "-f", format.ToQemuName(), location.Text, sizeText) { Timeout = Options.CommandTimeout, ThrowOnFailure = false }, "write the image header"));
        return new CreateDiskImagePlan(target, steps, notes)
        {
            Location = location,
            Size = size,
            Format = format,
            FileSystemType = fileSystem,
            SetsNoCow = btrfs,
            ReplacesExisting = existing is not null,
        };
    }

    /// <summary>Runs a create plan; on failure removes what it created. Returns the new image (with NoCow verified by lsattr on btrfs).</summary>
    public async Task<DiskImage> CreateAsync(CreateDiskImagePlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var location = plan.Location;
        foreach (var note in plan.Notes)
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] {note}");
        }

        var createdFile = false;
        try
        {
            foreach (var step in plan.Steps)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var result = await StorageCommands.RunAsync(Host, step.Command, cancellationToken).ConfigureAwait(false);
                var program = StorageCommands.IsKillTimeoutWrapped(step.Command) ? step.Command.Arguments[4] : step.Command.Arguments[0];
                if (program == "dd")
                {
                    if (!result.Succeeded)
                    {
                        throw result.StandardError.Contains("File exists", StringComparison.Ordinal)
                            ? ImageExists(location)
                            : new CommandFailedException(result);
                    }

                    createdFile = true;
                }
                else if (program == "qemu-img" && !result.Succeeded)
                {
                    throw StorageCommands.ImageError(result, location, "creating the image");
                }
                else if (!result.Succeeded)
                {
                    throw new CommandFailedException(result);
                }
            }

            var image = await GetAsync(location.Text, cancellationToken).ConfigureAwait(false);
            if (plan.SetsNoCow)
            {
                if (image.NoCow != true)
                {
                    throw new ReplicaException(StorageErrorIds.NoCowNotSet, ReplicaErrorCategory.InvalidResult,
                        $"On host '{Host.Name}', the image '{location.Text}' was created on btrfs but lsattr does not show No_COW ('C') after qemu-img wrote it; the image was removed.",
                        Host.Name, location.Text);
                }

                OperationContext.Reporter.Verbose($"[{Host.Name}] No_COW is set on '{location.Text}' (lsattr shows 'C').");
            }

            return image;
        }
        catch when (createdFile)
        {
            await TryRemoveCreatedAsync(location).ConfigureAwait(false);
            throw;
        }
    }

    public async Task<DiskImage> CreateAsync(string path, long size, DiskImageFormat format, bool force = false, CancellationToken cancellationToken = default) =>
        await CreateAsync(await PlanCreateAsync(path, size, format, force, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);

    // ---------------------------------------------------------------- remove

    /// <summary>Probes the image (exists, in use) and decides how to remove it. nfs:// URLs cannot be removed through libnfs (see the error).</summary>
    public async Task<RemoveDiskImagePlan> PlanRemoveAsync(string path, bool force = false, CancellationToken cancellationToken = default)
    {
        var location = ImageLocation.Parse(path);
        if (location.IsNfsUrl)
        {
            throw new ReplicaException(StorageErrorIds.NfsRemoveUnsupported, ReplicaErrorCategory.NotInstalled,
                $"On host '{Host.Name}', '{location.Text}' cannot be removed through its nfs:// URL: libnfs (QEMU's NFS driver) has no remove command, and " +
                "libnfs-utils in Debian 12 has only nfs-cat, nfs-cp and nfs-ls. Remove it on the NFS server by its local path instead.",
                Host.Name, location.Text)
            {
                RecommendedAction = $"Run Remove-DiskImage with -HostName (or -Session) of the NFS server '{location.NfsServer}' and the image's path in the exported directory.",
            };
        }

        var type = await LocalFileTypeAsync(location, cancellationToken).ConfigureAwait(false);
        if (type is null)
        {
            throw new ReplicaException(StorageErrorIds.ImageNotFound, ReplicaErrorCategory.ObjectNotFound,
                $"On host '{Host.Name}', the image '{location.Text}' does not exist.", Host.Name, location.Text);
        }

        if (type != "regular file" && type != "regular empty file")
        {
            throw new ReplicaException(StorageErrorIds.NotAnImageFile, ReplicaErrorCategory.InvalidArgument,
                $"On host '{Host.Name}', '{location.Text}' is a {type}, not an image file; refusing to remove it.", Host.Name, location.Text);
        }

        var notes = new List<string>();
        var locks = await ImageLocks.ProbeAsync(Host, location.Text, cancellationToken).ConfigureAwait(false);
        var inUse = locks.InUse;
        if (inUse && !force)
        {
            throw ImageLocks.InUse(Host.Name, locks, "to remove it",
                "Stop or detach the VM (or qemu-nbd, qemu-storage-daemon) that has the image open first, or pass -Force to remove it anyway (the holder keeps writing to a deleted file).");
        }

        if (inUse)
        {
            notes.Add($"'{location.Text}' is in use ({locks.Describe()}) and is removed anyway (-Force).");
        }

        var steps = new[] { new PlannedCommand(Host.Name, new CommandSpec("rm", "-f", "--", location.Text) { Timeout = Options.CommandTimeout }, "delete the image") };
        return new RemoveDiskImagePlan($"[{Host.Name}] {location.Text}", steps, notes) { Location = location, InUse = inUse };
    }

    public async Task RemoveAsync(RemoveDiskImagePlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        foreach (var note in plan.Notes)
        {
            OperationContext.Reporter.Warning($"[{Host.Name}] {note}");
        }

        foreach (var step in plan.Steps)
        {
            await Host.RunAsync(step.Command, cancellationToken).ConfigureAwait(false);
        }
    }

    public async Task RemoveAsync(string path, bool force = false, CancellationToken cancellationToken = default) =>
        await RemoveAsync(await PlanRemoveAsync(path, force, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);

    // ---------------------------------------------------------------- helpers

    internal CommandSpec InfoCommand(ImageLocation location, bool forceShare)
    {
        var arguments = new List<string> { "qemu-img", "info", "--output=json" };
        if (forceShare)
        {
            arguments.Add("-U");
        }

        arguments.Add(location.Text);
        return StorageCommands.ImageCommand(Options, location.IsNfsUrl, Options.CommandTimeout, arguments.ToArray());
    }

    /// <summary>
    /// qemu-img info, after asking QEMU's image locks (<see cref="ImageLocks"/>) whether a running QEMU holds the image: if
    /// one does, the image is read with -U (force share) and a warning. nfs:// URLs carry no locks; for them (and for a
    /// holder that appears in between) qemu-img's own lock error is the sign.
    /// </summary>
    internal async Task<(QemuImgInfo Info, ImageLockState Locks)> ReadInfoAsync(ImageLocation location, bool allowForceShare, CancellationToken cancellationToken, bool quiet = false)
    {
        var locks = await ImageLocks.ProbeAsync(Host, location.Text, cancellationToken).ConfigureAwait(false);
        var forceShare = locks.InUse && allowForceShare;
        var result = await StorageCommands.RunAsync(Host, InfoCommand(location, forceShare), cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded && allowForceShare && !forceShare && StorageCommands.IsLockError(result.StandardError))
        {
            locks = new ImageLockState { Path = location.Text, Exists = true, Held = new[] { "write" } };
            result = await StorageCommands.RunAsync(Host, InfoCommand(location, forceShare: true), cancellationToken).ConfigureAwait(false);
        }

        if (locks.InUse && !quiet)
        {
            OperationContext.Reporter.Warning(
                $"On host '{Host.Name}', the image '{location.Text}' is in use ({locks.Describe()}); it was read with 'qemu-img info -U' (force share), so sizes and bitmaps may be stale.");
        }

        if (!result.Succeeded)
        {
            throw StorageCommands.ImageError(result, location, "reading the image");
        }

        return (QemuImgInfo.Parse(result.StandardOutput, $"'{location.Text}' on host '{Host.Name}'"), locks);
    }

    private DiskImage ToImage(ImageLocation location, QemuImgInfo info, ImageLockState locks, string? fileSystem, bool? noCow) => new()
    {
        Path = location.Text,
        Format = info.Format,
        VirtualSize = info.VirtualSize,
        ActualSize = info.ActualSize,
        ClusterSize = info.ClusterSize,
        BackingFile = info.BackingFile,
        BackingFormat = info.BackingFormat,
        DirtyBitmaps = info.DirtyBitmaps,
        DirtyFlag = info.DirtyFlag,
        InUse = locks.InUse,
        InUseBy = locks.InUse ? locks.Describe() : null,
        FileSystemType = fileSystem,
        NoCow = noCow,
        HostName = Session?.HostName ?? Host.Name,
        Session = Session,
    };

    /// <summary>stat -c %F of a local path: "regular file", "directory" ..., or null when it does not exist.</summary>
    private async Task<string?> LocalFileTypeAsync(ImageLocation location, CancellationToken cancellationToken)
    {
        var result = await StorageCommands.RunAsync(Host, new CommandSpec("stat", "-c", "%F", "--", location.Text) { Timeout = Options.CommandTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (result.Succeeded)
        {
            return result.StandardOutput.Trim();
        }

        if (result.StandardError.Contains("No such file or directory", StringComparison.Ordinal))
        {
            return null;
        }

        throw new CommandFailedException(result);
    }

    private async Task<string> DirectoryFileSystemTypeAsync(ImageLocation location, CancellationToken cancellationToken)
    {
        var directory = location.Directory!;
        var result = await StorageCommands.RunAsync(Host, new CommandSpec("stat", "-f", "-c", "%T", "--", directory) { Timeout = Options.CommandTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            if (result.StandardError.Contains("No such file or directory", StringComparison.Ordinal))
            {
                throw new ReplicaException(StorageErrorIds.DirectoryNotFound, ReplicaErrorCategory.ObjectNotFound,
                    $"On host '{Host.Name}', the directory '{directory}' for the image '{location.Text}' does not exist.", Host.Name, location.Text)
                {
                    RecommendedAction = "Create the directory (or a store with Initialize-DiskStore) first.",
                };
            }

            throw new CommandFailedException(result);
        }

        return result.StandardOutput.Trim();
    }

    /// <summary>The file system type of the file system holding <paramref name="path"/> (stat -f -c %T): "btrfs", "ext2/ext3", "tmpfs" ...</summary>
    internal async Task<string> FileSystemTypeAsync(string path, CancellationToken cancellationToken)
    {
        var result = await StorageCommands.RunCheckedAsync(Host, Options, cancellationToken, "stat", "-f", "-c", "%T", "--", path).ConfigureAwait(false);
        return result.StandardOutput.Trim();
    }

    /// <summary>lsattr -d: does the file (or directory) carry the No_COW attribute 'C'?</summary>
    internal async Task<bool> HasNoCowAsync(string path, CancellationToken cancellationToken)
    {
        var result = await StorageCommands.RunCheckedAsync(Host, Options, cancellationToken, "lsattr", "-d", path).ConfigureAwait(false);
        return LsattrHasNoCow(result.StandardOutput);
    }

    /// <summary>Parses lsattr output ("---------------C------ /path"): the attribute field is the first word.</summary>
    internal static bool LsattrHasNoCow(string lsattrOutput)
    {
        var field = lsattrOutput.TrimStart().Split(' ', 2)[0];
        return field.Contains('C', StringComparison.Ordinal);
    }

    private async Task TryRemoveCreatedAsync(ImageLocation location)
    {
        try
        {
            await Host.RunAsync(new CommandSpec("rm", "-f", "--", location.Text) { Timeout = Options.CommandTimeout, ThrowOnFailure = false }, CancellationToken.None).ConfigureAwait(false);
            OperationContext.Reporter.Verbose($"[{Host.Name}] removed the incomplete image '{location.Text}'.");
        }
        catch (ReplicaException ex)
        {
            OperationContext.Reporter.Warning($"On host '{Host.Name}', the incomplete image '{location.Text}' could not be removed: {ex.Message}");
        }
    }

    private ReplicaException ImageExists(ImageLocation location) =>
        new(StorageErrorIds.ImageExists, ReplicaErrorCategory.ResourceExists,
            $"On host '{Host.Name}', the image '{location.Text}' already exists; refusing to overwrite it (qemu-img create would, silently).", Host.Name, location.Text)
        {
            RecommendedAction = "Pass -Force to replace it, or choose another path.",
        };
}
