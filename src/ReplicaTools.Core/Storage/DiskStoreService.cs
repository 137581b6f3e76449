using System.Globalization;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Storage;

/// <summary>The plan of Checkpoint-DiskStore.</summary>
public sealed class CheckpointPlan : StoragePlan
{
    internal CheckpointPlan(string target, IReadOnlyList<PlannedCommand> steps)
        : base(target, steps)
    {
    }

    public required string StorePath { get; init; }

    public required string CheckpointPath { get; init; }
}

/// <summary>
/// btrfs stores for disk images: a subvolume with No_COW (so images do not fragment under random writes), read-only
/// timestamped snapshots ("checkpoints") kept in the sibling directory "&lt;store&gt;.checkpoints" so that they are
/// never nested inside the store (a snapshot of the store would otherwise contain empty placeholders of older ones).
/// </summary>
public sealed class DiskStoreService
{
    public const string CheckpointDirectorySuffix = ".checkpoints";

    public DiskStoreService(IReplicaHost host, ReplicaSession? session = null, StorageOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(host);
        Host = host;
        Session = session;
        Options = options ?? StorageOptions.Default;
    }

    public static DiskStoreService For(ReplicaSession session, StorageOptions? options = null) => new(session.Host, session, options);

    public IReplicaHost Host { get; }

    public ReplicaSession? Session { get; }

    public StorageOptions Options { get; }

    private string HostName => Session?.HostName ?? Host.Name;

    /// <summary>"/srv/images" → "/srv/images.checkpoints".</summary>
    public static string DefaultCheckpointDirectory(string storePath) => NormalizePath(storePath, "Path") + CheckpointDirectorySuffix;

    /// <summary>The checkpoint name for a UTC instant: 20250131T142501.123Z (sorts by time, no ':' in it).</summary>
    public static string CheckpointName(DateTimeOffset instant) =>
        instant.UtcDateTime.ToString("yyyyMMdd'T'HHmmss'.'fff'Z'", CultureInfo.InvariantCulture);

    // ---------------------------------------------------------------- initialize / get

    public async Task<StoragePlan> PlanInitializeAsync(string path, CancellationToken cancellationToken = default)
    {
        path = NormalizePath(path, "Path");
        var parent = Parent(path);
        await RequireBtrfsAsync(parent, path, cancellationToken).ConfigureAwait(false);
        var existing = await FileTypeAsync(path, cancellationToken).ConfigureAwait(false);
        if (existing is not null)
        {
            var isSubvolume = existing == "directory" && await TryShowAsync(path, cancellationToken).ConfigureAwait(false) is not null;
            throw new ReplicaException(StorageErrorIds.StoreExists, ReplicaErrorCategory.ResourceExists,
                $"On host '{Host.Name}', '{path}' already exists ({(isSubvolume ? "a btrfs subvolume" : existing)}); Initialize-DiskStore creates a new store only.",
                Host.Name, path)
            {
                RecommendedAction = isSubvolume ? "Use the existing store as it is, or choose another path." : "Choose a path that does not exist yet.",
            };
        }

        return new StoragePlan($"[{Host.Name}] {path}", new[]
        {
            new PlannedCommand(Host.Name, new CommandSpec("btrfs", "subvolume", "create", path) { Timeout = Options.CommandTimeout }, "create the subvolume"),
            new PlannedCommand(Host.Name, new CommandSpec("chattr", "+C", path) { Timeout = Options.CommandTimeout }, "set No_COW, inherited by the images created in it"),
        });
    }

    /// <summary>Creates the subvolume and sets No_COW on it (verified with lsattr); undoes the subvolume if a later step fails.</summary>
    public async Task<DiskStore> InitializeAsync(StoragePlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var path = plan.Steps[0].Command.Arguments[^1];
        await Host.RunAsync(plan.Steps[0].Command, cancellationToken).ConfigureAwait(false);
        try
        {
            foreach (var step in plan.Steps.Skip(1))
            {
                await Host.RunAsync(step.Command, cancellationToken).ConfigureAwait(false);
            }

            var store = await GetAsync(path, cancellationToken).ConfigureAwait(false);
            if (!store.NoCow)
            {
                throw new ReplicaException(StorageErrorIds.NoCowNotSet, ReplicaErrorCategory.InvalidResult,
                    $"On host '{Host.Name}', chattr +C succeeded on '{path}' but lsattr does not show No_COW ('C').", Host.Name, path);
            }

            return store;
        }
        catch
        {
            await Host.RunAsync(new CommandSpec("btrfs", "subvolume", "delete", path) { Timeout = Options.CommandTimeout, ThrowOnFailure = false }, CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    public async Task<DiskStore> InitializeAsync(string path, CancellationToken cancellationToken = default) =>
        await InitializeAsync(await PlanInitializeAsync(path, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);

    /// <summary>The store at <paramref name="path"/>: a btrfs subvolume (any subvolume qualifies; NoCow tells whether it has No_COW).</summary>
    public async Task<DiskStore> GetAsync(string path, CancellationToken cancellationToken = default)
    {
        path = NormalizePath(path, "Path");
        await RequireBtrfsAsync(path, path, cancellationToken).ConfigureAwait(false);
        var info = await TryShowAsync(path, cancellationToken).ConfigureAwait(false)
            ?? throw new ReplicaException(StorageErrorIds.StoreNotFound, ReplicaErrorCategory.ObjectNotFound,
                $"On host '{Host.Name}', '{path}' is not a btrfs subvolume, so it is not a disk store.", Host.Name, path)
            {
                RecommendedAction = "Create a store with Initialize-DiskStore.",
            };
        var attributes = await StorageCommands.RunCheckedAsync(Host, Options, cancellationToken, "lsattr", "-d", path).ConfigureAwait(false);
        return new DiskStore
        {
            Path = path,
            HostName = HostName,
            Session = Session,
            SubvolumeId = info.SubvolumeId,
            Uuid = info.Uuid,
            NoCow = DiskImageService.LsattrHasNoCow(attributes.StandardOutput),
            CheckpointDirectory = path + CheckpointDirectorySuffix,
            CreatedAt = info.CreatedAt,
        };
    }

    // ---------------------------------------------------------------- checkpoints

    public async Task<CheckpointPlan> PlanCheckpointAsync(string storePath, string? checkpointDirectory = null, DateTimeOffset? instant = null, CancellationToken cancellationToken = default)
    {
        var store = await GetAsync(storePath, cancellationToken).ConfigureAwait(false);
        var directory = checkpointDirectory is null ? store.CheckpointDirectory : NormalizePath(checkpointDirectory, "CheckpointDirectory");
        if (directory == store.Path || directory.StartsWith(store.Path + "/", StringComparison.Ordinal))
        {
            throw new ArgumentException($"-CheckpointDirectory '{directory}' is inside the store '{store.Path}'; checkpoints must live outside it (default: '{store.CheckpointDirectory}').", nameof(checkpointDirectory));
        }

        // The snapshot must land on the store's btrfs file system: probe the directory (or, before its first use, its parent).
        var probe = await FileTypeAsync(directory, cancellationToken).ConfigureAwait(false) == "directory" ? directory : Parent(directory);
        try
        {
            await RequireBtrfsAsync(probe, directory, cancellationToken).ConfigureAwait(false);
        }
        catch (ReplicaException ex) when (ex.ErrorId == StorageErrorIds.NotBtrfs)
        {
            throw CheckpointNotOnStoreFileSystem(directory, store.Path);
        }

        var checkpointPath = directory + "/" + CheckpointName(instant ?? DateTimeOffset.UtcNow);
        if (await FileTypeAsync(checkpointPath, cancellationToken).ConfigureAwait(false) is not null)
        {
            throw new ReplicaException(StorageErrorIds.CheckpointExists, ReplicaErrorCategory.ResourceExists,
                $"On host '{Host.Name}', the checkpoint '{checkpointPath}' already exists.", Host.Name, checkpointPath);
        }

        return new CheckpointPlan($"[{Host.Name}] {store.Path}", new[]
        {
            new PlannedCommand(Host.Name, new CommandSpec("mkdir", "-p", "--", directory) { Timeout = Options.CommandTimeout }, "create the checkpoint directory"),
            new PlannedCommand(Host.Name, new CommandSpec("btrfs", "subvolume", "snapshot", "-r", store.Path, checkpointPath) { Timeout = Options.CommandTimeout, ThrowOnFailure = false }, "take the read-only snapshot"),
        })
        {
            StorePath = store.Path,
            CheckpointPath = checkpointPath,
        };
    }

    /// <summary>Takes the read-only snapshot. It holds the store's files as of that instant (crash-consistent for images a VM is writing).</summary>
    public async Task<DiskStoreCheckpoint> CheckpointAsync(CheckpointPlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        foreach (var step in plan.Steps)
        {
            var result = await Host.RunAsync(step.Command, cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded)
            {
                if (result.StandardError.Contains("cross-device", StringComparison.OrdinalIgnoreCase) || result.StandardError.Contains("not a btrfs", StringComparison.OrdinalIgnoreCase))
                {
                    throw CheckpointNotOnStoreFileSystem(Parent(plan.CheckpointPath), plan.StorePath);
                }

                throw new CommandFailedException(result);
            }
        }

        return await GetCheckpointAsync(plan.CheckpointPath, plan.StorePath, cancellationToken).ConfigureAwait(false);
    }

    public async Task<DiskStoreCheckpoint> CheckpointAsync(string storePath, string? checkpointDirectory = null, CancellationToken cancellationToken = default) =>
        await CheckpointAsync(await PlanCheckpointAsync(storePath, checkpointDirectory, null, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);

    /// <summary>The checkpoints of a store: subvolumes in its checkpoint directory that are snapshots of it, oldest first.</summary>
    public async Task<IReadOnlyList<DiskStoreCheckpoint>> GetCheckpointsAsync(string storePath, string? checkpointDirectory = null, CancellationToken cancellationToken = default)
    {
        var store = await GetAsync(storePath, cancellationToken).ConfigureAwait(false);
        var directory = checkpointDirectory is null ? store.CheckpointDirectory : NormalizePath(checkpointDirectory, "CheckpointDirectory");
        if (await FileTypeAsync(directory, cancellationToken).ConfigureAwait(false) != "directory")
        {
            return Array.Empty<DiskStoreCheckpoint>();
        }

        var listing = await StorageCommands.RunCheckedAsync(Host, Options, cancellationToken, "find", directory, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-printf", "%f\\0").ConfigureAwait(false);
        var checkpoints = new List<DiskStoreCheckpoint>();
        foreach (var name in listing.StandardOutput.Split('\0', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal))
        {
            var path = directory + "/" + name;
            var info = await TryShowAsync(path, cancellationToken).ConfigureAwait(false);
            if (info is null || info.ParentUuid is null || info.ParentUuid != store.Uuid)
            {
                OperationContext.Reporter.Verbose($"[{Host.Name}] '{path}' is not a snapshot of '{store.Path}'; skipped.");
                continue;
            }

            checkpoints.Add(ToCheckpoint(path, store.Path, info));
        }

        return checkpoints.OrderBy(c => c.CreatedAt).ThenBy(c => c.Name, StringComparer.Ordinal).ToArray();
    }

    public async Task<DiskStoreCheckpoint> GetCheckpointAsync(string checkpointPath, string? storePath = null, CancellationToken cancellationToken = default)
    {
        checkpointPath = NormalizePath(checkpointPath, "Path");
        var info = await TryShowAsync(checkpointPath, cancellationToken).ConfigureAwait(false)
            ?? throw new ReplicaException(StorageErrorIds.CheckpointNotFound, ReplicaErrorCategory.ObjectNotFound,
                $"On host '{Host.Name}', '{checkpointPath}' is not a btrfs subvolume (no such checkpoint).", Host.Name, checkpointPath);
        return ToCheckpoint(checkpointPath, storePath ?? GuessStorePath(checkpointPath), info);
    }

    public async Task<StoragePlan> PlanRemoveCheckpointAsync(string checkpointPath, CancellationToken cancellationToken = default)
    {
        var checkpoint = await GetCheckpointAsync(checkpointPath, null, cancellationToken).ConfigureAwait(false);
        if (!checkpoint.ReadOnly || checkpoint.ParentUuid is null)
        {
            throw new ReplicaException(StorageErrorIds.NotACheckpoint, ReplicaErrorCategory.InvalidArgument,
                $"On host '{Host.Name}', '{checkpoint.Path}' is a {(checkpoint.ReadOnly ? string.Empty : "writable ")}subvolume{(checkpoint.ParentUuid is null ? " that is not a snapshot" : string.Empty)}, not a checkpoint; refusing to delete it.",
                Host.Name, checkpoint.Path);
        }

        // A VM started on a checkpoint's image (Start-ReplicaVM on a snapshot) would lose its disk with the subvolume.
        var held = (await ImageLocks.ProbeManyAsync(Host, new[] { checkpoint.Path }, cancellationToken).ConfigureAwait(false)).FirstOrDefault(l => l.InUse);
        if (held is not null)
        {
            throw ImageLocks.InUse(Host.Name, held, $"to delete the checkpoint '{checkpoint.Path}' that holds it");
        }

        return new StoragePlan($"[{Host.Name}] {checkpoint.Path}", new[]
        {
            new PlannedCommand(Host.Name, new CommandSpec("btrfs", "subvolume", "delete", checkpoint.Path) { Timeout = Options.CommandTimeout }, "delete the checkpoint"),
        });
    }

    public async Task RemoveCheckpointAsync(StoragePlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        foreach (var step in plan.Steps)
        {
            await Host.RunAsync(step.Command, cancellationToken).ConfigureAwait(false);
        }
    }

    public async Task RemoveCheckpointAsync(string checkpointPath, CancellationToken cancellationToken = default) =>
        await RemoveCheckpointAsync(await PlanRemoveCheckpointAsync(checkpointPath, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);

    // ---------------------------------------------------------------- helpers

    private DiskStoreCheckpoint ToCheckpoint(string path, string storePath, BtrfsSubvolumeInfo info) => new()
    {
        Name = System.IO.Path.GetFileName(path),
        Path = path,
        StorePath = storePath,
        HostName = HostName,
        Session = Session,
        SubvolumeId = info.SubvolumeId,
        Uuid = info.Uuid,
        ParentUuid = info.ParentUuid,
        ReadOnly = info.ReadOnly,
        Generation = info.Generation,
        CreatedAt = info.CreatedAt,
    };

    private ReplicaException CheckpointNotOnStoreFileSystem(string directory, string storePath) =>
        new(StorageErrorIds.NotBtrfs, ReplicaErrorCategory.InvalidArgument,
            $"On host '{Host.Name}', the checkpoint directory '{directory}' is not on the btrfs file system of the store '{storePath}'; a snapshot cannot leave its file system.",
            Host.Name, directory)
        {
            RecommendedAction = "Give -CheckpointDirectory on the store's file system. A store that is mounted by itself (mount -o subvol=...) has its sibling on another file system: " +
                                "checkpoint it through a mount of the whole btrfs file system instead.",
        };

    /// <summary>"/srv/images.checkpoints/2025..." → "/srv/images" (the default layout).</summary>
    private static string GuessStorePath(string checkpointPath)
    {
        var directory = Parent(checkpointPath);
        return directory.EndsWith(CheckpointDirectorySuffix, StringComparison.Ordinal) ? directory[..^CheckpointDirectorySuffix.Length] : directory;
    }

    private async Task RequireBtrfsAsync(string directory, string forPath, CancellationToken cancellationToken)
    {
        var result = await StorageCommands.RunAsync(Host, new CommandSpec("stat", "-f", "-c", "%T", "--", directory) { Timeout = Options.CommandTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            if (result.StandardError.Contains("No such file or directory", StringComparison.Ordinal))
            {
                throw new ReplicaException(forPath == directory ? StorageErrorIds.StoreNotFound : StorageErrorIds.DirectoryNotFound, ReplicaErrorCategory.ObjectNotFound,
                    $"On host '{Host.Name}', '{directory}' does not exist.", Host.Name, forPath);
            }

            throw new CommandFailedException(result);
        }

        var type = result.StandardOutput.Trim();
        if (type != "btrfs")
        {
            throw new ReplicaException(StorageErrorIds.NotBtrfs, ReplicaErrorCategory.InvalidArgument,
                $"On host '{Host.Name}', '{directory}' is on a {type} file system, not btrfs; a disk store ('{forPath}') needs btrfs (subvolumes, snapshots, No_COW).",
                Host.Name, forPath)
            {
                RecommendedAction = "Choose a path on a btrfs file system (stat -f -c %T PATH prints 'btrfs').",
            };
        }
    }

    private async Task<BtrfsSubvolumeInfo?> TryShowAsync(string path, CancellationToken cancellationToken)
    {
        var result = await StorageCommands.RunAsync(Host, new CommandSpec("btrfs", "subvolume", "show", path) { Timeout = Options.CommandTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            if (result.StandardError.Contains("Not a Btrfs subvolume", StringComparison.OrdinalIgnoreCase)
                || result.StandardError.Contains("No such file", StringComparison.OrdinalIgnoreCase)
                || result.StandardError.Contains("not a btrfs", StringComparison.OrdinalIgnoreCase)
                || result.StandardError.Contains("cannot find", StringComparison.OrdinalIgnoreCase))
            {
                return null;
            }

            throw new CommandFailedException(result);
        }

        try
        {
            return BtrfsSubvolumeInfo.Parse(result.StandardOutput);
        }
        catch (FormatException ex)
        {
            throw new ReplicaException("BtrfsOutputUnreadable", ReplicaErrorCategory.InvalidResult,
                $"On host '{Host.Name}', the output of 'btrfs subvolume show {path}' could not be read: {ex.Message}", Host.Name, path, ex);
        }
    }

    private async Task<string?> FileTypeAsync(string path, CancellationToken cancellationToken)
    {
        var result = await StorageCommands.RunAsync(Host, new CommandSpec("stat", "-c", "%F", "--", path) { Timeout = Options.CommandTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (result.Succeeded)
        {
            return result.StandardOutput.Trim();
        }

        return result.StandardError.Contains("No such file or directory", StringComparison.Ordinal) ? null : throw new CommandFailedException(result);
    }

    private static string NormalizePath(string path, string parameter)
    {
        if (string.IsNullOrWhiteSpace(path) || !path.StartsWith('/') || path.Any(char.IsControl))
        {
            throw new ArgumentException($"-{parameter} '{path}' is not an absolute path on the host.", parameter);
        }

        var trimmed = path.TrimEnd('/');
        if (trimmed.Length == 0)
        {
            throw new ArgumentException($"-{parameter} cannot be '/'.", parameter);
        }

        return trimmed;
    }

    private static string Parent(string path)
    {
        var slash = path.LastIndexOf('/');
        return slash <= 0 ? "/" : path[..slash];
    }
}
