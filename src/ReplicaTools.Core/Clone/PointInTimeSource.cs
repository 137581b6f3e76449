using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>A running point-in-time export: where the destination reads it and, for an incremental, which meta context marks the dirty blocks.</summary>
public sealed record PointInTimeExport(NbdExportAddress Address, string? DirtyMetaContext, long Size);

/// <summary>What <see cref="PointInTimeSource.StartAsync"/> starts: the run, the checkpoint rotation and where the export listens.</summary>
public sealed class PointInTimeRequest
{
    /// <summary>Names the run's objects (jobs, nodes, exports, scratch files): <see cref="CloneNames.NewRunId"/>.</summary>
    public required string RunId { get; init; }

    /// <summary>The checkpoint to create atomically with the point in time; null for a disk that cannot hold one (raw).</summary>
    public string? NewCheckpoint { get; init; }

    /// <summary>The checkpoint an incremental starts from (its dirty blocks are exported); null for a full clone.</summary>
    public string? IncrementalFrom { get; init; }

    /// <summary>The address the NBD export listens on (and the destination connects to).</summary>
    public required string Address { get; init; }

    /// <summary>The NBD ports to pick from (random order, retried while taken).</summary>
    public (int First, int Last) Ports { get; init; } = (10900, 11899);

    /// <summary>The same request for a full clone (the incremental was refused), under a new run id.</summary>
    public PointInTimeRequest AsFull() => new() { RunId = CloneNames.NewRunId(), NewCheckpoint = NewCheckpoint, Address = Address, Ports = Ports };
}

/// <summary>An incremental cannot start from the given checkpoint (missing, inconsistent, refused by QEMU or libvirt); the clone falls back to full.</summary>
public sealed class IncrementalUnavailableException(string reason, Exception? inner = null) : Exception(reason, inner)
{
    public string Reason { get; } = reason;
}

/// <summary>
/// The VM side of a clone: a frozen, read-only view of one disk exported over NBD while the guest keeps running, plus
/// the checkpoint (dirty bitmap) bookkeeping. Two implementations: <see cref="QmpPointInTime"/> (bare QEMU: image
/// fleecing over QMP) and <see cref="LibvirtPointInTime"/> (libvirt pull-mode backup with checkpoints).
/// </summary>
public abstract class PointInTimeSource : IAsyncDisposable
{
    protected PointInTimeSource(VirtualMachine vm, string scratchDirectory)
    {
        Vm = vm;
        ScratchDirectory = scratchDirectory.TrimEnd('/');
        VmKey = CloneNames.VmKey(vm);
    }

    public VirtualMachine Vm { get; }

    public IReplicaHost Host => Vm.Host;

    public string ScratchDirectory { get; }

    protected string VmKey { get; }

    public VmDisk Disk { get; protected set; } = null!;

    public long VirtualSize { get; protected set; }

    /// <summary>Checkpoints need persistent dirty bitmaps, which only qcow2 images store.</summary>
    public bool SupportsCheckpoints => string.Equals(Disk.Format, "qcow2", StringComparison.OrdinalIgnoreCase);

    /// <summary>The checkpoint this run created (null before Start, or for raw disks).</summary>
    public string? NewCheckpoint { get; protected set; }

    /// <summary>Checks the VM runs and finds the disk.</summary>
    public abstract Task OpenAsync(string? drive, CancellationToken cancellationToken);

    /// <summary>State an interrupted run left: jobs, exports, nodes, scratch files, an unfinished checkpoint rotation of <paramref name="chain"/>.</summary>
    public abstract Task<IReadOnlyList<StaleFinding>> FindStaleStateAsync(string? chain, CancellationToken cancellationToken);

    /// <summary>Ends stale exports and jobs (merging the point-in-time state back, never discarding guest writes), settles an
    /// unfinished rotation (keeping the checkpoint <paramref name="keep"/> the destination's metadata names) and deletes scratch files.</summary>
    public abstract Task RepairAsync(IReadOnlyList<StaleFinding> findings, string? chain, string? keep, CancellationToken cancellationToken);

    /// <summary>Checkpoints of this disk (all, or of one chain).</summary>
    public abstract Task<IReadOnlyList<DiskCheckpoint>> GetCheckpointsAsync(CancellationToken cancellationToken);

    /// <summary>Why an incremental cannot start from <paramref name="checkpoint"/>, or null when it can.</summary>
    public abstract Task<string?> CheckpointProblemAsync(string checkpoint, string? savedXml, CancellationToken cancellationToken);

    /// <summary>Freezes the disk, creates <paramref name="newCheckpoint"/> atomically with the point in time, exports read-only over NBD.</summary>
    public abstract Task<PointInTimeExport> StartAsync(PointInTimeRequest request, CancellationToken cancellationToken);

    /// <summary>Null while the point-in-time export is intact; otherwise what happened to it (the copy is then invalid).</summary>
    public abstract Task<string?> CheckAliveAsync(CancellationToken cancellationToken);

    /// <summary>Ends the export and releases the point in time; safe to call more than once and after failures.</summary>
    public abstract Task StopAsync(CancellationToken cancellationToken);

    /// <summary>After success: removes the chain's other checkpoints, so only <see cref="NewCheckpoint"/> remains.</summary>
    public abstract Task CommitCheckpointsAsync(string chain, CancellationToken cancellationToken);

    /// <summary>After failure: removes the new checkpoint so the previous one (still covering every write) stays usable.</summary>
    public abstract Task RollbackCheckpointAsync(CancellationToken cancellationToken);

    /// <summary>libvirt: the checkpoint's XML for the destination's sidecar; null elsewhere.</summary>
    public virtual Task<string?> GetCheckpointXmlAsync(string checkpoint, CancellationToken cancellationToken) => Task.FromResult<string?>(null);

    /// <summary>Removes one checkpoint (Remove-DiskCheckpoint).</summary>
    public abstract Task RemoveCheckpointAsync(string name, CancellationToken cancellationToken);

    /// <summary>
    /// What <see cref="StartAsync"/> runs on the VM host, for -WhatIf; nothing is contacted. What is decided at run time
    /// appears as a placeholder: RUN (the run id), PORT, SIZE, NODE(drive), BASE (the checkpoint an incremental starts from),
    /// CHECKPOINT (the new one).
    /// </summary>
    public abstract IReadOnlyList<PlannedCommand> PlanStart(string? drive, string address, bool incremental, bool createsCheckpoint);

    /// <summary>What <see cref="StopAsync"/> runs on the VM host, for -WhatIf (placeholders as in <see cref="PlanStart"/>).</summary>
    public abstract IReadOnlyList<PlannedCommand> PlanStop();

    /// <summary>The command that removes checkpoint <paramref name="name"/> of <paramref name="drive"/>, for -WhatIf; nothing is contacted.</summary>
    public abstract PlannedCommand PlanRemoveCheckpoint(string? drive, string name);

    /// <summary>How plans name the disk before it is resolved.</summary>
    protected static string PlannedDrive(string? drive) => drive ?? "the only disk";

    public virtual ValueTask DisposeAsync()
    {
        GC.SuppressFinalize(this);
        return ValueTask.CompletedTask;
    }

    /// <summary>Scratch (and, for libvirt, XML) files of this VM in the scratch directory.</summary>
    protected async Task<IReadOnlyList<string>> FindScratchFilesAsync(CancellationToken cancellationToken)
    {
        var result = await Host.RunAsync(new CommandSpec("find", ScratchDirectory + "/", "-maxdepth", "1", "-name", CloneNames.ScratchGlob(VmKey), "-print")
        {
            ThrowOnFailure = false,
            Timeout = TimeSpan.FromMinutes(1),
        }, cancellationToken).ConfigureAwait(false);
        return result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    }

    protected Task DeleteFilesAsync(IEnumerable<string> paths, CancellationToken cancellationToken)
    {
        var list = paths.ToList();
        if (list.Count == 0)
        {
            return Task.CompletedTask;
        }

        return Host.RunAsync(new CommandSpec(new[] { "rm", "-f", "--" }.Concat(list)) { Timeout = TimeSpan.FromMinutes(2) }, cancellationToken);
    }

    protected static int PickPort(Random random, (int First, int Last) ports) => random.Next(ports.First, ports.Last + 1);

    /// <summary>The checkpoints of <paramref name="chain"/>, oldest first.</summary>
    protected static List<DiskCheckpoint> Chain(IEnumerable<DiskCheckpoint> all, string chain) =>
        all.Where(c => c.Chain == chain).OrderBy(c => c.Generation).ToList();
}
