using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Mirror;

/// <summary>
/// Mirrors a bare QEMU's disk with drive-mirror over QMP.
/// <list type="bullet">
/// <item>Job id <c>rt-mirror-&lt;drive&gt;</c>, <c>auto-dismiss: false</c>: a failed job stays queryable with its error
/// until Stop-DriveMirror dismisses it (a failure arrives as BLOCK_JOB_COMPLETED with an "error").</item>
/// <item><c>on-target-error: stop</c>: a write error on the destination (disk full) pauses the job instead of
/// throwing the copy away; the job shows Failed, and Resume-DriveMirror retries after the space is freed.</item>
/// <item>The destination is probed with qemu-img under a kill timeout first: drive-mirror to a hung NFS server would
/// block QEMU's main loop. Every QMP call has its own timeout.</item>
/// <item>A new destination is created by QEMU itself (mode absolute-paths), which knows a fresh image reads as zeros
/// and so skips the zeroing pass; -ReuseExisting uses mode existing.</item>
/// <item>What the job does not tell (destination, whether the module created it, the old source node) is kept in
/// QEMU itself, in a <c>secret</c> object with the job's id, read back with qom-get. Nothing is stored elsewhere,
/// and nothing blocks: query-named-block-nodes would (it stats every node, a dead NFS target included).</item>
/// </list>
/// </summary>
public sealed class QmpDriveMirror : DriveMirrorBackend
{
    private static readonly TimeSpan QueryTimeout = TimeSpan.FromSeconds(30);

    private static readonly TimeSpan MirrorCommandTimeout = TimeSpan.FromSeconds(60);

    public QmpDriveMirror(QmpVirtualMachine vm)
        : base(vm)
    {
        Vm = vm;
    }

    private QmpVirtualMachine Vm { get; }

    public override async Task<MirrorPlan> PlanStartAsync(MirrorStartRequest request, CancellationToken cancellationToken = default)
    {
        var view = await ReadAsync(cancellationToken).ConfigureAwait(false);
        if (view.State is not (VmRunState.Running or VmRunState.Paused))
        {
            throw new VmNotRunningException(Vm, view.State);
        }

        var disk = Vm.ResolveDisk(view.Disks, request.Drive);
        var jobId = QmpJobId(disk.Drive);
        if (view.Jobs.FirstOrDefault(j => j.GetProperty("device").GetString() == jobId) is { ValueKind: JsonValueKind.Object } existing)
        {
            throw new DriveMirrorException("MirrorAlreadyRunning", ReplicaErrorCategory.ResourceExists, Vm, disk.Drive, request.Destination.Text,
                $"{Vm.DisplayName}: drive '{disk.Drive}' already has a mirror job ({jobId}, status {existing.GetProperty("status").GetString()}).")
            {
                RecommendedAction = "Get-DriveMirror shows it; Stop-DriveMirror ends it (a failed one with -Force).",
            };
        }

        var sourceSize = disk.VirtualSize ?? throw new DriveMirrorException("SourceSizeUnknown", ReplicaErrorCategory.InvalidResult, Vm, disk.Drive, request.Destination.Text,
            $"{Vm.DisplayName}: QEMU did not report the size of drive '{disk.Drive}'.");
        var target = await CheckDestinationAsync(disk, request, sourceSize, cancellationToken).ConfigureAwait(false);
        var nodeName = $"rt-target-{Token(disk.Drive, 12)}-{Guid.NewGuid().ToString("N")[..6]}";
        var record = new JsonObject
        {
            ["drive"] = disk.Drive,
            ["source"] = disk.Source,
            ["source-node"] = disk.NodeName,
            ["destination"] = request.Destination.Text,
            ["format"] = target.Format,
            ["created"] = target.Create,
        };
        var recordArguments = new JsonObject { ["qom-type"] = "secret", ["id"] = jobId, ["data"] = record.ToJsonString() };
        var arguments = new JsonObject
        {
            ["job-id"] = jobId,
            ["device"] = disk.NodeName ?? disk.Drive,
            ["target"] = request.Destination.Text,
            ["format"] = target.Format,
            ["sync"] = request.Sync == MirrorSyncMode.Top ? "top" : "full",
            ["mode"] = target.Create ? "absolute-paths" : "existing",
            ["node-name"] = nodeName,
            ["speed"] = (long)request.BandwidthMBps * 1024 * 1024,
            ["on-target-error"] = "stop",
            ["auto-dismiss"] = false,
        };
        var steps = new List<PlannedCommand>();
        if (view.Records.ContainsKey(jobId))
        {
            steps.Add(Step("object-del", new JsonObject { ["id"] = jobId }, "delete the record a finished mirror left"));
        }

        steps.Add(Step("object-add", recordArguments, "record destination, format and source node in QEMU"));
        steps.Add(Step("drive-mirror", arguments, "start the mirror job"));
        return new MirrorPlan
        {
            VirtualMachine = Vm,
            Disk = disk,
            Destination = request.Destination,
            Format = target.Format,
            JobId = jobId,
            CreatesDestination = target.Create,
            SourceSize = sourceSize,
            Sync = request.Sync,
            BandwidthMBps = request.BandwidthMBps,
            Steps = steps,
        };
    }

    public override async Task<DriveMirrorJob> StartAsync(MirrorPlan plan, CancellationToken cancellationToken = default)
    {
        await using var qmp = await ConnectAsync(cancellationToken).ConfigureAwait(false);
        foreach (var command in plan.Steps.Select(step => step.Qmp!))
        {
            switch (command.Execute)
            {
                case "object-del":
                    await TryDeleteRecordAsync(qmp, plan.JobId, cancellationToken).ConfigureAwait(false);
                    break;
                case "drive-mirror":
                    try
                    {
                        await CallAsync(qmp, command.Execute, command.CopyArguments(), MirrorCommandTimeout, cancellationToken).ConfigureAwait(false);
                    }
                    catch (QmpException ex)
                    {
                        await TryDeleteRecordAsync(qmp, plan.JobId, cancellationToken).ConfigureAwait(false);
                        var undo = await UndoCreatedDestinationAsync(plan, cancellationToken).ConfigureAwait(false);
                        throw new DriveMirrorException("MirrorStartFailed", ReplicaErrorCategory.InvalidOperation, Vm, plan.Disk.Drive, plan.Destination.Text,
                            $"{Vm.DisplayName}: QEMU refused to mirror drive '{plan.Disk.Drive}' to {plan.Destination}: {ex.Description}{undo}.", ex);
                    }

                    break;
                default:
                    await CallAsync(qmp, command.Execute, command.CopyArguments(), QueryTimeout, cancellationToken).ConfigureAwait(false);
                    break;
            }
        }

        // Some failures (a destination of the wrong size) are accepted and then fail at once: give the job a moment.
        try
        {
            await qmp.WaitForEventAsync(e => e.Name is "BLOCK_JOB_COMPLETED" or "BLOCK_JOB_CANCELLED" or "BLOCK_JOB_READY" or "BLOCK_JOB_ERROR"
                                             && e.Data.TryGetProperty("device", out var d) && d.GetString() == plan.JobId, TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Still running: the normal case for a disk that takes more than a second to copy.
        }

        var jobs = await CallAsync(qmp, "query-block-jobs", null, QueryTimeout, cancellationToken).ConfigureAwait(false);
        var info = jobs.EnumerateArray().FirstOrDefault(j => j.GetProperty("device").GetString() == plan.JobId);
        if (info.ValueKind != JsonValueKind.Object || info.GetProperty("status").GetString() == "concluded")
        {
            var error = info.ValueKind == JsonValueKind.Object && info.TryGetProperty("error", out var e) ? e.GetString() : "the job vanished";
            await TryDismissAsync(qmp, plan.JobId, cancellationToken).ConfigureAwait(false);
            await TryDeleteRecordAsync(qmp, plan.JobId, cancellationToken).ConfigureAwait(false);
            var undo = await UndoCreatedDestinationAsync(plan, cancellationToken).ConfigureAwait(false);
            throw new DriveMirrorException("MirrorStartFailed", ReplicaErrorCategory.InvalidOperation, Vm, plan.Disk.Drive, plan.Destination.Text,
                $"{Vm.DisplayName}: the mirror of drive '{plan.Disk.Drive}' to {plan.Destination} failed as it started: {error}. The job was cleared{undo}.");
        }

        OperationContext.Reporter.Verbose($"[{Host.Name}] mirror job {plan.JobId} started: {plan.Disk.Drive} -> {plan.Destination}");
        return ToJob(info, plan.Disk, plan.Destination.Text, plan.Format, plan.CreatesDestination, plan.Disk.Source, plan.Disk.NodeName);
    }

    protected override async Task<IReadOnlyList<DriveMirrorJob>> QueryAsync(string? drive, CancellationToken cancellationToken)
    {
        var view = await ReadAsync(cancellationToken).ConfigureAwait(false);
        IEnumerable<VmDisk> disks = drive is null ? view.Disks : new[] { Vm.ResolveDisk(view.Disks, drive) };
        var result = new List<DriveMirrorJob>();
        foreach (var disk in disks)
        {
            var jobId = QmpJobId(disk.Drive);
            var info = view.Jobs.FirstOrDefault(j => j.GetProperty("device").GetString() == jobId);
            if (info.ValueKind != JsonValueKind.Object)
            {
                continue;
            }

            view.Records.TryGetValue(jobId, out var record);
            result.Add(ToJob(info, disk, record?["destination"]?.GetValue<string>(), record?["format"]?.GetValue<string>(), record?["created"]?.GetValue<bool>() ?? false,
                record?["source"]?.GetValue<string>() ?? disk.Source, record?["source-node"]?.GetValue<string>()));
        }

        return result;
    }

    public override async Task<DriveMirrorJob> SuspendAsync(string? drive, CancellationToken cancellationToken = default) =>
        await PauseOrResumeAsync(drive, "job-pause", cancellationToken).ConfigureAwait(false);

    public override async Task<DriveMirrorJob> ResumeAsync(string? drive, CancellationToken cancellationToken = default) =>
        await PauseOrResumeAsync(drive, "job-resume", cancellationToken).ConfigureAwait(false);

    public override async Task<MirrorStopPlan> PlanStopAsync(string? drive, bool pivot, bool force, CancellationToken cancellationToken = default)
    {
        var job = (await QueryAsync(drive, cancellationToken).ConfigureAwait(false)).FirstOrDefault() ?? throw NotFound(drive);
        var steps = new List<PlannedCommand>();
        var concluded = job.JobStatus == "concluded";
        bool cancel = false, clearOnly = false;
        if (pivot && (concluded || job.State == DriveMirrorState.Failed || !job.Ready))
        {
            throw NotReady(job, "pivot");
        }

        if (concluded)
        {
            clearOnly = true;
        }
        else if (job.State == DriveMirrorState.Failed)
        {
            if (!force)
            {
                throw new DriveMirrorException("MirrorFailed", ReplicaErrorCategory.InvalidOperation, job,
                    $"has failed ({job.Error}) and still holds the drive.")
                {
                    RecommendedAction = "Resume-DriveMirror after repairing the destination, or Stop-DriveMirror -Force to cancel it.",
                };
            }

            cancel = true;
            steps.Add(Step("block-job-cancel", new JsonObject { ["device"] = job.JobId, ["force"] = true }, "cancel the job (the copy stays incomplete)"));
        }
        else if (pivot)
        {
            steps.Add(Step("block-job-complete", new JsonObject { ["device"] = job.JobId }, "pivot the VM onto the copy"));
        }
        else if (job.Ready)
        {
            steps.Add(Step("block-job-cancel", new JsonObject { ["device"] = job.JobId, ["force"] = false }, "end the job, keeping a consistent copy"));
        }
        else if (!force)
        {
            throw NotReady(job, "stop");
        }
        else
        {
            cancel = true;
            steps.Add(Step("block-job-cancel", new JsonObject { ["device"] = job.JobId, ["force"] = true }, "cancel the job (the copy stays incomplete)"));
        }

        steps.Add(Step("job-dismiss", new JsonObject { ["id"] = job.JobId }, "clear the ended job"));
        var removes = (cancel || (clearOnly && job.State == DriveMirrorState.Failed)) && job.CreatedDestination && job.Destination is not null;
        if (removes)
        {
            steps.AddRange(PlanRemoveDestination(ImageLocation.Parse(job.Destination!)));
        }

        return new MirrorStopPlan { Job = job, Pivot = pivot && !clearOnly, Cancel = cancel, ClearOnly = clearOnly, RemovesDestination = removes, Steps = steps };
    }

    public override async Task<DriveMirrorJob> StopAsync(MirrorStopPlan plan, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var job = plan.Job;
        await using var qmp = await ConnectAsync(cancellationToken).ConfigureAwait(false);
        string? error = job.Error;
        if (!plan.ClearOnly)
        {
            if (plan.Pivot)
            {
                await CallAsync(qmp, "block-job-complete", new JsonObject { ["device"] = job.JobId }, QueryTimeout, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await CallAsync(qmp, "block-job-cancel", new JsonObject { ["device"] = job.JobId, ["force"] = plan.Cancel }, QueryTimeout, cancellationToken).ConfigureAwait(false);
            }

            var final = await WaitConcludedAsync(qmp, job, timeout, cancellationToken).ConfigureAwait(false);
            error = final.TryGetProperty("error", out var e) ? e.GetString() : null;
            job = ToJob(final, new VmDisk { Drive = job.Drive, Source = job.Source }, job.Destination, job.Format, job.CreatedDestination, job.Source, SourceNodeOf(job));
        }

        await TryDismissAsync(qmp, job.JobId, cancellationToken).ConfigureAwait(false);
        await TryDeleteRecordAsync(qmp, job.JobId, cancellationToken).ConfigureAwait(false);
        if (plan.Pivot)
        {
            if (error is not null)
            {
                throw new DriveMirrorException("PivotFailed", ReplicaErrorCategory.InvalidOperation, job,
                    $"could not pivot: {error}. The VM still runs on {job.Source}.");
            }

            await ReleaseOldSourceAsync(qmp, job, cancellationToken).ConfigureAwait(false);
            return Copy(job, DriveMirrorState.Pivoted, null);
        }

        if (!plan.Cancel && !plan.ClearOnly && error is null)
        {
            return Copy(job, DriveMirrorState.Stopped, null);
        }

        var note = await SettleIncompleteDestinationAsync(plan, cancellationToken).ConfigureAwait(false);
        if (plan.ClearOnly && error is null)
        {
            return Copy(job, DriveMirrorState.Stopped, null);
        }

        return Copy(job, plan.ClearOnly ? DriveMirrorState.Failed : DriveMirrorState.Cancelled, plan.ClearOnly ? $"{error}; {note}" : $"cancelled before sync; {note}");
    }

    private PlannedCommand Step(string command, JsonObject arguments, string purpose) =>
        PlannedCommand.ForQmp(Host.Name, new QmpCommand(Vm.SocketPath, command, arguments), purpose);

    private async Task<DriveMirrorJob> PauseOrResumeAsync(string? drive, string command, CancellationToken cancellationToken)
    {
        var job = (await QueryAsync(drive, cancellationToken).ConfigureAwait(false)).FirstOrDefault() ?? throw NotFound(drive);
        await using (var qmp = await ConnectAsync(cancellationToken).ConfigureAwait(false))
        {
            try
            {
                await CallAsync(qmp, command, new JsonObject { ["id"] = job.JobId }, QueryTimeout, cancellationToken).ConfigureAwait(false);
            }
            catch (QmpException ex)
            {
                throw new DriveMirrorException(command == "job-pause" ? "MirrorSuspendFailed" : "MirrorResumeFailed", ReplicaErrorCategory.InvalidOperation, job,
                    $"cannot be {(command == "job-pause" ? "suspended" : "resumed")} in state {job.State}: {ex.Description}", ex);
            }
        }

        return (await QueryAsync(job.Drive, cancellationToken).ConfigureAwait(false)).FirstOrDefault() ?? job;
    }

    /// <summary>Polls until the job reaches "concluded" (events may have been sent to nobody): the job's final query-block-jobs entry.</summary>
    private async Task<JsonElement> WaitConcludedAsync(QmpClient qmp, DriveMirrorJob job, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var jobs = await CallAsync(qmp, "query-block-jobs", null, QueryTimeout, cancellationToken).ConfigureAwait(false);
            var info = jobs.EnumerateArray().FirstOrDefault(j => j.GetProperty("device").GetString() == job.JobId);
            if (info.ValueKind != JsonValueKind.Object || info.GetProperty("status").GetString() == "concluded")
            {
                return info.ValueKind == JsonValueKind.Object ? info.Clone() : JsonDocument.Parse("{}").RootElement;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new DriveMirrorException("MirrorStopTimeout", ReplicaErrorCategory.OperationTimeout, job,
                    $"did not end within {timeout.TotalSeconds:0} s of the stop request (status {info.GetProperty("status").GetString()}, " +
                    $"offset {info.GetProperty("offset").GetInt64()} of {info.GetProperty("len").GetInt64()}).")
                {
                    RecommendedAction = "QEMU finishes a cancel or pivot only once the destination answers: bring the destination server back, or stop the VM. Stop-DriveMirror again later clears the job.",
                };
            }

            await Task.Delay(250, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task TryDismissAsync(QmpClient qmp, string jobId, CancellationToken cancellationToken)
    {
        try
        {
            await CallAsync(qmp, "job-dismiss", new JsonObject { ["id"] = jobId }, QueryTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (QmpException ex)
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] job-dismiss {jobId}: {ex.Description}");
        }
    }

    /// <summary>
    /// After a pivot the old source node is unused but still open (a -blockdev node stays until deleted): close it, so a
    /// failing NFS1 is out of the picture. Only if its storage answers: closing an image on a dead NFS server would block
    /// QEMU's main loop until the server returns.
    /// </summary>
    private async Task ReleaseOldSourceAsync(QmpClient qmp, DriveMirrorJob job, CancellationToken cancellationToken)
    {
        var node = SourceNodeOf(job);
        if (node is null || node.StartsWith('#') || job.Source is null)
        {
            return;
        }

        var probe = await ImageProbe.ProbeAsync(Host, ImageLocation.Parse(job.Source), null, false, null, cancellationToken).ConfigureAwait(false);
        if (!probe.IsReadable)
        {
            OperationContext.Reporter.Warning($"The old source {job.Source} (node {node}) stays open in QEMU: its storage does not answer ({probe.Reason}). " +
                                              $"Close it later with QMP blockdev-del {node} once the server is back.");
            return;
        }

        try
        {
            await CallAsync(qmp, "blockdev-del", new JsonObject { ["node-name"] = node }, QueryTimeout, cancellationToken).ConfigureAwait(false);
            OperationContext.Reporter.Verbose($"[{Host.Name}] closed the old source node {node} ({job.Source})");
        }
        catch (QmpException ex)
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] the old source node {node} stays open: {ex.Description}");
        }
    }

    private async Task TryDeleteRecordAsync(QmpClient qmp, string jobId, CancellationToken cancellationToken)
    {
        try
        {
            await CallAsync(qmp, "object-del", new JsonObject { ["id"] = jobId }, QueryTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (QmpException ex)
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] object-del {jobId}: {ex.Description}");
        }
    }

    private static string? SourceNodeOf(DriveMirrorJob job) => job.SourceNode;

    private DriveMirrorJob ToJob(JsonElement info, VmDisk disk, string? destination, string? format, bool created, string? source = null, string? sourceNode = null)
    {
        var status = info.TryGetProperty("status", out var s) ? s.GetString() : "concluded";
        var ioStatus = info.TryGetProperty("io-status", out var io) ? io.GetString() : "ok";
        var error = info.TryGetProperty("error", out var e) ? e.GetString() : null;
        var ready = info.TryGetProperty("ready", out var r) && r.GetBoolean();
        var state = status switch
        {
            "ready" => DriveMirrorState.Ready,
            "paused" or "standby" when ioStatus is not "ok" => DriveMirrorState.Failed,
            "paused" or "standby" => DriveMirrorState.Paused,
            "concluded" or "null" when error is null => DriveMirrorState.Stopped,
            "concluded" or "null" => DriveMirrorState.Failed,
            _ when ioStatus is not "ok" => DriveMirrorState.Failed,
            _ => DriveMirrorState.Running,
        };
        if (state == DriveMirrorState.Failed && error is null)
        {
            error = $"destination write error (io-status {ioStatus}); QEMU paused the job. Free space on / repair the destination, then Resume-DriveMirror, or Stop-DriveMirror -Force";
        }

        var job = new DriveMirrorJob(Vm.Target)
        {
            Drive = disk.Drive,
            Source = source ?? disk.Source,
            Destination = destination,
            Format = format,
            JobId = info.TryGetProperty("device", out var d) ? d.GetString()! : QmpJobId(disk.Drive),
            State = state,
            JobStatus = status,
            BytesDone = info.TryGetProperty("offset", out var o) ? o.GetInt64() : 0,
            BytesTotal = info.TryGetProperty("len", out var l) ? l.GetInt64() : 0,
            Ready = ready,
            BandwidthMBps = info.TryGetProperty("speed", out var speed) ? Math.Round(speed.GetInt64() / 1048576.0, 2) : 0,
            Error = error,
            CreatedDestination = created,
            SourceNode = sourceNode,
        };
        return job;
    }

    private async Task<QmpClient> ConnectAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await Vm.ConnectAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (QmpConnectionException ex)
        {
            // Nothing answers on the socket: for a bare QEMU that means the VM is not running.
            throw new VmNotRunningException(Vm, VmRunState.ShutOff, ex.Message);
        }
    }

    private sealed record View(VmRunState State, IReadOnlyList<VmDisk> Disks, IReadOnlyList<JsonElement> Jobs, IReadOnlyDictionary<string, JsonObject> Records);

    /// <summary>One connection, the read-only queries every operation starts with (none of them touches the destination).</summary>
    private async Task<View> ReadAsync(CancellationToken cancellationToken)
    {
        await using var qmp = await ConnectAsync(cancellationToken).ConfigureAwait(false);
        var status = await CallAsync(qmp, "query-status", null, QueryTimeout, cancellationToken).ConfigureAwait(false);
        var blocks = await CallAsync(qmp, "query-block", null, QueryTimeout, cancellationToken).ConfigureAwait(false);
        var jobs = await CallAsync(qmp, "query-block-jobs", null, QueryTimeout, cancellationToken).ConfigureAwait(false);
        var records = new Dictionary<string, JsonObject>(StringComparer.Ordinal);
        foreach (var entry in await ListObjectsAsync(qmp, cancellationToken).ConfigureAwait(false))
        {
            var name = entry.GetProperty("name").GetString();
            if (name is null || !name.StartsWith("rt-mirror-", StringComparison.Ordinal) || entry.GetProperty("type").GetString() != "child<secret>")
            {
                continue;
            }

            var data = await CallAsync(qmp, "qom-get", new JsonObject { ["path"] = "/objects/" + name, ["property"] = "data" }, QueryTimeout, cancellationToken).ConfigureAwait(false);
            try
            {
                if (JsonNode.Parse(data.GetString() ?? "{}") is JsonObject record)
                {
                    records[name] = record;
                }
            }
            catch (JsonException)
            {
                // Not one of ours after all.
            }
        }

        return new View(QmpVirtualMachine.ParseRunState(status), QmpVirtualMachine.ParseQueryBlock(blocks), jobs.EnumerateArray().Select(j => j.Clone()).ToArray(), records);
    }

    /// <summary>
    /// The children of QOM's /objects container. QEMU creates that container only with its first user-creatable object,
    /// so a QEMU started with <c>-machine none</c> and no -object answers DeviceNotFound: that means "no objects", hence no
    /// mirror records.
    /// </summary>
    private async Task<IReadOnlyList<JsonElement>> ListObjectsAsync(QmpClient qmp, CancellationToken cancellationToken)
    {
        try
        {
            var objects = await CallAsync(qmp, "qom-list", new JsonObject { ["path"] = "/objects" }, QueryTimeout, cancellationToken).ConfigureAwait(false);
            return objects.EnumerateArray().ToArray();
        }
        catch (QmpDeviceNotFoundException)
        {
            return Array.Empty<JsonElement>();
        }
    }

    /// <summary>A QMP call with its own timeout: a QEMU whose main loop is blocked (hung NFS) must not hang the cmdlet.</summary>
    private async Task<JsonElement> CallAsync(QmpClient qmp, string command, JsonObject? arguments, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (command is not ("query-status" or "query-block" or "query-block-jobs" or "qom-list" or "qom-get"))
        {
            OperationContext.Reporter.Verbose(PlannedCommand.ForQmp(Host.Name, new QmpCommand(Vm.SocketPath, command, (JsonObject?)arguments?.DeepClone()), command).ToString());
        }

        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        try
        {
            return (await qmp.ExecuteAsync(command, arguments, limit.Token).ConfigureAwait(false)).Clone();
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new ReplicaException("QmpTimeout", ReplicaErrorCategory.OperationTimeout,
                $"{Vm.DisplayName} did not answer QMP '{command}' within {timeout.TotalSeconds:0} s. Its main loop may be blocked, for example by a hung NFS server it has open.",
                Host.Name, Vm.SocketPath)
            {
                RecommendedAction = "Check the VM's storage servers; QEMU answers again once they do.",
            };
        }
    }

}
