using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Quorum;

/// <summary>How Repair-QuorumDisk puts a replica right.</summary>
public enum QuorumRepairMode
{
    /// <summary>The replica's own image is rewritten from the majority: x-blockdev-change takes it out, a mirror from the quorum node rewrites it, x-blockdev-change puts it back.</summary>
    InPlace,

    /// <summary>A new image (on another storage host) is synced from the majority and takes the replica's place: blockdev-mirror with "replaces".</summary>
    Replace,
}

/// <summary>What Repair-QuorumDisk will do, step by step.</summary>
public sealed class QuorumRepairPlan
{
    public required QuorumDefinition Disk { get; init; }

    public required QuorumReplicaSpec Replica { get; init; }

    public required QuorumRepairMode Mode { get; init; }

    /// <summary>The new replica (Replace only).</summary>
    public QuorumReplicaSpec? NewReplica { get; init; }

    /// <summary>The image that is created first (Replace onto a missing image).</summary>
    public CreateDiskImagePlan? Create { get; init; }

    /// <summary>QEMU's edge name of the replica ("children.1"); null when it is already out of the quorum.</summary>
    public string? Child { get; init; }

    /// <summary>True when the vCPUs run and are paused for the final switch (in place only).</summary>
    public bool PausesVm { get; init; }

    public required string JobId { get; init; }

    public required IReadOnlyList<PlannedCommand> Steps { get; init; }

    public string Describe() => PlannedCommand.Describe(Steps);
}

public sealed partial class QuorumDiskManager
{
    /// <summary>How long the final switch may keep the vCPUs paused before the repair gives up and resumes them.</summary>
    public static readonly TimeSpan SwitchTimeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Works out how to repair <paramref name="replica"/> (node name, or its location) of a quorum disk: in place, or with
    /// <paramref name="destination"/> onto a new image that takes its place. Read-only, except that nothing at all changes.
    /// </summary>
    /// <exception cref="QuorumException">
    /// QuorumReplicaNotInQuorum, QuorumRepairUnsupported (blkverify; too few replicas left; the replica's storage does not
    /// answer and no -Destination was given; a dead NFS server stalls the quorum), QuorumReplicaTwice (the destination is a replica).
    /// </exception>
    public async Task<QuorumRepairPlan> PlanRepairAsync(string? drive, string replica, QuorumReplicaLocation? destination, DiskImageFormat? format, CancellationToken cancellationToken = default)
    {
        await using var monitor = await QemuMonitor.OpenAsync(Vm, cancellationToken).ConfigureAwait(false);
        var view = await ReadViewAsync(monitor, cancellationToken).ConfigureAwait(false);
        EnsureRunning(Vm, view);
        var disk = ResolveDisk(view, drive);
        var spec = disk.Replicas.FirstOrDefault(r => r.NodeName == replica)
            ?? disk.Replicas.FirstOrDefault(r => r.Location.Text == replica || TryParse(replica)?.Equals(r.Location) == true)
            ?? throw new QuorumException(QuorumErrorIds.ReplicaNotInQuorum, ReplicaErrorCategory.ObjectNotFound,
                $"Quorum disk '{disk.Drive}' of {Vm.DisplayName} has no replica '{replica}'. Its replicas: {string.Join(", ", disk.Replicas.Select(r => $"{r.NodeName} ({r.Location.Text})"))}.", Host.Name, replica)
            {
                RecommendedAction = "Pass a replica's NodeName or Location as Get-QuorumDisk shows them.",
            };
        var children = view.Graph.ChildrenOf(disk.NodeName);
        var child = children.FirstOrDefault(c => c.Child == spec.NodeName).Edge;
        var jobId = "rt-quorum-repair-" + spec.NodeName;
        var jobs = await monitor.ExecuteAsync("query-block-jobs", null, null, cancellationToken).ConfigureAwait(false);
        if (jobs.EnumerateArray().Any(j => j.GetProperty("device").GetString() == jobId))
        {
            throw new QuorumException(QuorumErrorIds.RepairFailed, ReplicaErrorCategory.ResourceExists,
                $"A repair of replica {spec.NodeName} already runs on {Vm.DisplayName} (block job {jobId}).", Host.Name, spec.NodeName);
        }

        var probes = await Task.WhenAll(disk.Replicas.Select(r => QuorumProbe.ProbeOpenAsync(Host, r.Location, ProbeTimeout, cancellationToken))).ConfigureAwait(false);
        for (var i = 0; i < disk.Replicas.Count; i++)
        {
            // libnfs retries a dead NFS server forever: every quorum request (the mirror's reads too) waits for it.
            if (disk.Replicas[i].Location.Transport == QuorumTransport.Nfs && probes[i].Status == QuorumProbeStatus.Unreachable && children.Any(c => c.Child == disk.Replicas[i].NodeName))
            {
                throw new QuorumException(QuorumErrorIds.RepairUnsupported, ReplicaErrorCategory.ResourceUnavailable,
                    $"The NFS server of replica {disk.Replicas[i].NodeName} ({disk.Replicas[i].Location.Text}) does not answer: {probes[i].Reason}. " +
                    "QEMU's NFS client (libnfs) retries a dead server without a timeout, so the quorum's requests that reach that replica wait until the server is back; " +
                    "no copy can run through the quorum until then, and the replica cannot be detached (detaching waits for those requests too).", Host.Name, disk.Replicas[i].Location.Text)
                {
                    RecommendedAction = "Bring the NFS server back (the same export, or an empty one at the same address: QEMU then gets errors instead of waiting); then run Repair-QuorumDisk again. Replicas on nbd:// URLs fail fast instead.",
                };
            }
        }

        if (destination is null)
        {
            return PlanInPlace(view, disk, spec, child, jobId, probes[disk.Replicas.ToList().IndexOf(spec)]);
        }

        return await PlanReplaceAsync(monitor, disk, spec, child, jobId, destination, format, cancellationToken).ConfigureAwait(false);
    }

    private static QuorumReplicaLocation? TryParse(string text)
    {
        try
        {
            return QuorumReplicaLocation.Parse(text);
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    private QuorumRepairPlan PlanInPlace(View view, QuorumDefinition disk, QuorumReplicaSpec spec, string? child, string jobId, QuorumProbeResult probe)
    {
        if (disk.Blkverify)
        {
            throw new QuorumException(QuorumErrorIds.RepairUnsupported, ReplicaErrorCategory.InvalidOperation,
                $"Quorum disk '{disk.Drive}' runs in blkverify mode: QEMU refuses to take a child out of it (x-blockdev-change), so a replica cannot be repaired while the VM runs.", Host.Name, disk.Drive)
            {
                RecommendedAction = "Shut the VM down and copy the good replica over the bad one (qemu-img convert).",
            };
        }

        var attached = view.Graph.ChildrenOf(disk.NodeName).Count;
        if (child is not null && attached - 1 < disk.VoteThreshold)
        {
            throw new QuorumException(QuorumErrorIds.RepairUnsupported, ReplicaErrorCategory.InvalidOperation,
                $"Quorum disk '{disk.Drive}' has {attached} replicas and vote-threshold {disk.VoteThreshold}: taking one out to rewrite it would leave fewer than the threshold (QEMU refuses).", Host.Name, disk.Drive)
            {
                RecommendedAction = "Repair onto a new image instead (-Destination): that swaps the replica without taking it out first.",
            };
        }

        if (probe.Status != QuorumProbeStatus.Readable)
        {
            throw new QuorumException(QuorumErrorIds.RepairUnsupported, ReplicaErrorCategory.ResourceUnavailable,
                $"Replica {spec.NodeName} ({spec.Location.Text}) cannot be rewritten in place: {probe.Reason}.", Host.Name, spec.Location.Text)
            {
                RecommendedAction = "Give -Destination: a new image on a storage host that answers takes its place.",
            };
        }

        var pauses = view.State == VmRunState.Running;
        var steps = new List<PlannedCommand>();
        if (child is not null)
        {
            steps.Add(QemuMonitor.Plan(Vm, "x-blockdev-change", new JsonObject { ["parent"] = disk.NodeName, ["child"] = child }, $"take replica {spec.NodeName} out of the quorum"));
        }

        steps.Add(QemuMonitor.Plan(Vm, "blockdev-mirror", MirrorArguments(disk, jobId, spec.NodeName, null), $"rewrite {spec.Location.Text} from the majority (reads through the quorum node)"));
        if (pauses)
        {
            steps.Add(QemuMonitor.PlanPause(Vm, pause: true));
        }

        steps.Add(QemuMonitor.Plan(Vm, "block-job-cancel", new JsonObject { ["device"] = jobId }, "once in sync: end the mirror without switching the disk over"));
        steps.Add(QemuMonitor.Plan(Vm, "job-dismiss", new JsonObject { ["id"] = jobId }, "forget the finished job"));
        steps.Add(QemuMonitor.Plan(Vm, "x-blockdev-change", new JsonObject { ["parent"] = disk.NodeName, ["node"] = spec.NodeName }, $"put replica {spec.NodeName} back"));
        if (pauses)
        {
            steps.Add(QemuMonitor.PlanPause(Vm, pause: false));
        }

        var updated = disk.WithReplica(spec.NodeName, spec, DateTimeOffset.UtcNow);
        steps.AddRange(RecordSteps(updated));
        return new QuorumRepairPlan { Disk = disk, Replica = spec, Mode = QuorumRepairMode.InPlace, Child = child, PausesVm = pauses, JobId = jobId, Steps = steps };
    }

    private async Task<QuorumRepairPlan> PlanReplaceAsync(QemuMonitor monitor, QuorumDefinition disk, QuorumReplicaSpec spec, string? child, string jobId,
        QuorumReplicaLocation destination, DiskImageFormat? format, CancellationToken cancellationToken)
    {
        if (child is null)
        {
            throw new QuorumException(QuorumErrorIds.RepairUnsupported, ReplicaErrorCategory.InvalidOperation,
                $"Replica {spec.NodeName} is not in the quorum (detached); QEMU replaces only a current child. Repair it in place (without -Destination) first.", Host.Name, spec.NodeName);
        }

        if (disk.Replicas.FirstOrDefault(r => r.Location.Equals(destination)) is { } twin)
        {
            throw new QuorumException(QuorumErrorIds.ReplicaTwice, ReplicaErrorCategory.InvalidArgument,
                $"-Destination '{destination.Text}' is already replica {twin.NodeName} of quorum disk '{disk.Drive}'.", Host.Name, destination.Text);
        }

        var size = await DiskSizeAsync(monitor, disk, cancellationToken).ConfigureAwait(false);
        var probe = await QuorumProbe.ProbeAsync(Host, destination, ProbeTimeout, cancellationToken).ConfigureAwait(false);
        CreateDiskImagePlan? create = null;
        string newFormat;
        switch (probe.Status)
        {
            case QuorumProbeStatus.Readable when probe.VirtualSize != size:
                throw new QuorumException(QuorumErrorIds.SizeMismatch, ReplicaErrorCategory.InvalidArgument,
                    $"-Destination '{destination.Text}' holds {probe.VirtualSize} bytes; quorum disk '{disk.Drive}' has {size}.", Host.Name, destination.Text);
            case QuorumProbeStatus.Readable:
                newFormat = probe.Format!;
                break;
            case QuorumProbeStatus.NotFound when destination.CanCreate:
                var images = new DiskImageService(Host, Vm.Session, StorageOptions);
                create = await images.PlanCreateAsync(destination.Text, size, format ?? DiskImageFormat.Raw, false, cancellationToken).ConfigureAwait(false);
                newFormat = (format ?? DiskImageFormat.Raw).ToQemuName();
                break;
            default:
                throw new QuorumException(probe.Status == QuorumProbeStatus.Unreachable ? QuorumErrorIds.ReplicaUnreachable : QuorumErrorIds.ReplicaNotFound,
                    ReplicaErrorCategory.ObjectNotFound, $"-Destination '{destination.Text}' cannot be used from VM host '{Host.Name}': {probe.Reason}.", Host.Name, destination.Text);
        }

        var newSpec = new QuorumReplicaSpec(QuorumDefinition.ReplicaNodeName(disk.NodeName, disk.NextIndex), destination, newFormat);
        QuorumDefinition.CheckName(newSpec.ProtocolNodeName, "Destination");
        var steps = new List<PlannedCommand>();
        if (create is not null)
        {
            steps.AddRange(create.Steps);
        }

        steps.Add(QemuMonitor.Plan(Vm, "blockdev-add", newSpec.ToBlockdev(), $"open the new replica {destination.Text}"));
        steps.Add(QemuMonitor.Plan(Vm, "blockdev-mirror", MirrorArguments(disk, jobId, newSpec.NodeName, spec.NodeName), $"copy the majority's data to {destination.Text}; it replaces {spec.NodeName} when done"));
        steps.Add(QemuMonitor.Plan(Vm, "block-job-complete", new JsonObject { ["device"] = jobId }, $"once in sync: swap {spec.NodeName} for {newSpec.NodeName} in the quorum"));
        steps.Add(QemuMonitor.Plan(Vm, "job-dismiss", new JsonObject { ["id"] = jobId }, "forget the finished job"));
        steps.Add(QemuMonitor.Plan(Vm, "blockdev-del", new JsonObject { ["node-name"] = spec.NodeName }, $"close the old replica {spec.Location.Text}"));
        var updated = disk.WithReplica(spec.NodeName, newSpec, DateTimeOffset.UtcNow);
        steps.AddRange(RecordSteps(updated));
        return new QuorumRepairPlan
        {
            Disk = disk, Replica = spec, Mode = QuorumRepairMode.Replace, NewReplica = newSpec, Create = create, Child = child, JobId = jobId, Steps = steps,
        };
    }

    /// <summary>The quorum node's size: query-named-block-nodes (safe here: no replica on a dead NFS server, checked before).</summary>
    private async Task<long> DiskSizeAsync(QemuMonitor monitor, QuorumDefinition disk, CancellationToken cancellationToken)
    {
        var nodes = await monitor.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, null, cancellationToken).ConfigureAwait(false);
        foreach (var node in nodes.EnumerateArray())
        {
            if (node.GetProperty("node-name").GetString() == disk.NodeName)
            {
                return node.GetProperty("image").GetProperty("virtual-size").GetInt64();
            }
        }

        throw new QuorumException(QuorumErrorIds.DiskNotFound, ReplicaErrorCategory.ObjectNotFound, $"{Vm.DisplayName} has no block node '{disk.NodeName}'.", Host.Name, disk.NodeName);
    }

    private static JsonObject MirrorArguments(QuorumDefinition disk, string jobId, string target, string? replaces)
    {
        var arguments = new JsonObject
        {
            ["job-id"] = jobId,
            ["device"] = disk.NodeName,
            ["target"] = target,
            ["sync"] = "full",
            ["auto-dismiss"] = false,
        };
        if (replaces is null)
        {
            // Guest writes reach the target synchronously, so "in sync" stays true up to the switch.
            arguments["copy-mode"] = "write-blocking";
        }
        else
        {
            arguments["replaces"] = replaces;
        }

        return arguments;
    }

    private IEnumerable<PlannedCommand> RecordSteps(QuorumDefinition updated) => new[]
    {
        QemuMonitor.Plan(Vm, "object-del", new JsonObject { ["id"] = updated.RecordId }, "drop the old record"),
        QemuMonitor.Plan(Vm, "object-add", updated.RecordObject(), "record the repaired quorum disk"),
    };

    /// <summary>
    /// Runs a repair plan. In place: the replica leaves the quorum (the others go on serving the guest), is rewritten by a
    /// write-blocking mirror from the quorum node, then the vCPUs are paused for the switch (the mirror ends in sync
    /// without pivoting and the replica rejoins; milliseconds) and resumed. Replace: the new image is mirrored from the
    /// quorum node and QEMU swaps it for the old replica when complete; no pause. If anything fails, the replica is put
    /// back as it was and the vCPUs resumed; the error says what state the disk is in.
    /// </summary>
    /// <exception cref="QuorumException">QuorumRepairFailed, with QEMU's reason.</exception>
    public async Task<QuorumDisk> RepairAsync(QuorumRepairPlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (plan.Create is not null)
        {
            await new DiskImageService(Host, Vm.Session, StorageOptions).CreateAsync(plan.Create, cancellationToken).ConfigureAwait(false);
        }

        await using (var monitor = await QemuMonitor.OpenAsync(Vm, cancellationToken).ConfigureAwait(false))
        {
            if (plan.Mode == QuorumRepairMode.InPlace)
            {
                await RepairInPlaceAsync(monitor, plan, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await ReplaceAsync(monitor, plan, cancellationToken).ConfigureAwait(false);
            }

            var updated = plan.Disk.WithReplica(plan.Replica.NodeName, plan.NewReplica ?? plan.Replica, DateTimeOffset.UtcNow);
            await WriteRecordAsync(monitor, updated).ConfigureAwait(false);
        }

        return (await GetAsync(plan.Disk.Drive, probe: false, cancellationToken).ConfigureAwait(false)).Single();
    }

    private async Task RepairInPlaceAsync(QemuMonitor monitor, QuorumRepairPlan plan, CancellationToken cancellationToken)
    {
        var disk = plan.Disk;
        var node = plan.Replica.NodeName;
        var outOfQuorum = false;
        var paused = false;
        try
        {
            if (plan.Child is not null)
            {
                await StepAsync(monitor, "x-blockdev-change", new JsonObject { ["parent"] = disk.NodeName, ["child"] = plan.Child }, cancellationToken).ConfigureAwait(false);
            }

            outOfQuorum = true;
            await StepAsync(monitor, "blockdev-mirror", MirrorArguments(disk, plan.JobId, node, null), cancellationToken).ConfigureAwait(false);
            await WaitJobAsync(monitor, plan, untilReady: true, cancellationToken).ConfigureAwait(false);

            var state = QmpVirtualMachine.ParseRunState(await monitor.ExecuteAsync("query-status", null, null, cancellationToken).ConfigureAwait(false));
            if (state == VmRunState.Running)
            {
                OperationContext.Reporter.Verbose(QemuMonitor.PlanPause(Vm, pause: true).ToString());
                await monitor.PauseAsync(cancellationToken).ConfigureAwait(false);
                paused = true;
            }

            // A cancelled mirror that is in sync completes without pivoting: the replica holds the majority's data.
            await StepAsync(monitor, "block-job-cancel", new JsonObject { ["device"] = plan.JobId }, CancellationToken.None).ConfigureAwait(false);
            await WaitJobAsync(monitor, plan, untilReady: false, CancellationToken.None).ConfigureAwait(false);
            await StepAsync(monitor, "x-blockdev-change", new JsonObject { ["parent"] = disk.NodeName, ["node"] = node }, CancellationToken.None).ConfigureAwait(false);
            outOfQuorum = false;
        }
        catch (Exception ex) when (ex is ReplicaException or OperationCanceledException)
        {
            await AbandonJobAsync(monitor, plan.JobId).ConfigureAwait(false);
            var restored = false;
            if (outOfQuorum)
            {
                restored = await TryStepAsync(monitor, "x-blockdev-change", new JsonObject { ["parent"] = disk.NodeName, ["node"] = node }).ConfigureAwait(false);
            }

            if (ex is OperationCanceledException)
            {
                throw;
            }

            throw new QuorumException(QuorumErrorIds.RepairFailed, ReplicaErrorCategory.InvalidResult,
                $"Repairing replica {node} ({plan.Replica.Location.Text}) of quorum disk '{disk.Drive}' on {Vm.DisplayName} failed: {ex.Message} " +
                (outOfQuorum ? (restored ? "The replica was put back as it was (still unrepaired)." : "The replica could not be put back: the quorum runs without it; run Repair-QuorumDisk again.") : "Nothing was changed."),
                Host.Name, node, ex);
        }
        finally
        {
            if (paused)
            {
                OperationContext.Reporter.Verbose(QemuMonitor.PlanPause(Vm, pause: false).ToString());
                await monitor.ResumeAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    private async Task ReplaceAsync(QemuMonitor monitor, QuorumRepairPlan plan, CancellationToken cancellationToken)
    {
        var disk = plan.Disk;
        var fresh = plan.NewReplica!;
        var added = false;
        var swapped = false;
        try
        {
            await StepAsync(monitor, "blockdev-add", fresh.ToBlockdev(), cancellationToken).ConfigureAwait(false);
            added = true;
            await StepAsync(monitor, "blockdev-mirror", MirrorArguments(disk, plan.JobId, fresh.NodeName, plan.Replica.NodeName), cancellationToken).ConfigureAwait(false);
            await WaitJobAsync(monitor, plan, untilReady: true, cancellationToken).ConfigureAwait(false);
            await StepAsync(monitor, "block-job-complete", new JsonObject { ["device"] = plan.JobId }, CancellationToken.None).ConfigureAwait(false);
            await WaitJobAsync(monitor, plan, untilReady: false, CancellationToken.None).ConfigureAwait(false);
            swapped = true;
        }
        catch (Exception ex) when (ex is ReplicaException or OperationCanceledException)
        {
            await AbandonJobAsync(monitor, plan.JobId).ConfigureAwait(false);
            if (added)
            {
                await TryStepAsync(monitor, "blockdev-del", new JsonObject { ["node-name"] = fresh.NodeName }).ConfigureAwait(false);
            }

            if (ex is OperationCanceledException)
            {
                throw;
            }

            throw new QuorumException(QuorumErrorIds.RepairFailed, ReplicaErrorCategory.InvalidResult,
                $"Replacing replica {plan.Replica.NodeName} of quorum disk '{disk.Drive}' on {Vm.DisplayName} by {fresh.Location.Text} failed: {ex.Message} The quorum keeps its old replica.",
                Host.Name, fresh.Location.Text, ex);
        }

        if (swapped && !await TryStepAsync(monitor, "blockdev-del", new JsonObject { ["node-name"] = plan.Replica.NodeName }).ConfigureAwait(false))
        {
            OperationContext.Reporter.Warning($"The old replica node {plan.Replica.NodeName} ({plan.Replica.Location.Text}) stays open in QEMU; it is no longer part of the quorum.");
        }
    }

    private async Task StepAsync(QemuMonitor monitor, string command, JsonObject? arguments, CancellationToken cancellationToken)
    {
        OperationContext.Reporter.Verbose(QemuMonitor.Plan(Vm, command, arguments, command).ToString());
        await monitor.ExecuteAsync(command, arguments, TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
    }

    private async Task<bool> TryStepAsync(QemuMonitor monitor, string command, JsonObject? arguments)
    {
        try
        {
            await StepAsync(monitor, command, arguments, CancellationToken.None).ConfigureAwait(false);
            return true;
        }
        catch (ReplicaException ex)
        {
            OperationContext.Reporter.Warning($"{Vm.DisplayName}: '{command}' failed: {ex.Message}");
            return false;
        }
    }

    /// <summary>Ends a job that did not finish (force-cancel) and dismisses it, ignoring "not found".</summary>
    private async Task AbandonJobAsync(QemuMonitor monitor, string jobId)
    {
        try
        {
            var jobs = await monitor.ExecuteAsync("query-block-jobs", null, null, CancellationToken.None).ConfigureAwait(false);
            var job = jobs.EnumerateArray().FirstOrDefault(j => j.GetProperty("device").GetString() == jobId);
            if (job.ValueKind != JsonValueKind.Object)
            {
                return;
            }

            if (job.GetProperty("status").GetString() != "concluded")
            {
                await TryStepAsync(monitor, "block-job-cancel", new JsonObject { ["device"] = jobId, ["force"] = true }).ConfigureAwait(false);
                for (var i = 0; i < 100; i++)
                {
                    var again = await monitor.ExecuteAsync("query-block-jobs", null, null, CancellationToken.None).ConfigureAwait(false);
                    if (again.EnumerateArray().Any(j => j.GetProperty("device").GetString() == jobId && j.GetProperty("status").GetString() == "concluded"))
                    {
                        break;
                    }

                    await Task.Delay(100).ConfigureAwait(false);
                }
            }

            await TryStepAsync(monitor, "job-dismiss", new JsonObject { ["id"] = jobId }).ConfigureAwait(false);
        }
        catch (ReplicaException ex)
        {
            OperationContext.Reporter.Warning($"{Vm.DisplayName}: the block job {jobId} could not be cleaned up: {ex.Message}");
        }
    }

    /// <summary>
    /// Polls query-block-jobs (events do not reach libvirt's passthrough): until the job is ready (in sync), or until it
    /// has concluded and is dismissed. A job that concluded with an error throws with QEMU's error text.
    /// </summary>
    private async Task WaitJobAsync(QemuMonitor monitor, QuorumRepairPlan plan, bool untilReady, CancellationToken cancellationToken)
    {
        var activity = $"Repair-QuorumDisk {plan.Disk.Drive}";
        var status = plan.Mode == QuorumRepairMode.InPlace ? $"Rewriting {plan.Replica.Location.Text}" : $"Copying to {plan.NewReplica!.Location.Text}";
        var deadline = untilReady ? (DateTime?)null : DateTime.UtcNow + SwitchTimeout;
        try
        {
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var jobs = await monitor.ExecuteAsync("query-block-jobs", null, null, cancellationToken).ConfigureAwait(false);
                var job = jobs.EnumerateArray().FirstOrDefault(j => j.GetProperty("device").GetString() == plan.JobId);
                if (job.ValueKind != JsonValueKind.Object)
                {
                    throw new QuorumException(QuorumErrorIds.RepairFailed, ReplicaErrorCategory.InvalidResult, $"The block job {plan.JobId} vanished.", Host.Name, plan.JobId);
                }

                var jobStatus = job.GetProperty("status").GetString();
                if (job.TryGetProperty("error", out var error) && jobStatus == "concluded")
                {
                    await TryStepAsync(monitor, "job-dismiss", new JsonObject { ["id"] = plan.JobId }).ConfigureAwait(false);
                    throw new QuorumException(QuorumErrorIds.RepairFailed, ReplicaErrorCategory.WriteError, $"the copy failed: {error.GetString()}", Host.Name, plan.JobId);
                }

                if (untilReady && job.GetProperty("ready").GetBoolean())
                {
                    return;
                }

                if (!untilReady && jobStatus == "concluded")
                {
                    await StepAsync(monitor, "job-dismiss", new JsonObject { ["id"] = plan.JobId }, CancellationToken.None).ConfigureAwait(false);
                    return;
                }

                var length = job.GetProperty("len").GetInt64();
                var offset = job.GetProperty("offset").GetInt64();
                if (untilReady && length > 0)
                {
                    OperationContext.Reporter.Progress(new OperationProgress(activity, $"{status}: {Text.ByteSize.Format(offset)} of {Text.ByteSize.Format(length)}", (int)(offset * 100 / length)));
                }

                if (deadline is { } limit && DateTime.UtcNow > limit)
                {
                    throw new QuorumException(QuorumErrorIds.RepairFailed, ReplicaErrorCategory.OperationTimeout,
                        $"The block job {plan.JobId} did not finish within {SwitchTimeout.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s of being told to (status {jobStatus}).", Host.Name, plan.JobId);
                }

                await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            if (untilReady)
            {
                OperationContext.Reporter.Progress(new OperationProgress(activity, status, Completed: true));
            }
        }
    }

    private async Task WriteRecordAsync(QemuMonitor monitor, QuorumDefinition updated)
    {
        if (!await TryStepAsync(monitor, "object-del", new JsonObject { ["id"] = updated.RecordId }).ConfigureAwait(false)
            || !await TryStepAsync(monitor, "object-add", updated.RecordObject()).ConfigureAwait(false))
        {
            OperationContext.Reporter.Warning($"The module's record of quorum disk '{updated.Drive}' could not be updated; Get-QuorumDisk may show the replicas as they were before the repair.");
        }
    }
}
