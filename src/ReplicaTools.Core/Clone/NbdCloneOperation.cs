using System.Diagnostics;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// One clone run: lock, stale-state check (and -Repair), point in time with a new checkpoint, copy on the destination
/// host into a temporary name, optional verification, release, then promotion of the destination and commit of the
/// checkpoint rotation. Any failure releases the point in time, rolls the rotation back and leaves no destination that
/// looks complete.
/// </summary>
/// <remarks>
/// Incremental runs patch the previous clone. To keep the last good clone at its name while that happens, the previous
/// clone is first copied to NAME.rtclone-partial with cp --reflink (instant on btrfs/XFS). Where the filesystem cannot
/// share extents, the previous clone is renamed to NAME.rtclone-partial instead (no copy of the whole disk) and the
/// sidecar is marked incomplete with ResumeFrom = the base checkpoint: if the run fails, NAME is absent (nothing looks
/// complete) and the next -Incremental run finishes the partial file from the same base checkpoint, whose bitmap still
/// covers every block the failed run may have written. Block devices are patched in place under the same rule.
/// </remarks>
public sealed class NbdCloneOperation
{
    private static readonly TimeSpan WatchInterval = TimeSpan.FromSeconds(2);

    public NbdCloneOperation(CloneRequest request)
    {
        request.Validate();
        Request = request;
    }

    public CloneRequest Request { get; }

    /// <summary>The copy step (a seam for tests): by default the shared NBD copier.</summary>
    public ICloneCopier Copier { get; init; } = new NbdCloneCopier();

    /// <summary>Overwrite a destination that exists but holds no clone metadata.</summary>
    public bool Force { get; init; }

    /// <summary>The caller's reporter, captured at the start: the copier relays its progress through a reporter of its own.</summary>
    private IOperationReporter reporter = OperationContext.Reporter;

    /// <summary>The run's one progress bar (the copier's own progress arrives through <see cref="CopyAsync"/>).</summary>
    private void Progress(string status, int percent, bool completed = false) =>
        reporter.Progress(new OperationProgress("Invoke-NbdClone", status, Math.Clamp(percent, 0, 100), Completed: completed));

    /// <summary>
    /// What the run will do on which host, for -WhatIf; nothing is contacted. Ports, run ids (RUN), the chosen mode and
    /// the checkpoints (BASE, CHECKPOINT, CHAIN) are decided at run time and appear as placeholders.
    /// </summary>
    public IReadOnlyList<PlannedCommand> DescribePlan()
    {
        var vm = Request.VirtualMachine;
        var destination = Request.DestinationSession.Host;
        var target = Request.Destination + CloneDestination.PartialSuffix;
        var export = $"nbd://{Request.ExportAddress ?? "ADDRESS"}:PORT/{CloneNames.Export("RUN")}";
        var source = vm.CreatePointInTimeSource(Request.ScratchDirectory);
        var copier = new Nbd.NbdCopier(destination);
        var plan = new List<PlannedCommand>(source.PlanStart(Request.Drive, Request.ExportAddress ?? "ADDRESS", Request.Incremental, createsCheckpoint: true));
        plan.Add(Request.Incremental
            ? new PlannedCommand(destination.Name, new CommandSpec(NbdCloneCopier.Python, "-c", "DIRTY-EXTENT-COPIER", export, "qemu:dirty-bitmap:BASE", target), "copy the blocks written since BASE into the previous clone")
            : new PlannedCommand(destination.Name, copier.BuildNbdCopyCommand(export, target, Request.Connections ?? Math.Max(2, Environment.ProcessorCount)), "copy the point in time (allocated data only)"));
        if (Request.Verify)
        {
            plan.Add(new PlannedCommand(vm.Host.Name, new CommandSpec(NbdCloneCopier.Python, "-c", "sha256-checksum", export), "checksum the point in time"));
            plan.Add(new PlannedCommand(destination.Name, new CommandSpec(NbdCloneCopier.Python, "-c", "sha256-checksum", target), "checksum the copy; it is promoted only if both match"));
        }

        plan.AddRange(source.PlanStop());
        plan.Add(new PlannedCommand(destination.Name, CloneDestination.MoveCommand(target, Request.Destination), "promote the copy to its name"));
        plan.Add(new PlannedCommand(destination.Name, CloneDestination.WriteSidecarCommand(Request.Destination + CloneDestination.SidecarSuffix, null), "write the clone's metadata (chain, checkpoint, file identity)"));
        plan.Add(source.PlanRemoveCheckpoint(Request.Drive, CloneNames.Prefix + "CHAIN-PREVIOUS") with { Purpose = "delete the previous checkpoint of the destination's chain" });
        return plan;
    }

    /// <summary>
    /// One clone, step by step: lock both hosts, open the VM's disk and inspect the destination, settle state an earlier
    /// run left, decide full or incremental, start the point in time, copy (watched), verify, release, promote.
    /// </summary>
    public async Task<CloneResult> RunAsync(CancellationToken cancellationToken)
    {
        var vm = Request.VirtualMachine;
        reporter = OperationContext.Reporter;
        var started = DateTimeOffset.Now;
        var clock = Stopwatch.StartNew();
        var runId = CloneNames.NewRunId();
        Progress("Taking locks", 0);
        var (vmLocked, destinationLocked) = await LockBothAsync(runId, started, cancellationToken).ConfigureAwait(false);
        await using var vmLock = vmLocked;
        await using var destinationLock = destinationLocked;
        await using var source = vm.CreatePointInTimeSource(Request.ScratchDirectory);
        var destination = new CloneDestination(Request.DestinationSession.Host, Request.Destination);
        var (destinationStat, sidecar) = await OpenAsync(source, destination, cancellationToken).ConfigureAwait(false);
        await SettleStaleStateAsync(source, destination, sidecar, cancellationToken).ConfigureAwait(false);
        var run = await DecideAsync(source, destination, destinationStat, sidecar, cancellationToken).ConfigureAwait(false);
        var address = await ExportAddressResolver.ResolveAsync(vm.Host, destination.Host, Request.ExportAddress, cancellationToken).ConfigureAwait(false);
        try
        {
            var export = await StartPointInTimeAsync(run, runId, address, cancellationToken).ConfigureAwait(false);
            var target = await PrepareTargetAsync(run, cancellationToken).ConfigureAwait(false);
            var copyClock = Stopwatch.StartNew();
            var outcome = await CopyAsync(run, export, target, cancellationToken).ConfigureAwait(false);
            copyClock.Stop();
            var checksum = Request.Verify ? await VerifyAsync(source, export, destination.Host, target, cancellationToken).ConfigureAwait(false) : null;
            await ReleaseAsync(source, cancellationToken).ConfigureAwait(false);
            await PromoteAsync(run, target, checksum, cancellationToken).ConfigureAwait(false);
            Progress("Done", 100, completed: true);
            return Result(run, export, outcome, checksum, started, clock.Elapsed, copyClock.Elapsed);
        }
        catch (Exception ex)
        {
            throw await FailedAsync(run, ex).ConfigureAwait(false);
        }
    }

    /// <summary>Locks the VM and the destination at once (the hosts are independent). The locks name this run, so a second run says who holds them.</summary>
    private async Task<(RemoteLock Vm, RemoteLock Destination)> LockBothAsync(string runId, DateTimeOffset started, CancellationToken cancellationToken)
    {
        var vm = Request.VirtualMachine;
        var destinationHost = Request.DestinationSession.Host;
        var owner = $"Invoke-NbdClone run {runId} (pid {Environment.ProcessId} on {Environment.MachineName}, since {started.ToUniversalTime():yyyy-MM-ddTHH:mm:ssZ}): {vm.DisplayName} -> {destinationHost.Name}:{Request.Destination}";
        var vmLocking = LockAsync(vm.Host, VmLockPath(vm), owner, vm.DisplayName, cancellationToken);
        var destinationLocking = LockAsync(destinationHost, DestinationLockPath, owner, $"the destination '{Request.Destination}'", cancellationToken);
        var vmLock = await ReleaseOnFailureAsync(vmLocking, destinationLocking).ConfigureAwait(false);
        return (vmLock, await destinationLocking.ConfigureAwait(false));
    }

    /// <summary>Opens the VM's disk and inspects the destination (both at once); refuses a destination that is not ours or is in use.</summary>
    private async Task<(DestinationStat Stat, CloneSidecar? Sidecar)> OpenAsync(PointInTimeSource source, CloneDestination destination, CancellationToken cancellationToken)
    {
        var opening = source.OpenAsync(Request.Drive, cancellationToken);
        var inspecting = InspectAsync(destination, cancellationToken);
        await Task.WhenAll(opening, inspecting).ConfigureAwait(false);
        var (stat, sidecar) = await inspecting.ConfigureAwait(false);
        CheckOwnership(source, destination, stat, sidecar);
        if (stat.Kind != DestinationKind.Missing)
        {
            // A clone someone booted (or exported) is a disk in use: patching or replacing it under the holder corrupts it.
            await Storage.ImageLocks.EnsureNotInUseAsync(destination.Host, destination.Path, "to overwrite it with a clone", cancellationToken).ConfigureAwait(false);
        }

        return (stat, sidecar);
    }

    /// <summary>State an interrupted run left: refused without -Repair, repaired (and checked again) with it; a partial file nobody can resume from is deleted.</summary>
    private async Task SettleStaleStateAsync(PointInTimeSource source, CloneDestination destination, CloneSidecar? sidecar, CancellationToken cancellationToken)
    {
        var vm = Request.VirtualMachine;
        Progress("Checking for state left by an interrupted clone", 1);
        var findings = await source.FindStaleStateAsync(sidecar?.Chain, cancellationToken).ConfigureAwait(false);
        if (findings.Count > 0)
        {
            if (!Request.Repair)
            {
                throw new StaleCloneStateException(vm.DisplayName, source.Disk.Drive, vm.Host.Name, findings);
            }

            var keep = sidecar is null ? null : sidecar.IsComplete ? sidecar.Checkpoint : sidecar.ResumeFrom;
            await source.RepairAsync(findings, sidecar?.Chain, keep, cancellationToken).ConfigureAwait(false);
            var left = await source.FindStaleStateAsync(sidecar?.Chain, cancellationToken).ConfigureAwait(false);
            if (left.Count > 0)
            {
                throw new StaleCloneStateException(vm.DisplayName, source.Disk.Drive, vm.Host.Name, left);
            }
        }

        if (!destination.IsBlockDevice && sidecar?.ResumeFrom is null)
        {
            // A partial file nobody can resume from: the remains of an interrupted full clone or of a reflinked incremental.
            var stray = await destination.StatAsync(destination.PartialPath, cancellationToken).ConfigureAwait(false);
            if (stray.Kind != DestinationKind.Missing)
            {
                OperationContext.Reporter.Verbose($"[{destination.Host.Name}] deleting '{destination.PartialPath}' left by an interrupted run");
                await destination.DeleteAsync(destination.PartialPath, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Full or incremental, from which checkpoint, and the new checkpoint's chain and generation.</summary>
    private async Task<RunState> DecideAsync(PointInTimeSource source, CloneDestination destination, DestinationStat stat, CloneSidecar? sidecar, CancellationToken cancellationToken)
    {
        // What the VM has: its checkpoints, and whose chain the destination's metadata names.
        var existing = source.SupportsCheckpoints ? await source.GetCheckpointsAsync(cancellationToken).ConfigureAwait(false) : Array.Empty<DiskCheckpoint>();
        var copiedFrom = await ForeignChainAsync(source, destination, sidecar, cancellationToken).ConfigureAwait(false);

        // A new checkpoint never takes the name of one the VM has: a destination restored from an older copy carries an
        // older generation than the VM's newest of its chain (which the commit then replaces).
        var chain = copiedFrom is null && sidecar?.Chain is { Length: > 0 } known ? known : CloneNames.NewChain();
        var generation = CloneNames.NextGeneration(chain, copiedFrom is null ? sidecar?.Generation ?? 0 : 0, existing.Select(c => c.Name));
        var run = new RunState(source, destination, sidecar, chain, generation)
        {
            NewCheckpoint = source.SupportsCheckpoints ? CloneNames.Checkpoint(chain, generation) : null,
        };
        if (!source.SupportsCheckpoints)
        {
            OperationContext.Reporter.Verbose($"{Request.VirtualMachine.DisplayName}, disk '{source.Disk.Drive}' is {source.Disk.Format ?? "not qcow2"}: no checkpoint is created (dirty bitmaps persist only in qcow2), so every clone of it is full.");
        }

        if (Request.Incremental)
        {
            var (from, resume, reason) = copiedFrom is not null
                ? (null, false, $"the clone metadata {destination.SidecarPath} names checkpoint chain '{copiedFrom.Chain}', which belongs to the clone {copiedFrom.Destination} (the metadata was copied from it, or the clone was moved); this destination starts a chain of its own")
                : await PlanIncrementalAsync(source, destination, stat, sidecar, existing, cancellationToken).ConfigureAwait(false);
            (run.Base, run.Resume) = (from, resume);
            if (reason is not null)
            {
                FallBackToFull(run, reason);
            }
        }

        return run;
    }

    /// <summary>An incremental is not possible: the run makes a full clone, says why, and the result keeps the reason.</summary>
    private void FallBackToFull(RunState run, string reason)
    {
        (run.Base, run.Resume, run.FallbackReason) = (null, false, reason);
        OperationContext.Reporter.Warning($"{Request.VirtualMachine.DisplayName}, disk '{run.Source.Disk.Drive}': an incremental clone is not possible, making a full clone instead: {reason}.");
    }

    /// <summary>Starts the point in time; if the VM refuses the incremental's checkpoint, falls back to a full clone under a new run id.</summary>
    private async Task<PointInTimeExport> StartPointInTimeAsync(RunState run, string runId, string address, CancellationToken cancellationToken)
    {
        Progress("Starting the point-in-time export", 2);
        var request = new PointInTimeRequest { RunId = runId, NewCheckpoint = run.NewCheckpoint, IncrementalFrom = run.Base, Address = address, Ports = Request.PortRange };
        PointInTimeExport export;
        try
        {
            export = await run.Source.StartAsync(request, cancellationToken).ConfigureAwait(false);
        }
        catch (IncrementalUnavailableException ex)
        {
            FallBackToFull(run, ex.Reason);
            await run.Source.StopAsync(cancellationToken).ConfigureAwait(false);
            export = await run.Source.StartAsync(request.AsFull(), cancellationToken).ConfigureAwait(false);
        }

        run.Mode = run.Base is null ? CloneMode.Full : CloneMode.Incremental;
        return export;
    }

    /// <summary>The copy on the destination host, watched: if the point in time ends meanwhile, what was copied is not one instant.</summary>
    private Task<CopyOutcome> CopyAsync(RunState run, PointInTimeExport export, string target, CancellationToken cancellationToken)
    {
        var host = run.Destination.Host;
        var status = run.Mode == CloneMode.Full
            ? $"Copying (full) {export.Address} to {host.Name}:{target}"
            : $"Copying the blocks written since {run.Base} to {host.Name}:{target}";
        void CopyProgress(double percent) => Progress(status, 5 + (int)(percent * 0.85));
        return WatchedAsync(run.Source, token => run.Mode == CloneMode.Full
                ? Copier.CopyFullAsync(host, export.Address, target, run.Destination.IsBlockDevice, Request.Connections, Request.CopyTimeout, DestinationLockPath, CopyProgress, token)
                : Copier.CopyDirtyAsync(host, export.Address, export.DirtyMetaContext!, target, Request.CopyTimeout, DestinationLockPath, CopyProgress, token),
            cancellationToken);
    }

    /// <summary>Checks the point in time lasted to the end of the copy, then releases it.</summary>
    private async Task ReleaseAsync(PointInTimeSource source, CancellationToken cancellationToken)
    {
        var vm = Request.VirtualMachine;
        if (await ProbeAsync(source, cancellationToken).ConfigureAwait(false) is { } ended)
        {
            throw new CloneFailedException($"The point-in-time export of {vm.DisplayName} ended before the copy was released ({ended}); the copy cannot be trusted.", vm.Host.Name, vm.Name);
        }

        Progress("Releasing the point in time", 97);
        await source.StopAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The file at the final name is complete from here on; then the metadata, the chain record and the checkpoint rotation.</summary>
    private async Task PromoteAsync(RunState run, string target, string? checksum, CancellationToken cancellationToken)
    {
        var (vm, source, destination) = (Request.VirtualMachine, run.Source, run.Destination);
        if (!destination.IsBlockDevice)
        {
            await destination.MoveAsync(target, destination.Path, cancellationToken).ConfigureAwait(false);
        }

        run.Promoted = true;
        var finalStat = await destination.StatAsync(destination.Path, cancellationToken).ConfigureAwait(false);
        var checkpointXml = source.NewCheckpoint is null ? null : await source.GetCheckpointXmlAsync(source.NewCheckpoint, cancellationToken).ConfigureAwait(false);
        await destination.WriteSidecarAsync(new CloneSidecar
        {
            State = "complete",
            Chain = run.Chain,
            Generation = run.Generation,
            Checkpoint = source.NewCheckpoint,
            CheckpointXml = checkpointXml,
            Source = SourceOf(source),
            File = destination.IsBlockDevice ? new SidecarFile { Size = finalStat.Size } : new SidecarFile { Size = finalStat.Size, Inode = finalStat.Inode, ModifiedNs = finalStat.ModifiedNs },
            Checksum = checksum,
            Mode = run.Mode.ToString(),
        }, cancellationToken).ConfigureAwait(false);

        if (source.NewCheckpoint is not null)
        {
            try
            {
                await new CloneChainRecord
                {
                    Chain = run.Chain,
                    VM = vm.Name,
                    Drive = source.Disk.Drive,
                    DestinationHost = Request.DestinationSession.HostName,
                    DestinationPath = destination.Path,
                    SidecarPath = destination.SidecarPath,
                }.WriteAsync(vm.Host, Request.StateDirectory, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ReplicaException or IOException)
            {
                OperationContext.Reporter.Warning($"The clone is complete, but the record of its checkpoint chain could not be written on host '{vm.Host.Name}' ({ex.Message}); Get-DiskCheckpoint cannot tell whether '{source.NewCheckpoint}' is orphaned.");
            }
        }

        try
        {
            await source.CommitCheckpointsAsync(run.Chain, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ReplicaException or IOException)
        {
            OperationContext.Reporter.Warning($"The clone is complete, but the previous checkpoint of {vm.DisplayName} could not be deleted ({ex.Message}). The next run reports it as stale; -Repair deletes it.");
        }
    }

    private CloneResult Result(RunState run, PointInTimeExport export, CopyOutcome outcome, string? checksum, DateTimeOffset started, TimeSpan duration, TimeSpan copyDuration)
    {
        var copied = outcome.BytesCopied >= 0 ? outcome.BytesCopied : export.Size;
        return new CloneResult(Request.VirtualMachine.Target)
        {
            Drive = run.Source.Disk.Drive,
            Destination = run.Destination.Path,
            DestinationHost = run.Destination.Host.Name,
            Mode = run.Mode,
            Checkpoint = run.Source.NewCheckpoint,
            FallbackReason = run.FallbackReason,
            BytesTotal = export.Size,
            BytesCopied = copied,
            BytesZeroed = outcome.BytesZeroed,
            BytesSkipped = Math.Max(0, export.Size - copied - outcome.BytesZeroed),
            Duration = duration,
            CopyDuration = copyDuration,
            ThroughputMBps = Math.Round(export.Size / 1048576.0 / Math.Max(duration.TotalSeconds, 0.001), 1),
            Verified = checksum is not null,
            Checksum = checksum,
            Copier = outcome.Copier,
            Generation = run.Generation,
            StartTime = started,
            DestinationSession = Request.DestinationSession,
        };
    }

    /// <summary>Cleans up after a failure and returns the error to throw: what failed, that the VM lost no write, and what was kept.</summary>
    private async Task<Exception> FailedAsync(RunState run, Exception failure)
    {
        var kept = await CleanUpAfterFailureAsync(run, failure).ConfigureAwait(false);
        if (failure is OperationCanceledException)
        {
            return failure;
        }

        var vm = Request.VirtualMachine;
        var what = failure is CloneVerificationException ? "The verification failed" : "The clone failed";
        var message = $"{what}: {failure.Message} {vm.DisplayName} continues on its original disk with every write. {kept}";
        return failure is CloneVerificationException verify
            ? new CloneVerificationException(message, verify.HostName ?? run.Destination.Host.Name, run.Destination.Path)
            : new CloneFailedException(message, (failure as ReplicaException)?.HostName ?? vm.Host.Name, run.Destination.Path, failure);
    }

    private static async Task<(DestinationStat Stat, CloneSidecar? Sidecar)> InspectAsync(CloneDestination destination, CancellationToken cancellationToken)
    {
        var stat = await destination.InspectAsync(cancellationToken).ConfigureAwait(false);
        return (stat, await destination.ReadSidecarAsync(cancellationToken).ConfigureAwait(false));
    }

    /// <summary>Awaits the first lock; if either lock fails, the other one (if taken) is released before the error surfaces.</summary>
    private static async Task<RemoteLock> ReleaseOnFailureAsync(Task<RemoteLock> first, Task<RemoteLock> second)
    {
        try
        {
            await Task.WhenAll(first, second).ConfigureAwait(false);
        }
        catch
        {
            foreach (var task in new[] { first, second }.Where(t => t.IsCompletedSuccessfully))
            {
                await task.Result.DisposeAsync().ConfigureAwait(false);
            }

            throw (first.Exception ?? second.Exception)!.InnerException!;
        }

        return first.Result;
    }

    /// <summary>The lock of the VM on its host (one clone of a VM at a time).</summary>
    private string VmLockPath(VirtualMachine vm) => $"{Request.LockDirectory.TrimEnd('/')}/replicatools-clone-vm-{CloneNames.VmKey(vm)}.lock";

    /// <summary>The lock of the destination on its host; the copier and the destination's checksum run under it.</summary>
    private string DestinationLockPath => $"{Request.LockDirectory.TrimEnd('/')}/replicatools-clone-dest-{CloneNames.Hash(Request.Destination)}.lock";

    private static async Task<RemoteLock> LockAsync(IReplicaHost host, string path, string owner, string what, CancellationToken cancellationToken)
    {
        try
        {
            return await RemoteLock.AcquireAsync(host, path, owner, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (LockHeldException ex)
        {
            throw new CloneInProgressException(host.Name, what, ex.Holder);
        }
    }

    private void CheckOwnership(PointInTimeSource source, CloneDestination destination, DestinationStat stat, CloneSidecar? sidecar)
    {
        var host = destination.Host.Name;
        if (sidecar is not null && !SameSource(sidecar.Source, source))
        {
            throw new ReplicaException("DestinationHoldsAnotherClone", ReplicaErrorCategory.ResourceExists,
                $"On host '{host}', '{destination.Path}' is the clone of {sidecar.Source.Backend} VM '{sidecar.Source.VM}' disk '{sidecar.Source.Drive}' on host '{sidecar.Source.Host}' " +
                $"(per {destination.SidecarPath}); refusing to overwrite it with a clone of {source.Vm.DisplayName} disk '{source.Disk.Drive}'.", host, destination.Path)
            {
                RecommendedAction = "Choose another -Destination, or delete the old clone and its .rtclone.json first.",
            };
        }

        if (sidecar is null && stat.Kind != DestinationKind.Missing && !Force)
        {
            throw new ReplicaException("DestinationExists", ReplicaErrorCategory.ResourceExists,
                $"On host '{host}', '{destination.Path}' exists ({(stat.Kind == DestinationKind.BlockDevice ? "a block device" : "a file")} of {stat.Size} bytes) and holds no clone metadata; refusing to overwrite it.",
                host, destination.Path)
            {
                RecommendedAction = "Pass -Force to overwrite it with the clone, or choose another -Destination.",
            };
        }

        if (stat.Kind == DestinationKind.BlockDevice && stat.Size < source.VirtualSize)
        {
            throw new ReplicaException("DestinationTooSmall", ReplicaErrorCategory.InvalidArgument,
                $"On host '{host}', the block device '{destination.Path}' has {stat.Size} bytes; the disk needs {source.VirtualSize}.", host, destination.Path);
        }
    }

    private static bool SameSource(SidecarSource recorded, PointInTimeSource source) =>
        recorded.Backend == source.Vm.Backend.ToString() && recorded.VM == source.Vm.Name && recorded.Drive == source.Disk.Drive
        && string.Equals(recorded.Host, source.Vm.Session.HostName, StringComparison.OrdinalIgnoreCase);

    private static SidecarSource SourceOf(PointInTimeSource source) => new()
    {
        Host = source.Vm.Session.HostName,
        Backend = source.Vm.Backend.ToString(),
        VM = source.Vm.Name,
        Drive = source.Disk.Drive,
        Image = source.Disk.Source,
        VirtualSize = source.VirtualSize,
    };

    /// <summary>
    /// The chain record of the destination's chain when it names another destination: the sidecar was copied from that
    /// clone (or the clone was moved). Two destinations on one chain would delete each other's checkpoints.
    /// </summary>
    private async Task<CloneChainRecord?> ForeignChainAsync(PointInTimeSource source, CloneDestination destination, CloneSidecar? sidecar, CancellationToken cancellationToken)
    {
        if (!source.SupportsCheckpoints || sidecar?.Chain is not { Length: > 0 } chain)
        {
            return null;
        }

        var record = await CloneChainRecord.ReadAsync(source.Host, Request.StateDirectory, chain, cancellationToken).ConfigureAwait(false);
        return record is not null && (record.DestinationPath != destination.Path
                                      || !string.Equals(record.DestinationHost, Request.DestinationSession.HostName, StringComparison.OrdinalIgnoreCase))
            ? record
            : null;
    }

    /// <summary>(base checkpoint, resume a patched partial, null) when an incremental is sound; otherwise (null, false, why not).</summary>
    private static async Task<(string? Base, bool Resume, string? Reason)> PlanIncrementalAsync(PointInTimeSource source, CloneDestination destination, DestinationStat stat,
        CloneSidecar? sidecar, IReadOnlyList<DiskCheckpoint> existing, CancellationToken cancellationToken)
    {
        if (!source.SupportsCheckpoints)
        {
            return (null, false, $"the disk is {source.Disk.Format ?? "of an unknown format"}, and checkpoints (persistent dirty bitmaps) need qcow2");
        }

        if (sidecar is null)
        {
            return (null, false, $"there is no clone metadata ({destination.SidecarPath}) from an earlier clone");
        }

        if (sidecar.Source.VirtualSize != source.VirtualSize)
        {
            return (null, false, $"the disk was resized ({sidecar.Source.VirtualSize} → {source.VirtualSize} bytes) since the last clone");
        }

        if (!string.Equals(sidecar.Source.Image, source.Disk.Source, StringComparison.Ordinal))
        {
            return (null, false, $"the disk's image changed from '{sidecar.Source.Image}' to '{source.Disk.Source}' since the last clone");
        }

        // The chain first: a destination restored from an older copy also fails the file check below (a restore makes a
        // new inode), but the real cause is that the VM moved on past the checkpoint it matches.
        if ((sidecar.IsComplete ? sidecar.Checkpoint : sidecar.ResumeFrom) is { } recorded && ChainMismatch(destination, recorded, existing) is { } mismatch)
        {
            return (null, false, mismatch);
        }

        string from;
        var resume = false;
        if (sidecar.IsComplete)
        {
            if (sidecar.Checkpoint is null)
            {
                return (null, false, "the last clone has no checkpoint");
            }

            if (!destination.IsBlockDevice && !stat.SameFileAs(sidecar.File))
            {
                return (null, false, stat.Kind == DestinationKind.Missing
                    ? $"the last clone '{destination.Path}' is gone"
                    : $"'{destination.Path}' is not the file the last clone wrote (it was modified or replaced since: size/inode/mtime differ from {destination.SidecarPath})");
            }

            from = sidecar.Checkpoint;
        }
        else if (sidecar.ResumeFrom is not null)
        {
            if (!destination.IsBlockDevice)
            {
                var partial = await destination.StatAsync(destination.PartialPath, cancellationToken).ConfigureAwait(false);
                if (partial.Kind != DestinationKind.File || partial.Size != source.VirtualSize)
                {
                    return (null, false, $"the last incremental was interrupted and its partial file '{destination.PartialPath}' is gone");
                }
            }

            from = sidecar.ResumeFrom;
            resume = true;
            OperationContext.Reporter.Verbose($"The last incremental clone was interrupted; finishing it from checkpoint '{from}', whose bitmap covers every block it may have written.");
        }
        else
        {
            return (null, false, "the last clone did not complete (it was interrupted or failed verification)");
        }

        var problem = await source.CheckpointProblemAsync(from, sidecar.CheckpointXml, cancellationToken).ConfigureAwait(false);
        return problem is null ? (from, resume, null) : (null, false, problem);
    }

    /// <summary>
    /// Why the destination's checkpoint <paramref name="from"/> is not on the VM, told from the VM's checkpoints of the
    /// destination's chain: the destination was restored from an older copy (the VM has a newer one), or the VM's disk
    /// was (the VM has only older ones). Null when <paramref name="from"/> exists or the chain tells nothing.
    /// </summary>
    internal static string? ChainMismatch(CloneDestination destination, string from, IReadOnlyList<DiskCheckpoint> existing)
    {
        if (existing.Any(c => c.Name == from) || !CloneNames.TryParseCheckpoint(from, out var chain, out var generation))
        {
            return null;
        }

        var links = existing.Where(c => c.Chain == chain).OrderBy(c => c.Generation).ToList();
        if (links.LastOrDefault(l => l.Generation > generation) is { } newer)
        {
            return $"'{destination.Path}' matches checkpoint '{from}', older than the VM's newest checkpoint of its chain, '{newer.Name}': the destination and its metadata ({destination.SidecarPath}) " +
                   $"were restored from an older copy, and '{from}' no longer exists, so only a full clone is correct (it replaces '{newer.Name}')";
        }

        if (links.LastOrDefault(l => l.Generation < generation) is { } older)
        {
            return $"'{destination.Path}' matches checkpoint '{from}', but the VM's newest checkpoint of its chain is the older '{older.Name}': the VM's disk (or its checkpoints) went back to an earlier state";
        }

        return null;
    }

    /// <summary>Decides where the copy writes and records, before anything is written, what a failure would leave.</summary>
    private async Task<string> PrepareTargetAsync(RunState run, CancellationToken cancellationToken)
    {
        var destination = run.Destination;
        if (run.Mode == CloneMode.Full)
        {
            if (destination.IsBlockDevice)
            {
                await MarkIncompleteAsync(run, resumeFrom: null, cancellationToken).ConfigureAwait(false);
                return destination.Path;
            }

            await destination.DeleteAsync(destination.PartialPath, cancellationToken).ConfigureAwait(false);
            run.Partial = PartialKind.Scratch;
            return destination.PartialPath;
        }

        if (destination.IsBlockDevice || run.Resume)
        {
            await MarkIncompleteAsync(run, run.Base, cancellationToken).ConfigureAwait(false);
            run.Partial = destination.IsBlockDevice ? PartialKind.None : PartialKind.Resumable;
            return destination.IsBlockDevice ? destination.Path : destination.PartialPath;
        }

        if (await destination.TryReflinkAsync(destination.Path, destination.PartialPath, cancellationToken).ConfigureAwait(false))
        {
            OperationContext.Reporter.Verbose($"[{destination.Host.Name}] the previous clone was reflinked to '{destination.PartialPath}'; it stays complete at its name while the incremental runs.");
            run.Partial = PartialKind.Scratch;
            return destination.PartialPath;
        }

        OperationContext.Reporter.Verbose($"[{destination.Host.Name}] the filesystem cannot reflink; the previous clone is moved to '{destination.PartialPath}' and patched there.");
        await MarkIncompleteAsync(run, run.Base, cancellationToken).ConfigureAwait(false);
        await destination.MoveAsync(destination.Path, destination.PartialPath, cancellationToken).ConfigureAwait(false);
        run.Partial = PartialKind.Resumable;
        return destination.PartialPath;
    }

    private static async Task MarkIncompleteAsync(RunState run, string? resumeFrom, CancellationToken cancellationToken)
    {
        var sidecar = run.Sidecar ?? new CloneSidecar { Chain = run.Chain, Source = SourceOf(run.Source) };
        sidecar.State = "incomplete";
        sidecar.ResumeFrom = resumeFrom;
        sidecar.Chain = run.Chain;
        await run.Destination.WriteSidecarAsync(sidecar, cancellationToken).ConfigureAwait(false);
        run.Sidecar = sidecar;
        run.MarkedIncomplete = true;
    }

    /// <summary>Runs the copy while polling the point in time; if it ends, the copier is killed and the copy reported invalid.</summary>
    private static async Task<CopyOutcome> WatchedAsync(PointInTimeSource source, Func<CancellationToken, Task<CopyOutcome>> copy, CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        string? ended = null;
        var copyTask = copy(stop.Token);
        try
        {
            while (!copyTask.IsCompleted)
            {
                await Task.WhenAny(copyTask, Task.Delay(WatchInterval, cancellationToken)).ConfigureAwait(false);
                cancellationToken.ThrowIfCancellationRequested();
                if (copyTask.IsCompleted)
                {
                    break;
                }

                ended = await ProbeAsync(source, cancellationToken).ConfigureAwait(false);
                if (ended is not null)
                {
                    break;
                }
            }
        }
        finally
        {
            if (!copyTask.IsCompleted)
            {
                // Kill the copier (on the destination host) before anything else is torn down.
                await stop.CancelAsync().ConfigureAwait(false);
                try
                {
                    await copyTask.ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // Its failure is the expected consequence; reported below.
                }
            }
        }

        try
        {
            var outcome = await copyTask.ConfigureAwait(false);
            ended ??= await ProbeAsync(source, cancellationToken).ConfigureAwait(false);
            return ended is null ? outcome : throw new CloneFailedException($"The point-in-time export ended during the copy ({ended}).", source.Host.Name, source.Vm.Name);
        }
        catch (Exception ex) when (ended is not null && ex is not CloneFailedException && !cancellationToken.IsCancellationRequested)
        {
            throw new CloneFailedException($"The point-in-time export ended during the copy ({ended}); the copier was stopped.", source.Host.Name, source.Vm.Name, ex);
        }
        catch (Exception ex) when (ex is ReplicaException or IOException && ex is not CloneFailedException)
        {
            // The copier failed by itself: was the export the cause?
            var reason = await ProbeAsync(source, CancellationToken.None).ConfigureAwait(false);
            throw new CloneFailedException(reason is null ? $"The copy failed: {ex.Message}" : $"The copy failed ({ex.Message}); the point-in-time export had ended: {reason}.",
                (ex as ReplicaException)?.HostName, source.Vm.Name, ex);
        }
    }

    /// <summary>CheckAlive that turns "cannot even ask" (VM host connection lost) into a reason: the copy cannot be trusted then either.</summary>
    private static async Task<string?> ProbeAsync(PointInTimeSource source, CancellationToken cancellationToken)
    {
        try
        {
            return await source.CheckAliveAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ReplicaException or IOException or TimeoutException)
        {
            return $"host '{source.Host.Name}' could not be asked whether the point in time is intact: {ex.Message}";
        }
    }

    private async Task<string> VerifyAsync(PointInTimeSource source, PointInTimeExport export, IReplicaHost destinationHost, string target, CancellationToken cancellationToken)
    {
        Progress("Verifying: checksumming the point-in-time source and the destination", 90);
        var sourceSum = WatchedChecksumAsync(source, export, cancellationToken);
        var destinationSum = ImageChecksum.ComputeAsync(destinationHost, target, export.Size, Request.CopyTimeout, null, cancellationToken, DestinationLockPath);
        await Task.WhenAll(sourceSum, destinationSum).ConfigureAwait(false);
        var (a, b) = (sourceSum.Result, destinationSum.Result);
        if (a.Checksum != b.Checksum)
        {
            throw new CloneVerificationException(
                $"The destination {destinationHost.Name}:{target} does not match the point-in-time source {export.Address} (source {a.Checksum}, {a.Size} bytes; destination {b.Checksum}, {b.Size} bytes); it was not promoted.",
                destinationHost.Name, target);
        }

        OperationContext.Reporter.Verbose($"Verified: source and destination both {a.Checksum}.");
        return a.Checksum;
    }

    private Task<ImageDigest> WatchedChecksumAsync(PointInTimeSource source, PointInTimeExport export, CancellationToken cancellationToken) =>
        ImageChecksum.ComputeAsync(source.Host, export.Address.Uri, null, Request.CopyTimeout, p => Progress("Verifying: checksumming the point-in-time source and the destination", 90 + (int)(p * 0.07)), cancellationToken,
            VmLockPath(source.Vm));

    /// <summary>Releases the point in time, rolls the rotation back and settles the destination; returns what the operator should know.</summary>
    private static async Task<string> CleanUpAfterFailureAsync(RunState run, Exception failure)
    {
        var notes = new List<string>();
        var none = CancellationToken.None;
        try
        {
            await run.Source.StopAsync(none).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ReplicaException or IOException or TimeoutException)
        {
            notes.Add($"Releasing the point in time failed ({ex.Message}): the next run reports the stale state and -Repair cleans it up.");
        }

        if (!run.Promoted)
        {
            try
            {
                await run.Source.RollbackCheckpointAsync(none).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ReplicaException or IOException or TimeoutException)
            {
                notes.Add($"Rolling back the new checkpoint failed ({ex.Message}): -Repair settles it on the next run.");
            }

            var destination = run.Destination;
            var badContent = failure is CloneVerificationException;
            try
            {
                switch (run.Partial)
                {
                    case PartialKind.Scratch:
                        await destination.DeleteAsync(destination.PartialPath, none).ConfigureAwait(false);
                        notes.Add(run.Sidecar is { IsComplete: true } ? $"The previous clone at '{destination.Path}' is unchanged." : $"Nothing was written at '{destination.Path}'.");
                        break;
                    case PartialKind.Resumable when badContent:
                        await destination.DeleteAsync(destination.PartialPath, none).ConfigureAwait(false);
                        await MarkIncompleteAsync(run, null, none).ConfigureAwait(false);
                        notes.Add($"'{destination.Path}' is absent (the previous clone was being patched and did not verify); the next run makes a full clone.");
                        break;
                    case PartialKind.Resumable:
                        notes.Add($"'{destination.Path}' is absent: the previous clone was being patched at '{destination.PartialPath}'. The next -Incremental run finishes it from checkpoint '{run.Base}' (its metadata says so).");
                        break;
                    default:
                        if (run.MarkedIncomplete)
                        {
                            if (badContent || run.Mode == CloneMode.Full)
                            {
                                await MarkIncompleteAsync(run, null, none).ConfigureAwait(false);
                            }

                            notes.Add($"The block device '{destination.Path}' holds an incomplete clone and its metadata says so; {(run.Mode == CloneMode.Incremental && !badContent ? $"the next -Incremental run finishes it from checkpoint '{run.Base}'." : "the next run makes a full clone.")}");
                        }

                        break;
                }
            }
            catch (Exception ex) when (ex is ReplicaException or IOException)
            {
                notes.Add($"Cleaning up the destination failed ({ex.Message}); the next run finds and removes '{destination.PartialPath}'.");
            }
        }

        return string.Join(' ', notes);
    }

    private enum PartialKind
    {
        None,

        /// <summary>NAME.rtclone-partial is a throw-away copy: delete it on failure.</summary>
        Scratch,

        /// <summary>NAME.rtclone-partial is the previous clone being patched: keep it on failure, the next incremental finishes it.</summary>
        Resumable,
    }

    private sealed class RunState(PointInTimeSource source, CloneDestination destination, CloneSidecar? sidecar, string chain, long generation)
    {
        public PointInTimeSource Source { get; } = source;

        public CloneDestination Destination { get; } = destination;

        public CloneSidecar? Sidecar { get; set; } = sidecar;

        public string Chain { get; } = chain;

        public long Generation { get; } = generation;

        public CloneMode Mode { get; set; }

        /// <summary>The checkpoint an incremental starts from; null for a full clone.</summary>
        public string? Base { get; set; }

        /// <summary>The incremental finishes an interrupted one in the partial file.</summary>
        public bool Resume { get; set; }

        /// <summary>Why an -Incremental run makes a full clone, if it does.</summary>
        public string? FallbackReason { get; set; }

        /// <summary>The checkpoint this run creates (null for disks that cannot hold one).</summary>
        public string? NewCheckpoint { get; init; }

        public PartialKind Partial { get; set; }

        public bool MarkedIncomplete { get; set; }

        public bool Promoted { get; set; }
    }
}
