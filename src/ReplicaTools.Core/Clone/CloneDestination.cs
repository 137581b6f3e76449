using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

public enum DestinationKind
{
    Missing,
    File,
    BlockDevice,
    Other,
}

/// <summary>What stat(1) says about a path on the destination host.</summary>
public sealed record DestinationStat(DestinationKind Kind, long Size, long Inode, string ModifiedNs)
{
    public static readonly DestinationStat Missing = new(DestinationKind.Missing, 0, 0, string.Empty);

    /// <summary>True when the file is the one a sidecar recorded: same inode, size and modification time (ns).</summary>
    public bool SameFileAs(SidecarFile? recorded) =>
        recorded is not null && Kind == DestinationKind.File && Inode == recorded.Inode && Size == recorded.Size && ModifiedNs == recorded.ModifiedNs;
}

/// <summary>
/// The metadata file kept next to a clone (DEST.rtclone.json; for a block device under /var/lib/replicatools/clones/).
/// It records what the clone corresponds to so an incremental run can prove the destination is the state of the
/// checkpoint it starts from; anything that does not match makes the run fall back to a full clone.
/// </summary>
public sealed class CloneSidecar
{
    public const string CurrentFormat = "replicatools-clone/1";

    public string Format { get; set; } = CurrentFormat;

    /// <summary>"complete": the file at the destination path is the clone at <see cref="Checkpoint"/>. "incomplete": it is not
    /// (a run is writing it, or one was interrupted); <see cref="ResumeFrom"/> says whether an incremental can still finish it.</summary>
    public string State { get; set; } = "complete";

    /// <summary>The destination's chain id: its checkpoints are named rtclone-CHAIN-GENERATION.</summary>
    public string Chain { get; set; } = string.Empty;

    public long Generation { get; set; }

    /// <summary>The checkpoint (libvirt) or bitmap (QMP) that was created at the clone's point in time; null for raw disks.</summary>
    public string? Checkpoint { get; set; }

    /// <summary>libvirt: the checkpoint's XML (virsh checkpoint-dumpxml --no-domain), to redefine it on a transient domain that lost it.</summary>
    public string? CheckpointXml { get; set; }

    /// <summary>For an interrupted incremental that patched the clone in place: the checkpoint it started from. An incremental
    /// from that checkpoint (whose bitmap covers every block the interrupted run may have written) completes the clone.</summary>
    public string? ResumeFrom { get; set; }

    public SidecarSource Source { get; set; } = new();

    public SidecarFile? File { get; set; }

    public string? Checksum { get; set; }

    public string Mode { get; set; } = "Full";

    public DateTimeOffset UpdatedAt { get; set; }

    [JsonIgnore]
    public bool IsComplete => State == "complete";

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string Serialize() => JsonSerializer.Serialize(this, Json);

    public static CloneSidecar? Parse(string text)
    {
        try
        {
            var sidecar = JsonSerializer.Deserialize<CloneSidecar>(text, Json);
            return sidecar?.Format == CurrentFormat ? sidecar : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

/// <summary>The source a clone was taken from.</summary>
public sealed class SidecarSource
{
    public string Host { get; set; } = string.Empty;

    public string Backend { get; set; } = string.Empty;

    public string VM { get; set; } = string.Empty;

    public string Drive { get; set; } = string.Empty;

    public string? Image { get; set; }

    public long VirtualSize { get; set; }
}

/// <summary>The clone file as stat(1) saw it when the sidecar was written.</summary>
public sealed class SidecarFile
{
    public long Size { get; set; }

    public long Inode { get; set; }

    public string ModifiedNs { get; set; } = string.Empty;
}

/// <summary>The clone's path on the destination host and the operations a run needs there.</summary>
public sealed class CloneDestination
{
    public const string PartialSuffix = ".rtclone-partial";
    public const string SidecarSuffix = ".rtclone.json";
    public const string BlockDeviceStateDirectory = "/var/lib/replicatools/clones";

    public CloneDestination(IReplicaHost host, string path)
    {
        Host = host;
        Path = path;
    }

    public IReplicaHost Host { get; }

    public string Path { get; }

    /// <summary>Where a file clone is written until it is complete (and verified); renamed to <see cref="Path"/> only then.</summary>
    public string PartialPath => Path + PartialSuffix;

    public bool IsBlockDevice { get; private set; }

    public string SidecarPath => IsBlockDevice
        ? $"{BlockDeviceStateDirectory}/{Path.Trim('/').Replace('/', '_')}-{CloneNames.Hash(Path)}.json"
        : Path + SidecarSuffix;

    /// <summary>Looks at the destination: a block device is written in place, anything else must be a regular file or absent.</summary>
    public async Task<DestinationStat> InspectAsync(CancellationToken cancellationToken)
    {
        var stat = await StatAsync(Path, cancellationToken).ConfigureAwait(false);
        IsBlockDevice = stat.Kind == DestinationKind.BlockDevice;
        if (stat.Kind == DestinationKind.Other)
        {
            throw new ReplicaException("DestinationNotAFile", ReplicaErrorCategory.InvalidArgument,
                $"On host '{Host.Name}', -Destination '{Path}' exists and is neither a regular file nor a block device.", Host.Name, Path);
        }

        if (stat.Kind == DestinationKind.Missing)
        {
            var parent = System.IO.Path.GetDirectoryName(Path) ?? "/";
            var dir = await Host.RunAsync(new CommandSpec("test", "-d", parent) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
            if (dir.ExitCode != 0)
            {
                throw new ReplicaException("DestinationDirectoryMissing", ReplicaErrorCategory.ObjectNotFound,
                    $"On host '{Host.Name}', the directory '{parent}' of -Destination '{Path}' does not exist.", Host.Name, Path)
                {
                    RecommendedAction = "Create the directory first (or fix the path).",
                };
            }
        }

        return stat;
    }

    public async Task<DestinationStat> StatAsync(string path, CancellationToken cancellationToken)
    {
        var result = await Host.RunAsync(new CommandSpec("stat", "-L", "--format=%F|%s|%i|%.9Y", "--", path) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            if (result.StandardError.Contains("No such file", StringComparison.Ordinal))
            {
                return DestinationStat.Missing;
            }

            throw new CommandFailedException(result);
        }

        var fields = result.StandardOutput.Trim().Split('|');
        var kind = fields[0] switch
        {
            "regular file" or "regular empty file" => DestinationKind.File,
            "block special file" => DestinationKind.BlockDevice,
            _ => DestinationKind.Other,
        };
        var size = long.Parse(fields[1], CultureInfo.InvariantCulture);
        if (kind == DestinationKind.BlockDevice)
        {
            var blockSize = await Host.RunAsync(new CommandSpec("blockdev", "--getsize64", path) { Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
            size = long.Parse(blockSize.StandardOutput.Trim(), CultureInfo.InvariantCulture);
        }

        return new DestinationStat(kind, size, long.Parse(fields[2], CultureInfo.InvariantCulture), fields[3]);
    }

    public async Task<CloneSidecar?> ReadSidecarAsync(CancellationToken cancellationToken)
    {
        var result = await Host.RunAsync(new CommandSpec("cat", "--", SidecarPath) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            return null;
        }

        var sidecar = CloneSidecar.Parse(result.StandardOutput);
        if (sidecar is null)
        {
            OperationContext.Reporter.Warning($"On host '{Host.Name}', the clone metadata '{SidecarPath}' is unreadable or of an unknown format; it is ignored.");
        }

        return sidecar;
    }

    /// <summary>Writes the sidecar atomically (temporary file, fsync, rename).</summary>
    public async Task WriteSidecarAsync(CloneSidecar sidecar, CancellationToken cancellationToken)
    {
        sidecar.UpdatedAt = DateTimeOffset.Now;
        await Host.RunAsync(WriteSidecarCommand(SidecarPath, Encoding.UTF8.GetBytes(sidecar.Serialize())), cancellationToken).ConfigureAwait(false);
    }

    public Task DeleteSidecarAsync(CancellationToken cancellationToken) => DeleteAsync(SidecarPath, cancellationToken);

    /// <summary>cp --reflink=always: an instant copy on btrfs/XFS; false where the filesystem cannot share extents.</summary>
    public async Task<bool> TryReflinkAsync(string from, string to, CancellationToken cancellationToken)
    {
        var result = await Host.RunAsync(HostFiles.Reflink(from, to, required: true, TimeSpan.FromMinutes(5)), cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            await DeleteAsync(to, CancellationToken.None).ConfigureAwait(false);
        }

        return result.ExitCode == 0;
    }

    /// <summary>rename(2) on the same filesystem, flushed before and after: atomic, so the path holds either the old or the new file.</summary>
    public Task MoveAsync(string from, string to, CancellationToken cancellationToken) =>
        Host.RunAsync(MoveCommand(from, to), cancellationToken);

    /// <summary>The command <see cref="MoveAsync"/> runs (for plans).</summary>
    public static CommandSpec MoveCommand(string from, string to) => HostFiles.Promote(from, to, timeout: TimeSpan.FromMinutes(10));

    /// <summary>The command <see cref="WriteSidecarAsync"/> runs (for plans: <paramref name="content"/> null).</summary>
    public static CommandSpec WriteSidecarCommand(string sidecarPath, byte[]? content) =>
        HostFiles.WriteAtomically(sidecarPath, content, isPrivate: false, createDirectory: true, TimeSpan.FromMinutes(2));

    public Task DeleteAsync(string path, CancellationToken cancellationToken) =>
        Host.RunAsync(new CommandSpec("rm", "-f", "--", path) { Timeout = TimeSpan.FromMinutes(2) }, cancellationToken);

    /// <summary>Makes a new file the size of the source (sparse), for a full copy into a fresh partial file.</summary>
    public Task CreateSparseAsync(string path, long size, CancellationToken cancellationToken) =>
        Host.RunAsync(new CommandSpec("truncate", "-s", size.ToString(CultureInfo.InvariantCulture), "--", path) { Timeout = TimeSpan.FromMinutes(2) }, cancellationToken);
}
