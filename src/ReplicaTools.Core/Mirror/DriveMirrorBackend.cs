using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Mirror;

/// <summary>How Wait-DriveMirror decides that a job is stuck.</summary>
public sealed class MirrorWaitOptions
{
    /// <summary>Give up after this long in total; null waits as long as the copy progresses.</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>No progress for this long: the destination is probed; if it does not answer, the job is Stalled.</summary>
    public TimeSpan ProbeAfter { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>No progress for this long, whatever the probe says: the job is Stalled.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(120);

    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);
}

/// <summary>What Stop-DriveMirror will do, decided before anything changes (for -WhatIf and -Confirm).</summary>
public sealed class MirrorStopPlan
{
    public required DriveMirrorJob Job { get; init; }

    /// <summary>Switch the VM onto the destination (block-job-complete / virsh blockjob --pivot).</summary>
    public bool Pivot { get; init; }

    /// <summary>Cancel before sync: the destination is incomplete.</summary>
    public bool Cancel { get; init; }

    /// <summary>The job already ended (failed); it only has to be cleared.</summary>
    public bool ClearOnly { get; init; }

    public bool RemovesDestination { get; init; }

    public required IReadOnlyList<PlannedCommand> Steps { get; init; }

    public string Action => Pivot ? "Pivot the VM onto the mirror copy" : ClearOnly ? "Clear the failed mirror job" : Cancel ? "Cancel the unfinished mirror (the copy is incomplete)" : "Stop the mirror, keeping a consistent copy";

    public string Describe() => PlannedCommand.Describe(Steps);
}

/// <summary>
/// Live mirroring of a VM disk, one implementation per kind of VM: <see cref="QmpDriveMirror"/> (drive-mirror over
/// QMP) and <see cref="LibvirtDriveMirror"/> (virsh blockcopy, so libvirt keeps ownership of the domain).
/// Every operation works on fresh connections: nothing is held between cmdlet invocations.
/// </summary>
public abstract partial class DriveMirrorBackend
{
    /// <summary>Progress seen by this process, per job: stall detection needs to know since when the offset stands still.</summary>
    private static readonly ConcurrentDictionary<string, (long Offset, DateTimeOffset Since)> History = new();

    protected DriveMirrorBackend(VirtualMachine virtualMachine)
    {
        VirtualMachine = virtualMachine;
    }

    public VirtualMachine VirtualMachine { get; }

    protected IReplicaHost Host => VirtualMachine.Host;

    /// <summary>Checks everything read-only (VM state, drive, destination) and returns the commands a start would run.</summary>
    public abstract Task<MirrorPlan> PlanStartAsync(MirrorStartRequest request, CancellationToken cancellationToken = default);

    /// <summary>Runs a start plan; a failure undoes it (no job left, a destination it created removed).</summary>
    public abstract Task<DriveMirrorJob> StartAsync(MirrorPlan plan, CancellationToken cancellationToken = default);

    /// <summary>The mirror jobs as QEMU/libvirt report them now (no stall check): all of this VM's, or one drive's.</summary>
    protected abstract Task<IReadOnlyList<DriveMirrorJob>> QueryAsync(string? drive, CancellationToken cancellationToken);

    public abstract Task<DriveMirrorJob> SuspendAsync(string? drive, CancellationToken cancellationToken = default);

    public abstract Task<DriveMirrorJob> ResumeAsync(string? drive, CancellationToken cancellationToken = default);

    public abstract Task<MirrorStopPlan> PlanStopAsync(string? drive, bool pivot, bool force, CancellationToken cancellationToken = default);

    public abstract Task<DriveMirrorJob> StopAsync(MirrorStopPlan plan, TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>The mirror jobs with their state; a copying job whose offset does not move is checked and may be reported Stalled.</summary>
    public async Task<IReadOnlyList<DriveMirrorJob>> GetAsync(string? drive, bool checkStall = true, CancellationToken cancellationToken = default)
    {
        var jobs = await QueryAsync(drive, cancellationToken).ConfigureAwait(false);
        if (!checkStall || !jobs.Any(IsCopying))
        {
            return jobs.Select(Observe).ToArray();
        }

        // A dead NFS destination raises no error in QEMU: sample again, and if nothing moved, ask the destination.
        await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
        var again = await QueryAsync(drive, cancellationToken).ConfigureAwait(false);
        var result = new List<DriveMirrorJob>();
        foreach (var job in again)
        {
            var before = jobs.FirstOrDefault(j => j.JobId == job.JobId);
            if (IsCopying(job) && before is not null && before.BytesDone == job.BytesDone)
            {
                result.Add(await CheckDestinationAsync(Observe(job), cancellationToken).ConfigureAwait(false));
            }
            else
            {
                result.Add(Observe(job));
            }
        }

        return result;
    }

    /// <summary>The mirror job of one drive; none is an error naming the VM and drive.</summary>
    public async Task<DriveMirrorJob> GetOneAsync(string? drive, bool checkStall = true, CancellationToken cancellationToken = default)
    {
        var jobs = await GetAsync(drive, checkStall, cancellationToken).ConfigureAwait(false);
        return jobs.FirstOrDefault() ?? throw NotFound(drive);
    }

    /// <summary>Blocks until the job is in sync, reporting progress; failures, stalls and the timeout are errors naming VM, drive and destination.</summary>
    public async Task<DriveMirrorJob> WaitAsync(string? drive, MirrorWaitOptions options, CancellationToken cancellationToken = default)
    {
        var stopwatch = Stopwatch.StartNew();
        var lastProgress = stopwatch.Elapsed;
        var lastProbe = TimeSpan.Zero;
        long lastOffset = -1;
        var activity = $"Mirroring {VirtualMachine.Name} {drive ?? string.Empty}".TrimEnd();
        try
        {
            while (true)
            {
                var jobs = await QueryAsync(drive, cancellationToken).ConfigureAwait(false);
                var job = Observe(jobs.FirstOrDefault() ?? throw NotFound(drive));
                activity = $"Mirroring {job.VM}:{job.Drive} to {job.Destination}";
                if (job.BytesDone != lastOffset)
                {
                    lastOffset = job.BytesDone;
                    lastProgress = stopwatch.Elapsed;
                }

                var seconds = job.BytesDone > 0 && job.BytesTotal > job.BytesDone && stopwatch.Elapsed.TotalSeconds > 2
                    ? (int)((job.BytesTotal - job.BytesDone) / Math.Max(1, job.BytesDone / stopwatch.Elapsed.TotalSeconds))
                    : -1;
                OperationContext.Reporter.Progress(new OperationProgress(activity,
                    $"{job.State}: {Text.ByteSize.Format(job.BytesDone)} of {Text.ByteSize.Format(job.BytesTotal)}", (int)job.PercentComplete, seconds));

                switch (job.State)
                {
                    case DriveMirrorState.Ready:
                        return job;
                    case DriveMirrorState.Failed:
                        throw new DriveMirrorException("MirrorFailed", ReplicaErrorCategory.WriteError, job,
                            $"failed: {job.Error}") { RecommendedAction = "Clear the job with Stop-DriveMirror -Force, fix the destination, then start the mirror again." };
                    case DriveMirrorState.Paused:
                        throw new DriveMirrorException("MirrorPaused", ReplicaErrorCategory.ResourceUnavailable, job,
                            "is paused and will not reach sync.") { RecommendedAction = "Resume-DriveMirror, then wait again." };
                }

                var still = stopwatch.Elapsed - lastProgress;
                if (still >= options.ProbeAfter && stopwatch.Elapsed - lastProbe >= options.ProbeAfter)
                {
                    lastProbe = stopwatch.Elapsed;
                    var checkedJob = await CheckDestinationAsync(job, cancellationToken).ConfigureAwait(false);
                    if (checkedJob.State == DriveMirrorState.Stalled)
                    {
                        throw Stalled(checkedJob, still);
                    }
                }

                if (still >= options.StallTimeout)
                {
                    throw Stalled(job, still);
                }

                if (options.Timeout is { } timeout && stopwatch.Elapsed >= timeout)
                {
                    throw new DriveMirrorException("MirrorWaitTimeout", ReplicaErrorCategory.OperationTimeout, job,
                        $"was not in sync after {timeout.TotalSeconds:0} s ({job.PercentComplete:0.#}% copied, {job.State}).")
                    { RecommendedAction = "Wait again with a longer -TimeoutSeconds; the job keeps running." };
                }

                await Task.Delay(options.PollInterval, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            OperationContext.Reporter.Progress(new OperationProgress(activity, "Done", 100, Completed: true));
        }
    }

    /// <summary>The destination checks both backends share: probe, existence, size and format. Nothing is changed.</summary>
    /// <returns>Whether the start creates the destination, and the destination's format.</returns>
    protected async Task<(bool Create, string Format)> CheckDestinationAsync(VmDisk disk, MirrorStartRequest request, long sourceSize, CancellationToken cancellationToken)
    {
        var vm = VirtualMachine;
        var destination = request.Destination;
        if (destination.SameImageAs(disk.Source))
        {
            throw new DriveMirrorException("DestinationIsSource", ReplicaErrorCategory.InvalidArgument, vm, disk.Drive, destination.Text,
                $"{vm.DisplayName}: the destination {destination} is the image drive '{disk.Drive}' already uses.");
        }

        if (request.Format is { } wanted && !FormatPattern().IsMatch(wanted))
        {
            throw new ArgumentException($"-Format '{wanted}' is not an image format name (qcow2, raw, vdi ...).", "Format");
        }

        var probe = await ImageProbe.ProbeAsync(vm.Host, destination, null, false, request.ProbeTimeout, cancellationToken).ConfigureAwait(false);
        string Fail(string what) => $"{vm.DisplayName}: cannot mirror drive '{disk.Drive}' to {destination}: {what}";
        switch (probe.Status)
        {
            case ImageProbeStatus.Unreachable:
                throw new DriveMirrorException("DestinationUnreachable", ReplicaErrorCategory.ConnectionError, vm, disk.Drive, destination.Text, Fail(probe.Reason + ". Nothing was started."))
                {
                    RecommendedAction = "Check that the destination's storage server runs and exports the path (rpcbind, NFSv3), then start the mirror again.",
                };
            case ImageProbeStatus.Unreadable:
                throw new DriveMirrorException(request.ReuseExisting ? "DestinationUnreadable" : "DestinationExists", ReplicaErrorCategory.InvalidData, vm, disk.Drive, destination.Text,
                    Fail($"the destination exists but cannot be opened as an image: {probe.Reason}. Nothing was started."));
            case ImageProbeStatus.Readable when !request.ReuseExisting:
                throw new DriveMirrorException("DestinationExists", ReplicaErrorCategory.ResourceExists, vm, disk.Drive, destination.Text,
                    Fail($"it already exists ({probe.Format}, {Text.ByteSize.Format(probe.VirtualSize ?? 0)}). Nothing was started."))
                {
                    RecommendedAction = "Pass -ReuseExisting to mirror into it (its content is overwritten), or choose another destination.",
                };
            case ImageProbeStatus.Readable:
                if (!destination.IsNfsUrl && await ImageLocks.ProbeAsync(vm.Host, destination.Text, cancellationToken).ConfigureAwait(false) is { InUse: true } held)
                {
                    // -ReuseExisting overwrites it: never the disk of another running VM (QEMU's own lock catches only some formats and openers).
                    throw ImageLocks.InUse(vm.Host.Name, held, "to mirror into it (-ReuseExisting overwrites it). Nothing was started");
                }

                if (probe.VirtualSize != sourceSize)
                {
                    var relation = probe.VirtualSize < sourceSize ? "smaller than" : "larger than";
                    throw new DriveMirrorException("DestinationSizeMismatch", ReplicaErrorCategory.InvalidData, vm, disk.Drive, destination.Text,
                        Fail($"the existing image is {relation} the source ({probe.VirtualSize} bytes, the source has {sourceSize}); a mirror needs the same virtual size. Nothing was started."))
                    {
                        RecommendedAction = $"Resize it (qemu-img resize {destination} {sourceSize}) or let Start-DriveMirror create the destination (leave out -ReuseExisting).",
                    };
                }

                if (request.Format is not null && !string.Equals(request.Format, probe.Format, StringComparison.Ordinal))
                {
                    throw new DriveMirrorException("DestinationFormatMismatch", ReplicaErrorCategory.InvalidData, vm, disk.Drive, destination.Text,
                        Fail($"the existing image is {probe.Format}, not {request.Format}. Nothing was started."));
                }

                return (false, probe.Format ?? request.Format ?? "raw");
            default:
                if (request.ReuseExisting)
                {
                    throw new DriveMirrorException("DestinationNotFound", ReplicaErrorCategory.ObjectNotFound, vm, disk.Drive, destination.Text,
                        Fail($"-ReuseExisting was given but {probe.Reason}. Nothing was started."))
                    {
                        RecommendedAction = "Leave out -ReuseExisting to have the destination created.",
                    };
                }

                if (!destination.IsNfsUrl)
                {
                    var directory = await vm.Host.RunAsync(new CommandSpec("test", "-d", destination.Directory!) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false);
                    if (directory.ExitCode != 0)
                    {
                        throw new DriveMirrorException("DestinationDirectoryNotFound", ReplicaErrorCategory.ObjectNotFound, vm, disk.Drive, destination.Text,
                            Fail($"the directory '{destination.Directory!}' does not exist on host '{vm.Host.Name}'. Nothing was started."));
                    }
                }

                var format = request.Format ?? disk.Format ?? throw new ArgumentException($"The format of drive '{disk.Drive}' is unknown; pass -Format.", "Format");
                return (true, format);
        }
    }

    [GeneratedRegex("^[a-z0-9_]{2,16}$")]
    private static partial Regex FormatPattern();

    /// <summary>The id of the job that mirrors <paramref name="drive"/> (QMP job ids: letters, digits, '-', '.', '_').</summary>
    public static string QmpJobId(string drive) => "rt-mirror-" + Token(drive, 100);

    /// <summary>A name part safe in QMP ids and short enough for node names (31 characters).</summary>
    internal static string Token(string text, int maxLength)
    {
        var clean = new string(text.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_').ToArray());
        if (clean.Length > 0 && clean.Length <= maxLength && clean == text)
        {
            return clean;
        }

        var hash = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(text)))[..8].ToLowerInvariant();
        return "h" + hash;
    }

    protected DriveMirrorException NotFound(string? drive) => new("MirrorNotFound", ReplicaErrorCategory.ObjectNotFound,
        VirtualMachine, drive ?? "(any)", null, $"{VirtualMachine.DisplayName} has no mirror job{(drive is null ? string.Empty : $" on drive '{drive}'")}.")
    {
        RecommendedAction = "Get-DriveMirror lists the running mirrors; Start-DriveMirror starts one.",
    };

    /// <summary>A stop or pivot of a job that is not in sync (MirrorNotReady); <paramref name="verb"/> is "pivot" or "stop".</summary>
    protected static DriveMirrorException NotReady(DriveMirrorJob job, string verb) => new(
        "MirrorNotReady", ReplicaErrorCategory.InvalidOperation, job,
        verb == "pivot"
            ? $"is not in sync yet ({job.PercentComplete:0.#}% copied, {job.State}): a pivot now would switch the VM onto an incomplete copy."
            : $"is not in sync yet ({job.PercentComplete:0.#}% copied, {job.State}): stopping now leaves an incomplete copy.")
    {
        RecommendedAction = verb == "pivot"
            ? "Wait-DriveMirror until it is Ready, then pivot."
            : "Wait-DriveMirror until it is Ready for a consistent copy, or pass -Force to cancel (an incomplete destination that Start-DriveMirror created is removed).",
    };

    /// <summary>After a start failed: removes the destination the plan created; returns "; what happened", or nothing.</summary>
    protected async Task<string> UndoCreatedDestinationAsync(MirrorPlan plan, CancellationToken cancellationToken) =>
        plan.CreatesDestination ? "; " + await RemoveCreatedDestinationAsync(plan.Destination, cancellationToken).ConfigureAwait(false) : string.Empty;

    /// <summary>After a cancel or the clearing of a failed job: removes the incomplete destination if the start created it, warns, and returns what happened.</summary>
    protected async Task<string> SettleIncompleteDestinationAsync(MirrorStopPlan plan, CancellationToken cancellationToken)
    {
        var job = plan.Job;
        var note = plan.RemovesDestination
            ? await RemoveCreatedDestinationAsync(ImageLocation.Parse(job.Destination!), cancellationToken).ConfigureAwait(false)
            : $"the incomplete destination {job.Destination} was left in place (Start-DriveMirror did not create it)";
        OperationContext.Reporter.Warning($"The mirror of {job.VM}:{job.Drive} ended before the copy was complete: {note}.");
        return note;
    }

    /// <summary>Removes a destination this module created (after a failed start or a forced stop); returns what happened.</summary>
    protected async Task<string> RemoveCreatedDestinationAsync(ImageLocation destination, CancellationToken cancellationToken)
    {
        try
        {
            // Created by the start, but someone may have opened it since (a VM started on it): then it is not ours to delete.
            if (!destination.IsNfsUrl && await HeldAfterJobAsync(destination, cancellationToken).ConfigureAwait(false) is { } held)
            {
                OperationContext.Reporter.Warning($"The incomplete destination {destination} on host '{Host.Name}' was left in place: {held.Describe()} (QEMU's image locks).");
                return $"the incomplete destination {destination} was left in place because it is in use ({held.Describe()}); delete it once that is stopped";
            }

            foreach (var spec in RemoveCommands(destination))
            {
                await Host.RunAsync(spec, cancellationToken).ConfigureAwait(false);
            }

            return destination.IsNfsUrl
                ? $"the incomplete destination {destination} was blanked (512 zero bytes, so it cannot pass for a copy); delete the file on the storage server"
                : $"the incomplete destination {destination} was removed";
        }
        catch (ReplicaException ex)
        {
            OperationContext.Reporter.Warning($"Could not remove the incomplete destination {destination} on host '{Host.Name}': {ex.Message}");
            return $"the incomplete destination {destination} could NOT be removed ({ex.Message}); delete it by hand";
        }
    }

    /// <summary>The destination's lock state when a process still holds it 3 s after the job ended (the job's own hold ends with it); else null.</summary>
    private async Task<ImageLockState?> HeldAfterJobAsync(ImageLocation destination, CancellationToken cancellationToken)
    {
        var path = destination.ServerPath();
        for (var attempt = 0; ; attempt++)
        {
            var state = await ImageLocks.ProbeAsync(Host, path, cancellationToken).ConfigureAwait(false);
            if (!state.InUse || attempt == 15)
            {
                return state.InUse ? state : null;
            }

            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The steps that remove a destination this module created, for a stop plan (see <see cref="RemoveCommands"/>).</summary>
    protected IEnumerable<PlannedCommand> PlanRemoveDestination(ImageLocation destination) =>
        RemoveCommands(destination).Select(command => new PlannedCommand(Host.Name, command, "remove the incomplete destination the start created"));

    /// <summary>
    /// rm on the VM host for a path. An nfs:// URL cannot be deleted with QEMU's tools (and the VM host may not mount
    /// the export), so the file is cut to 512 bytes and zeroed: it no longer opens as an image, let alone a copy.
    /// </summary>
    protected static IReadOnlyList<CommandSpec> RemoveCommands(ImageLocation destination) => destination.IsNfsUrl
        ? new[]
        {
            new CommandSpec("timeout", "-s", "KILL", "20", "qemu-img", "resize", "-q", "-f", "raw", "--shrink", destination.Text, "512") { Timeout = TimeSpan.FromSeconds(40) },
            new CommandSpec("timeout", "-s", "KILL", "20", "qemu-io", "-f", "raw", "-c", "write -z 0 512", destination.Text) { Timeout = TimeSpan.FromSeconds(40) },
        }
        : new[] { new CommandSpec("rm", "-f", "--", destination.ServerPath()) { Timeout = TimeSpan.FromSeconds(30) } };

    private static bool IsCopying(DriveMirrorJob job) =>
        job.State is DriveMirrorState.Running || (job.State is DriveMirrorState.Ready && job.BytesDone < job.BytesTotal);

    private string HistoryKey(DriveMirrorJob job) => $"{Host.Name}|{VirtualMachine.Name}|{job.JobId}|{job.Destination}";

    /// <summary>Records the offset and marks a copying job Stalled when it has not moved for 60 s in this process's view.</summary>
    private DriveMirrorJob Observe(DriveMirrorJob job)
    {
        var key = HistoryKey(job);
        var now = DateTimeOffset.UtcNow;
        var entry = History.AddOrUpdate(key, (job.BytesDone, now), (_, old) => old.Offset == job.BytesDone ? old : (job.BytesDone, now));
        if (IsCopying(job) && now - entry.Since >= TimeSpan.FromSeconds(60))
        {
            return Copy(job, DriveMirrorState.Stalled, $"no progress for {(now - entry.Since).TotalSeconds:0} s at {Text.ByteSize.Format(job.BytesDone)} of {Text.ByteSize.Format(job.BytesTotal)}");
        }

        return job;
    }

    /// <summary>Probes the destination of a job that stands still; if it does not answer, the job is Stalled with the probe's reason.</summary>
    private async Task<DriveMirrorJob> CheckDestinationAsync(DriveMirrorJob job, CancellationToken cancellationToken)
    {
        if (job.State == DriveMirrorState.Stalled || job.Destination is null)
        {
            return job;
        }

        var probe = await ImageProbe.ProbeAsync(Host, ImageLocation.Parse(job.Destination), null, false, null, cancellationToken).ConfigureAwait(false);
        return probe.Status is ImageProbeStatus.Unreachable or ImageProbeStatus.NotFound
            ? Copy(job, DriveMirrorState.Stalled, $"no progress and the destination does not answer: {probe.Reason}")
            : job;
    }

    private static DriveMirrorException Stalled(DriveMirrorJob job, TimeSpan still) => new("MirrorStalled", ReplicaErrorCategory.OperationTimeout,
        Copy(job, DriveMirrorState.Stalled, job.Error),
        $"made no progress for {still.TotalSeconds:0} s at {Text.ByteSize.Format(job.BytesDone)} of {Text.ByteSize.Format(job.BytesTotal)}" +
        (job.Error is null ? "." : $": {job.Error}."))
    {
        RecommendedAction = "Bring the destination storage back (the job carries on by itself), or end the job with Stop-DriveMirror -Force. " +
                            "QEMU cannot finish a cancel while an NFS destination is gone; if that hangs, restore the server or stop the VM.",
    };

    /// <summary>The same job in another state (a record copy, so no property can be forgotten).</summary>
    internal static DriveMirrorJob Copy(DriveMirrorJob job, DriveMirrorState state, string? error) => job with { State = state, Error = error };
}

/// <summary>A mirror error: the message always names the VM, the drive and the destination.</summary>
public sealed class DriveMirrorException : ReplicaException
{
    public DriveMirrorException(string errorId, ReplicaErrorCategory category, VirtualMachine vm, string drive, string? destination, string message, Exception? inner = null)
        : base(errorId, category, message, vm.Host.Name, $"{vm.Name}:{drive}", inner)
    {
        VMName = vm.Name;
        Drive = drive;
        Destination = destination;
    }

    public DriveMirrorException(string errorId, ReplicaErrorCategory category, DriveMirrorJob job, string what, Exception? inner = null)
        : base(errorId, category, $"The mirror of {job.VM}:{job.Drive} on host '{job.HostName}' to {job.Destination ?? "(unknown destination)"} {what}", job.HostName, job, inner)
    {
        VMName = job.VM;
        Drive = job.Drive;
        Destination = job.Destination;
        Job = job;
    }

    public string VMName { get; }

    public string Drive { get; }

    public string? Destination { get; }

    /// <summary>The job as last seen, when there is one (its State and Error).</summary>
    public DriveMirrorJob? Job { get; }
}
