using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
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
public sealed partial class QmpDriveMirror : DriveMirrorBackend
{
    private static readonly TimeSpan QueryTimeout = TimeSpan.FromSeconds(30);

    /// <summary>QMP commands as operators read them in -WhatIf and verbose output (no \u0022 escapes).</summary>
    private static readonly JsonSerializerOptions Display = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private static readonly TimeSpan MirrorCommandTimeout = TimeSpan.FromSeconds(60);

    public QmpDriveMirror(QmpVirtualMachine vm)
        : base(vm)
    {
        Vm = vm;
    }

    private QmpVirtualMachine Vm { get; }

    private string Channel => $"qmp {Vm.SocketPath}: ";

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
        var target = await CheckDestinationAsync(Vm, disk, request, sourceSize, cancellationToken).ConfigureAwait(false);
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
        var recordCommand = new JsonObject { ["execute"] = "object-add", ["arguments"] = new JsonObject { ["qom-type"] = "secret", ["id"] = jobId, ["data"] = record.ToJsonString() } };
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
        var command = new JsonObject { ["execute"] = "drive-mirror", ["arguments"] = arguments };
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
            Steps = view.Records.ContainsKey(jobId)
                ? new[] { Step("object-del", new JsonObject { ["id"] = jobId }), new PlanStep(Host.Name, Channel, recordCommand.ToJsonString(Display)), new PlanStep(Host.Name, Channel, command.ToJsonString(Display)) }
                : new[] { new PlanStep(Host.Name, Channel, recordCommand.ToJsonString(Display)), new PlanStep(Host.Name, Channel, command.ToJsonString(Display)) },
            Payload = (arguments, (JsonObject)recordCommand["arguments"]!, view.Records.ContainsKey(jobId)),
        };
    }

    public override async Task<DriveMirrorJob> StartAsync(MirrorPlan plan, CancellationToken cancellationToken = default)
    {
        var (arguments, record, staleRecord) = ((JsonObject, JsonObject, bool))plan.Payload!;
        await using var qmp = await ConnectAsync(cancellationToken).ConfigureAwait(false);
        if (staleRecord)
        {
            await TryDeleteRecordAsync(qmp, plan.JobId, cancellationToken).ConfigureAwait(false);
        }

        await CallAsync(qmp, "object-add", (JsonObject)record.DeepClone(), QueryTimeout, cancellationToken).ConfigureAwait(false);
        try
        {
            await CallAsync(qmp, "drive-mirror", (JsonObject)arguments.DeepClone(), MirrorCommandTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (QmpException ex)
        {
            await TryDeleteRecordAsync(qmp, plan.JobId, cancellationToken).ConfigureAwait(false);
            var undo = plan.CreatesDestination ? "; " + await RemoveCreatedDestinationAsync(plan.Destination, cancellationToken).ConfigureAwait(false) : string.Empty;
            throw new DriveMirrorException("MirrorStartFailed", ReplicaErrorCategory.InvalidOperation, Vm, plan.Disk.Drive, plan.Destination.Text,
                $"{Vm.DisplayName}: QEMU refused to mirror drive '{plan.Disk.Drive}' to {plan.Destination}: {ex.Description}{undo}.", ex);
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
            var undo = plan.CreatesDestination ? "; " + await RemoveCreatedDestinationAsync(plan.Destination, cancellationToken).ConfigureAwait(false) : string.Empty;
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
        var steps = new List<PlanStep>();
        var id = new JsonObject { ["id"] = job.JobId }.ToJsonString(Display);
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
            steps.Add(Step("block-job-cancel", new JsonObject { ["device"] = job.JobId, ["force"] = true }));
        }
        else if (pivot)
        {
            steps.Add(Step("block-job-complete", new JsonObject { ["device"] = job.JobId }));
        }
        else if (job.Ready)
        {
            steps.Add(Step("block-job-cancel", new JsonObject { ["device"] = job.JobId, ["force"] = false }));
        }
        else if (!force)
        {
            throw NotReady(job, "stop");
        }
        else
        {
            cancel = true;
            steps.Add(Step("block-job-cancel", new JsonObject { ["device"] = job.JobId, ["force"] = true }));
        }

        steps.Add(new PlanStep(Host.Name, Channel, $"{{\"execute\":\"job-dismiss\",\"arguments\":{id}}}"));
        var removes = (cancel || (clearOnly && job.State == DriveMirrorState.Failed)) && job.CreatedDestination && job.Destination is not null;
        if (removes)
        {
            steps.AddRange(RemoveCommands(ImageLocation.Parse(job.Destination!)).Select(c => new PlanStep(Host.Name, string.Empty, c.CommandLine)));
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

        var note = plan.RemovesDestination
            ? await RemoveCreatedDestinationAsync(ImageLocation.Parse(job.Destination!), cancellationToken).ConfigureAwait(false)
            : $"the incomplete destination {job.Destination} was left in place (Start-DriveMirror did not create it)";
        OperationContext.Reporter.Warning($"The mirror of {job.VM}:{job.Drive} ended before the copy was complete: {note}.");
        if (plan.ClearOnly && error is null)
        {
            return Copy(job, DriveMirrorState.Stopped, null);
        }

        return Copy(job, plan.ClearOnly ? DriveMirrorState.Failed : DriveMirrorState.Cancelled, plan.ClearOnly ? $"{error}; {note}" : $"cancelled before sync; {note}");
    }

    private DriveMirrorException NotReady(DriveMirrorJob job, string verb) => new(
        "MirrorNotReady", ReplicaErrorCategory.InvalidOperation, job,
        verb == "pivot"
            ? $"is not in sync yet ({job.PercentComplete:0.#}% copied, {job.State}): a pivot now would switch the VM onto an incomplete copy."
            : $"is not in sync yet ({job.PercentComplete:0.#}% copied, {job.State}): stopping now leaves an incomplete copy.")
    {
        RecommendedAction = verb == "pivot"
            ? "Wait-DriveMirror until it is Ready, then pivot."
            : "Wait-DriveMirror until it is Ready for a consistent copy, or pass -Force to cancel (an incomplete destination that Start-DriveMirror created is removed).",
    };

    private PlanStep Step(string command, JsonObject arguments) =>
        new(Host.Name, Channel, new JsonObject { ["execute"] = command, ["arguments"] = arguments }.ToJsonString(Display));

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

        var job = new DriveMirrorJob
        {
            QmpSocket = Vm.SocketPath,
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
            Backend = VmBackend.Qmp,
            Session = Vm.Session,
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
            OperationContext.Reporter.Verbose($"[{Host.Name}] {Channel}{new JsonObject { ["execute"] = command, ["arguments"] = arguments?.DeepClone() }.ToJsonString(Display)}");
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

    /// <summary>The destination checks both backends share: probe, existence, size and format. Nothing is changed.</summary>
    internal static async Task<(bool Create, string Format)> CheckDestinationAsync(VirtualMachine vm, VmDisk disk, MirrorStartRequest request, long sourceSize, CancellationToken cancellationToken)
    {
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

    internal static string Mib(long bytes) => (bytes / 1048576.0).ToString("0.##", CultureInfo.InvariantCulture);
}
