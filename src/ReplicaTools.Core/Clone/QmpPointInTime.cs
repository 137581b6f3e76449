using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// Point in time of a bare QEMU by image fleecing: blockdev-backup sync=none into a scratch qcow2 whose backing is the
/// live disk node (the copy-before-write filter keeps the old data of every block the guest overwrites), in ONE
/// transaction with the bitmap rotation; QEMU's own NBD server exports the scratch node read-only. The disk chain never
/// changes, so a crash leaves nothing but a scratch file. One QMP connection is held for the whole run (QEMU serves one
/// client at a time). Teardown order matters: export-del (hard) BEFORE job-cancel, or the export would serve live data.
/// </summary>
public sealed class QmpPointInTime : PointInTimeSource
{
    private static readonly TimeSpan SettleTimeout = TimeSpan.FromSeconds(60);
    private readonly QmpVirtualMachine qmpVm;
    private QmpClient? qmp;
    private string? runId;
    private string? scratchFile;
    private string? baseBitmap;
    private bool baseDisabled;
    private bool fleeceAdded;
    private bool jobStarted;
    private bool exportAdded;
    private bool serverStarted;
    private string? jobEnded;
    private int serverPort;

    public QmpPointInTime(QmpVirtualMachine vm, string scratchDirectory)
        : base(vm, scratchDirectory)
    {
        qmpVm = vm;
    }

    /// <summary>The disk's format node: bitmaps and the backup job act on it.</summary>
    public string Node => Disk.NodeName ?? throw new ReplicaException("NoNodeName", ReplicaErrorCategory.InvalidOperation, $"{Vm.DisplayName}: disk '{Disk.Drive}' has no node name.", Host.Name, Disk.Drive);

    public override async Task OpenAsync(string? drive, CancellationToken cancellationToken)
    {
        try
        {
            qmp = await qmpVm.ConnectAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (QmpConnectionException ex) when (ex.Message.Contains("no greeting", StringComparison.Ordinal))
        {
            throw new CloneInProgressException(Host.Name, $"the QMP socket '{qmpVm.SocketPath}' (another client, perhaps another clone, is connected)");
        }

        var status = await ExecuteAsync("query-status", null, cancellationToken).ConfigureAwait(false);
        var state = status.GetProperty("status").GetString();
        if (state is "shutdown" or "internal-error" or "guest-panicked")
        {
            throw new VmNotRunningException(Vm, VmRunState.ShutOff);
        }

        await ResolveDiskAsync(drive, cancellationToken).ConfigureAwait(false);
    }

    private async Task ResolveDiskAsync(string? drive, CancellationToken cancellationToken)
    {
        var blocks = await ExecuteAsync("query-block", null, cancellationToken).ConfigureAwait(false);
        Disk = Vm.ResolveDisk(QmpVirtualMachine.ParseQueryBlock(blocks), drive ?? Disk?.Drive);
        var nodes = await ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, cancellationToken).ConfigureAwait(false);
        if (CloneNames.IsCloneObject(Disk.NodeName))
        {
            // A stale fleecing filter sits above the disk: the disk's own node is the format node of the same file below it.
            var real = nodes.EnumerateArray().FirstOrDefault(n => n.GetProperty("file").GetString() == Disk.Source
                && n.GetProperty("node-name").GetString() is { } name && !name.StartsWith('#') && !CloneNames.IsCloneObject(name)
                && n.GetProperty("drv").GetString() is not ("file" or "copy-before-write" or "host_device"));
            if (real.ValueKind == JsonValueKind.Object)
            {
                Disk = new VmDisk
                {
                    Drive = Disk.Drive,
                    DeviceId = Disk.DeviceId,
                    NodeName = real.GetProperty("node-name").GetString(),
                    Source = Disk.Source,
                    Format = real.GetProperty("drv").GetString(),
                };
            }
        }

        var own = nodes.EnumerateArray().FirstOrDefault(n => n.GetProperty("node-name").GetString() == Disk.NodeName);
        VirtualSize = own.ValueKind == JsonValueKind.Object ? own.GetProperty("image").GetProperty("virtual-size").GetInt64() : 0;
    }

    public override async Task<IReadOnlyList<StaleFinding>> FindStaleStateAsync(string? chain, CancellationToken cancellationToken)
    {
        var findings = new List<StaleFinding>();
        foreach (var job in (await ExecuteAsync("query-block-jobs", null, cancellationToken).ConfigureAwait(false)).EnumerateArray())
        {
            var id = job.GetProperty("device").GetString();
            if (CloneNames.IsCloneObject(id))
            {
                findings.Add(new StaleFinding(StaleStateKind.BlockJob, id!, $"{job.GetProperty("type").GetString()}, {job.GetProperty("status").GetString()}: a point-in-time view that was never released"));
            }
        }

        foreach (var export in (await ExecuteAsync("query-block-exports", null, cancellationToken).ConfigureAwait(false)).EnumerateArray())
        {
            var id = export.GetProperty("id").GetString();
            if (CloneNames.IsCloneObject(id))
            {
                findings.Add(new StaleFinding(StaleStateKind.NbdExport, id!, $"of node {export.GetProperty("node-name").GetString()}"));
            }
        }

        var nodes = await ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, cancellationToken).ConfigureAwait(false);
        foreach (var node in nodes.EnumerateArray())
        {
            var name = node.GetProperty("node-name").GetString();
            if (CloneNames.IsCloneObject(name))
            {
                findings.Add(new StaleFinding(StaleStateKind.BlockNode, name!, $"{node.GetProperty("drv").GetString()}, {(node.TryGetProperty("file", out var file) ? file.GetString() : "?")}"));
            }
        }

        {
            var checkpoints = ParseBitmaps(nodes);
            foreach (var disabled in checkpoints.Where(c => c.IsCloneCheckpoint && c.Recording == false && c.DirtyBytes is not null))
            {
                findings.Add(new StaleFinding(StaleStateKind.DisabledBitmap, disabled.Name, "a checkpoint rotation was interrupted: this bitmap stopped recording and the new one was not committed"));
            }

            if (chain is not null)
            {
                var links = Chain(checkpoints, chain);
                if (links.Count > 1)
                {
                    findings.Add(new StaleFinding(StaleStateKind.CheckpointRotation, string.Join(", ", links.Select(l => l.Name)), "more than one bitmap of this destination's chain: the last run did not finish"));
                }
            }
        }

        foreach (var file in await FindScratchFilesAsync(cancellationToken).ConfigureAwait(false))
        {
            findings.Add(new StaleFinding(StaleStateKind.ScratchFile, file, $"on host '{Host.Name}'"));
        }

        return findings;
    }

    /// <summary>
    /// Settles what an interrupted run left, in dependency order: exports, jobs (their filters go with them, no guest write
    /// is lost), scratch nodes, an NBD server nothing uses any more, the checkpoint rotation, scratch files.
    /// </summary>
    public override async Task RepairAsync(IReadOnlyList<StaleFinding> findings, string? chain, string? keep, CancellationToken cancellationToken)
    {
        var report = OperationContext.Reporter;
        IEnumerable<StaleFinding> Of(StaleStateKind kind) => findings.Where(f => f.Type == kind);
        foreach (var export in Of(StaleStateKind.NbdExport))
        {
            report.Warning($"Repair: removing the stale NBD export '{export.Name}' on {Vm.DisplayName}.");
            await RemoveExportAsync(export.Name, cancellationToken).ConfigureAwait(false);
        }

        foreach (var job in Of(StaleStateKind.BlockJob))
        {
            report.Warning($"Repair: cancelling the stale point-in-time job '{job.Name}' on {Vm.DisplayName} (its filter is removed; no guest write is lost).");
            await CancelJobAsync(job.Name, cancellationToken).ConfigureAwait(false);
        }

        foreach (var node in Of(StaleStateKind.BlockNode).Where(n => n.Name.EndsWith("-fleece", StringComparison.Ordinal)))
        {
            report.Warning($"Repair: deleting the stale scratch node '{node.Name}' on {Vm.DisplayName}.");
            await TryExecuteAsync("blockdev-del", NodeArguments(node.Name), cancellationToken).ConfigureAwait(false);
        }

        if (Of(StaleStateKind.NbdExport).Any() && (await ExecuteAsync("query-block-exports", null, cancellationToken).ConfigureAwait(false)).GetArrayLength() == 0)
        {
            // The NBD server was started by the interrupted run; with no exports left nothing else uses it.
            await TryExecuteAsync("nbd-server-stop", null, cancellationToken).ConfigureAwait(false);
        }

        await SettleRotationsAsync(chain, keep, cancellationToken).ConfigureAwait(false);
        var scratch = Of(StaleStateKind.ScratchFile).Select(f => f.Name).ToList();
        if (scratch.Count > 0)
        {
            report.Warning($"Repair: deleting scratch files on host '{Host.Name}': {string.Join(", ", scratch)}.");
            await DeleteFilesAsync(scratch, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// An unfinished checkpoint rotation, chain by chain: the keeper (the checkpoint the destination's metadata names, or
    /// the disabled base) survives; older bitmaps go; newer ones are merged back into a disabled keeper (which records
    /// again) or removed when uncommitted.
    /// </summary>
    private async Task SettleRotationsAsync(string? chain, string? keep, CancellationToken cancellationToken)
    {
        var report = OperationContext.Reporter;
        await ResolveDiskAsync(null, cancellationToken).ConfigureAwait(false);
        var checkpoints = await GetCheckpointsAsync(cancellationToken).ConfigureAwait(false);
        foreach (var group in checkpoints.Where(c => c.IsCloneCheckpoint).GroupBy(c => c.Chain!))
        {
            var links = group.OrderBy(c => c.Generation).ToList();
            if (links.Count < 2 && links.All(l => l.Recording != false))
            {
                continue;
            }

            var keeper = group.Key == chain && keep is not null
                ? links.FirstOrDefault(l => l.Name == keep)
                : links.FirstOrDefault(l => l.Recording == false && l.Problem?.StartsWith("inconsistent", StringComparison.Ordinal) != true);
            foreach (var older in links.Where(l => keeper is not null && l.Generation < keeper.Generation))
            {
                report.Warning($"Repair: removing the superseded bitmap '{older.Name}' on {Vm.DisplayName}.");
                await TryExecuteAsync("block-dirty-bitmap-remove", BitmapArguments(Node, older.Name), cancellationToken).ConfigureAwait(false);
            }

            var newer = links.Where(l => keeper is null || l.Generation > keeper.Generation).ToList();
            if (keeper is not null && keeper.Recording == false)
            {
                if (newer.Count == 0)
                {
                    report.Warning($"Repair: removing the disabled bitmap '{keeper.Name}' on {Vm.DisplayName}: it missed writes and nothing can complete it (the next clone is full).");
                    await TryExecuteAsync("block-dirty-bitmap-remove", BitmapArguments(Node, keeper.Name), cancellationToken).ConfigureAwait(false);
                    continue;
                }

                // Roll the rotation back: the newer bitmaps hold the writes since the keeper stopped recording.
                report.Warning($"Repair: rolling back the interrupted rotation on {Vm.DisplayName}: merging {string.Join(", ", newer.Select(n => n.Name))} into '{keeper.Name}' and re-enabling it.");
                var actions = new JsonArray { Action("block-dirty-bitmap-enable", BitmapArguments(Node, keeper.Name)) };
                actions.Add(Action("block-dirty-bitmap-merge", new JsonObject { ["node"] = Node, ["target"] = keeper.Name, ["bitmaps"] = new JsonArray(newer.Select(n => (JsonNode)JsonValue.Create(n.Name)!).ToArray()) }));
                foreach (var n in newer)
                {
                    actions.Add(Action("block-dirty-bitmap-remove", BitmapArguments(Node, n.Name)));
                }

                await ExecuteAsync("transaction", new JsonObject { ["actions"] = actions }, cancellationToken).ConfigureAwait(false);
                continue;
            }

            foreach (var n in newer.Where(n => keeper is not null || group.Key == chain))
            {
                report.Warning($"Repair: removing the uncommitted bitmap '{n.Name}' on {Vm.DisplayName}.");
                await TryExecuteAsync("block-dirty-bitmap-remove", BitmapArguments(Node, n.Name), cancellationToken).ConfigureAwait(false);
            }
        }

    }

    public override async Task<IReadOnlyList<DiskCheckpoint>> GetCheckpointsAsync(CancellationToken cancellationToken)
    {
        var nodes = await ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, cancellationToken).ConfigureAwait(false);
        return ParseBitmaps(nodes);
    }

    private List<DiskCheckpoint> ParseBitmaps(JsonElement nodes)
    {
        var list = new List<DiskCheckpoint>();
        foreach (var node in nodes.EnumerateArray())
        {
            if (node.GetProperty("node-name").GetString() != Disk.NodeName || !node.TryGetProperty("dirty-bitmaps", out var bitmaps))
            {
                continue;
            }

            foreach (var bitmap in bitmaps.EnumerateArray())
            {
                if (!bitmap.TryGetProperty("name", out var nameElement) || nameElement.GetString() is not { Length: > 0 } name)
                {
                    continue; // the anonymous bitmaps of jobs and filters
                }

                var inconsistent = bitmap.TryGetProperty("inconsistent", out var inc) && inc.GetBoolean();
                var recording = bitmap.GetProperty("recording").GetBoolean();
                var busy = bitmap.GetProperty("busy").GetBoolean();
                var persistent = bitmap.GetProperty("persistent").GetBoolean();
                var problem = inconsistent ? "inconsistent (QEMU was killed while it was recording); it must be removed"
                    : !recording && !busy ? "disabled: it stopped recording writes (an interrupted rotation)"
                    : !persistent ? "not persistent: it is lost when QEMU stops"
                    : null;
                list.Add(new DiskCheckpoint(Vm.Target)
                {
                    Drive = Disk.Drive,
                    Name = name,
                    Bitmap = name,
                    DirtyBytes = inconsistent ? null : bitmap.GetProperty("count").GetInt64(),
                    Recording = recording,
                    Persistent = persistent,
                    Granularity = bitmap.GetProperty("granularity").GetInt64(),
                    Usable = problem is null,
                    Problem = problem,
                });
            }
        }

        return list;
    }

    public override async Task<string?> CheckpointProblemAsync(string checkpoint, string? savedXml, CancellationToken cancellationToken)
    {
        var found = (await GetCheckpointsAsync(cancellationToken).ConfigureAwait(false)).FirstOrDefault(c => c.Name == checkpoint);
        return found is null ? $"the dirty bitmap '{checkpoint}' does not exist on node '{Node}' (QEMU was restarted from another image, or it was removed)"
            : found.Problem is not null ? $"the dirty bitmap '{checkpoint}' is {found.Problem}"
            : null;
    }

    /// <summary>
    /// The point in time in four steps: the scratch image (while QEMU's NBD server starts), the scratch node over the
    /// live disk, the freeze (bitmap rotation and fleecing in one transaction), the read-only export. Each step records
    /// what it made, so <see cref="StopAsync"/> undoes exactly that after any failure.
    /// </summary>
    public override async Task<PointInTimeExport> StartAsync(PointInTimeRequest request, CancellationToken cancellationToken)
    {
        runId = request.RunId;
        scratchFile = CloneNames.ScratchFile(ScratchDirectory, VmKey, runId);
        await CreateScratchWhileServerStartsAsync(request, cancellationToken).ConfigureAwait(false);
        await ExecuteAsync("blockdev-add", FleeceNodeArguments(runId, scratchFile, Node), cancellationToken).ConfigureAwait(false);
        fleeceAdded = true;
        await FreezeAsync(request, cancellationToken).ConfigureAwait(false);
        await ExecuteAsync("block-export-add", ExportArguments(runId, request.IncrementalFrom), cancellationToken).ConfigureAwait(false);
        exportAdded = true;
        OperationContext.Reporter.Verbose($"[{Host.Name}] point in time of {Vm.DisplayName} disk '{Disk.Drive}' exported as nbd://{request.Address}:{serverPort}/{CloneNames.Export(runId)}");
        return new PointInTimeExport(new NbdExportAddress(request.Address, serverPort, CloneNames.Export(runId)),
            request.IncrementalFrom is null ? null : "qemu:dirty-bitmap:" + request.IncrementalFrom, VirtualSize);
    }

    /// <summary>The scratch image is made while the NBD server starts (it costs a process on the VM host).</summary>
    private async Task CreateScratchWhileServerStartsAsync(PointInTimeRequest request, CancellationToken cancellationToken)
    {
        var creatingScratch = Host.RunAsync(ScratchCommand(scratchFile!, VirtualSize.ToString(CultureInfo.InvariantCulture)), cancellationToken);
        try
        {
            await StartServerAsync(request.Address, request.Ports, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            // Never leave the creation running behind a failure (StopAsync deletes the file).
            try
            {
                await creatingScratch.ConfigureAwait(false);
            }
            catch (Exception) when (!serverStarted)
            {
                // The server's failure is the one to report.
            }
        }

        await creatingScratch.ConfigureAwait(false);
    }

    /// <summary>The point in time: bitmap rotation and fleecing in one atomic transaction.</summary>
    private async Task FreezeAsync(PointInTimeRequest request, CancellationToken cancellationToken)
    {
        var incrementalFrom = request.IncrementalFrom;
        try
        {
            await ExecuteAsync("transaction", FreezeArguments(runId!, Node, incrementalFrom, request.NewCheckpoint), cancellationToken).ConfigureAwait(false);
        }
        catch (QmpException ex) when (incrementalFrom is not null && ex.Description.Contains(incrementalFrom, StringComparison.Ordinal))
        {
            throw new IncrementalUnavailableException($"QEMU refused the bitmap '{incrementalFrom}': {ex.Description}", ex);
        }

        jobStarted = true;
        baseBitmap = incrementalFrom;
        baseDisabled = incrementalFrom is not null;
        NewCheckpoint = request.NewCheckpoint;
    }

    /// <summary>qemu-img create for the scratch image: a sparse qcow2 of the disk's size.</summary>
    private static CommandSpec ScratchCommand(string scratchFile, string size) =>
        new("qemu-img", "create", "-q", "-f", "qcow2", scratchFile, size) { Timeout = TimeSpan.FromMinutes(2) };

    /// <summary>blockdev-add of the scratch node: a qcow2 over the scratch file whose backing is the live disk node.</summary>
    private static JsonObject FleeceNodeArguments(string runId, string scratchFile, string node) => new()
    {
        ["driver"] = "qcow2",
        ["node-name"] = CloneNames.FleeceNode(runId),
        ["file"] = new JsonObject { ["driver"] = "file", ["filename"] = scratchFile },
        ["backing"] = node,
    };

    /// <summary>
    /// The freeze transaction: the base bitmap stops recording (an exported bitmap must not record), the new one starts
    /// at this very instant, and blockdev-backup sync=none fleeces the disk into the scratch node.
    /// </summary>
    private static JsonObject FreezeArguments(string runId, string node, string? incrementalFrom, string? newCheckpoint)
    {
        var actions = new JsonArray();
        if (incrementalFrom is not null)
        {
            actions.Add(Action("block-dirty-bitmap-disable", new JsonObject { ["node"] = node, ["name"] = incrementalFrom }));
        }

        if (newCheckpoint is not null)
        {
            actions.Add(Action("block-dirty-bitmap-add", new JsonObject { ["node"] = node, ["name"] = newCheckpoint, ["persistent"] = true }));
        }

        actions.Add(Action("blockdev-backup", new JsonObject
        {
            ["job-id"] = CloneNames.Job(runId),
            ["device"] = node,
            ["target"] = CloneNames.FleeceNode(runId),
            ["sync"] = "none",
            ["filter-node-name"] = CloneNames.FilterNode(runId),
        }));
        return new JsonObject { ["actions"] = actions };
    }

    /// <summary>block-export-add: the frozen view, read-only over NBD, with the base bitmap for an incremental.</summary>
    private static JsonObject ExportArguments(string runId, string? incrementalFrom)
    {
        var export = new JsonObject
        {
            ["type"] = "nbd",
            ["id"] = CloneNames.ExportId(runId),
            ["node-name"] = CloneNames.FleeceNode(runId),
            ["name"] = CloneNames.Export(runId),
            ["writable"] = false,
        };
        if (incrementalFrom is not null)
        {
            export["bitmaps"] = new JsonArray(JsonValue.Create(incrementalFrom));
        }

        return export;
    }

    /// <summary>nbd-server-start on ADDRESS:PORT (QMP takes the port as a string).</summary>
    private static JsonObject ServerArguments(string address, string port) =>
        new() { ["addr"] = new JsonObject { ["type"] = "inet", ["data"] = new JsonObject { ["host"] = address, ["port"] = port } } };

    /// <summary>QEMU's NBD server on a port picked at random from the range, retried while ports are taken (QEMU 7.2 cannot report a port it chose).</summary>
    private async Task StartServerAsync(string address, (int First, int Last) ports, CancellationToken cancellationToken)
    {
        var random = new Random();
        for (var attempt = 1; ; attempt++)
        {
            serverPort = PickPort(random, ports);
            try
            {
                await ExecuteAsync("nbd-server-start", ServerArguments(address, serverPort.ToString(CultureInfo.InvariantCulture)), cancellationToken).ConfigureAwait(false);
                serverStarted = true;
                break;
            }
            catch (QmpException ex) when (ex.Description.Contains("already running", StringComparison.Ordinal))
            {
                throw new ReplicaException("NbdServerBusy", ReplicaErrorCategory.ResourceUnavailable,
                    $"{Vm.DisplayName} already runs an NBD server (QEMU allows one, and QEMU 7.2 cannot say on which port), started by another tool or by an interrupted clone whose exports are gone.",
                    Host.Name, Vm.Name)
                {
                    RecommendedAction = "If nothing else uses it, stop it: Invoke-NbdClone -Repair stops an NBD server that has no exports.",
                };
            }
            catch (QmpException ex) when (ex.Description.Contains("in use", StringComparison.OrdinalIgnoreCase) && attempt < 10)
            {
                OperationContext.Reporter.Verbose($"[{Host.Name}] NBD port {serverPort} is in use; trying another.");
            }
            catch (QmpException ex) when (ex.Description.Contains("Cannot assign requested address", StringComparison.OrdinalIgnoreCase))
            {
                throw new ReplicaException("ExportAddressInvalid", ReplicaErrorCategory.InvalidArgument,
                    $"{Vm.DisplayName}: QEMU cannot listen on '{address}' ({ex.Description}). Pass -ExportAddress with an address of host '{Host.Name}' that the destination can reach.", Host.Name, address);
            }
        }

    }

    public override async Task<string?> CheckAliveAsync(CancellationToken cancellationToken)
    {
        if (runId is null)
        {
            return "the point in time was not started";
        }

        while (qmp!.Events.TryRead(out var e))
        {
            var device = e.Data.ValueKind == JsonValueKind.Object && e.Data.TryGetProperty("device", out var d) ? d.GetString() : null;
            var id = e.Data.ValueKind == JsonValueKind.Object && e.Data.TryGetProperty("id", out var i) ? i.GetString() : null;
            if (device == CloneNames.Job(runId) && e.Name is "BLOCK_JOB_COMPLETED" or "BLOCK_JOB_CANCELLED" or "BLOCK_JOB_ERROR")
            {
                jobEnded ??= $"the fleecing job {CloneNames.Job(runId)} ended ({e.Name}{(e.Data.TryGetProperty("error", out var err) ? ": " + err.GetString() : string.Empty)})";
            }

            if (id == CloneNames.ExportId(runId) && e.Name == "BLOCK_EXPORT_DELETED")
            {
                jobEnded ??= $"the NBD export {CloneNames.ExportId(runId)} was deleted";
            }
        }

        if (jobEnded is not null)
        {
            return jobEnded;
        }

        JsonElement jobs, exports;
        try
        {
            jobs = await ExecuteAsync("query-block-jobs", null, cancellationToken).ConfigureAwait(false);
            exports = await ExecuteAsync("query-block-exports", null, cancellationToken).ConfigureAwait(false);
        }
        catch (QmpConnectionException ex)
        {
            return $"the QMP connection to QEMU was lost ({ex.Message})";
        }

        var job = jobs.EnumerateArray().FirstOrDefault(j => j.GetProperty("device").GetString() == CloneNames.Job(runId));
        if (job.ValueKind != JsonValueKind.Object)
        {
            return $"the fleecing job {CloneNames.Job(runId)} is gone";
        }

        var status = job.GetProperty("status").GetString();
        if (status is not ("running" or "paused" or "ready"))
        {
            return $"the fleecing job {CloneNames.Job(runId)} is {status}";
        }

        if (!exports.EnumerateArray().Any(x => x.GetProperty("id").GetString() == CloneNames.ExportId(runId)))
        {
            return $"the NBD export {CloneNames.ExportId(runId)} is gone";
        }

        return null;
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        if (runId is null)
        {
            return;
        }

        await EnsureConnectedAsync(cancellationToken).ConfigureAwait(false);
        if (qmp is not null)
        {
            if (exportAdded)
            {
                await RemoveExportAsync(CloneNames.ExportId(runId), cancellationToken).ConfigureAwait(false);
                exportAdded = false;
            }

            if (jobStarted)
            {
                await CancelJobAsync(CloneNames.Job(runId), cancellationToken).ConfigureAwait(false);
                jobStarted = false;
            }

            if (fleeceAdded)
            {
                await TryExecuteAsync("blockdev-del", NodeArguments(CloneNames.FleeceNode(runId)), cancellationToken).ConfigureAwait(false);
                fleeceAdded = false;
            }

            if (serverStarted)
            {
                await TryExecuteAsync("nbd-server-stop", null, cancellationToken).ConfigureAwait(false);
                serverStarted = false;
            }
        }

        if (scratchFile is not null)
        {
            await DeleteFilesAsync(new[] { scratchFile }, cancellationToken).ConfigureAwait(false);
            scratchFile = null;
        }
    }

    public override async Task CommitCheckpointsAsync(string chain, CancellationToken cancellationToken)
    {
        foreach (var old in Chain(await GetCheckpointsAsync(cancellationToken).ConfigureAwait(false), chain).Where(c => c.Name != NewCheckpoint))
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] removing the superseded bitmap '{old.Name}'");
            await ExecuteAsync("block-dirty-bitmap-remove", BitmapArguments(Node, old.Name), cancellationToken).ConfigureAwait(false);
        }
    }

    public override async Task RollbackCheckpointAsync(CancellationToken cancellationToken)
    {
        if (NewCheckpoint is null)
        {
            return;
        }

        await EnsureConnectedAsync(cancellationToken).ConfigureAwait(false);
        var actions = new JsonArray();
        if (baseDisabled && baseBitmap is not null)
        {
            // The new bitmap holds every write since the point in time; merged into the re-enabled old one, the old one
            // covers everything since the previous clone again, so the next run can retry from it.
            actions.Add(Action("block-dirty-bitmap-enable", BitmapArguments(Node, baseBitmap)));
            actions.Add(Action("block-dirty-bitmap-merge", new JsonObject { ["node"] = Node, ["target"] = baseBitmap, ["bitmaps"] = new JsonArray(JsonValue.Create(NewCheckpoint)) }));
        }

        actions.Add(Action("block-dirty-bitmap-remove", BitmapArguments(Node, NewCheckpoint)));
        await ExecuteAsync("transaction", new JsonObject { ["actions"] = actions }, cancellationToken).ConfigureAwait(false);
        NewCheckpoint = null;
        baseDisabled = false;
    }

    public override Task RemoveCheckpointAsync(string name, CancellationToken cancellationToken) =>
        ExecuteAsync("block-dirty-bitmap-remove", BitmapArguments(Node, name), cancellationToken);

    public override async ValueTask DisposeAsync()
    {
        if (qmp is not null)
        {
            await qmp.DisposeAsync().ConfigureAwait(false);
            qmp = null;
        }

        await base.DisposeAsync().ConfigureAwait(false);
    }

    public override IReadOnlyList<PlannedCommand> PlanStart(string? drive, string address, bool incremental, bool createsCheckpoint)
    {
        var node = $"NODE({PlannedDrive(drive)})";
        var scratch = CloneNames.ScratchFile(ScratchDirectory, VmKey, "RUN");
        var incrementalFrom = incremental ? "BASE" : null;
        return new[]
        {
            new PlannedCommand(Host.Name, ScratchCommand(scratch, "SIZE"), "create the scratch image (old data of blocks the guest overwrites)"),
            PlanQmp("nbd-server-start", ServerArguments(address, "PORT"), "start QEMU's NBD server"),
            PlanQmp("blockdev-add", FleeceNodeArguments("RUN", scratch, node), "add the scratch node over the live disk"),
            PlanQmp("transaction", FreezeArguments("RUN", node, incrementalFrom, createsCheckpoint ? "CHECKPOINT" : null), "freeze the point in time (fleecing) and rotate the checkpoint in one step"),
            PlanQmp("block-export-add", ExportArguments("RUN", incrementalFrom), "export the point in time read-only"),
        };
    }

    public override IReadOnlyList<PlannedCommand> PlanStop() => new[]
    {
        PlanQmp("block-export-del", ExportDeleteArguments(CloneNames.ExportId("RUN")), "end the export"),
        PlanQmp("job-cancel", IdArguments(CloneNames.Job("RUN")), "end the fleecing job"),
        PlanQmp("blockdev-del", NodeArguments(CloneNames.FleeceNode("RUN")), "remove the scratch node"),
        PlanQmp("nbd-server-stop", null, "stop QEMU's NBD server"),
        new PlannedCommand(Host.Name, new CommandSpec("rm", "-f", "--", CloneNames.ScratchFile(ScratchDirectory, VmKey, "RUN")), "delete the scratch image"),
    };

    public override PlannedCommand PlanRemoveCheckpoint(string? drive, string name) =>
        PlanQmp("block-dirty-bitmap-remove", BitmapArguments($"NODE({PlannedDrive(drive)})", name), "delete the checkpoint (a persistent dirty bitmap)");

    /// <summary>block-export-del (mode hard: open NBD connections are dropped), then wait until QEMU has let go of it.</summary>
    private async Task RemoveExportAsync(string id, CancellationToken cancellationToken)
    {
        await TryExecuteAsync("block-export-del", ExportDeleteArguments(id), cancellationToken).ConfigureAwait(false);
        await WaitUntilGoneAsync("query-block-exports", "id", id, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>job-cancel, then wait until the job is gone.</summary>
    private async Task CancelJobAsync(string id, CancellationToken cancellationToken)
    {
        await TryExecuteAsync("job-cancel", IdArguments(id), cancellationToken).ConfigureAwait(false);
        await WaitUntilGoneAsync("query-block-jobs", "device", id, cancellationToken).ConfigureAwait(false);
    }

    private static JsonObject ExportDeleteArguments(string id) => new() { ["id"] = id, ["mode"] = "hard" };

    private static JsonObject IdArguments(string id) => new() { ["id"] = id };

    private static JsonObject NodeArguments(string nodeName) => new() { ["node-name"] = nodeName };

    private static JsonObject BitmapArguments(string node, string name) => new() { ["node"] = node, ["name"] = name };

    private PlannedCommand PlanQmp(string command, JsonObject? arguments, string purpose) =>
        PlannedCommand.ForQmp(Host.Name, new QmpCommand(qmpVm.SocketPath, command, arguments), purpose);

    private static JsonObject Action(string type, JsonObject data) => new() { ["type"] = type, ["data"] = data };

    /// <summary>After the bridge or QEMU went away: one new connection for the teardown; none if QEMU is gone (then nothing is left to undo in it).</summary>
    private async Task EnsureConnectedAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (qmp is not null)
            {
                await qmp.ExecuteAsync("query-status", cancellationToken: cancellationToken).ConfigureAwait(false);
                return;
            }
        }
        catch (QmpConnectionException)
        {
            await qmp!.DisposeAsync().ConfigureAwait(false);
            qmp = null;
        }

        try
        {
            qmp = await qmpVm.ConnectAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (QmpConnectionException ex) when (ex.Message.Contains("does not exist", StringComparison.Ordinal) || ex.Message.Contains("cannot connect", StringComparison.Ordinal))
        {
            OperationContext.Reporter.Warning($"{Vm.DisplayName} is gone ({ex.Message}); there is no point-in-time state left in it to release.");
            exportAdded = jobStarted = fleeceAdded = serverStarted = false;
            NewCheckpoint = null;
        }
    }

    private async Task<JsonElement> ExecuteAsync(string command, JsonObject? arguments, CancellationToken cancellationToken)
    {
        var client = qmp ?? throw new QmpConnectionException($"{Host.Name}:{qmpVm.SocketPath}", "not connected", Host.Name);
        return await client.ExecuteAsync(command, arguments, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Teardown steps tolerate "not found": the object may already be gone (the failure being handled may be exactly that).</summary>
    private async Task TryExecuteAsync(string command, JsonObject? arguments, CancellationToken cancellationToken)
    {
        try
        {
            await ExecuteAsync(command, arguments, cancellationToken).ConfigureAwait(false);
        }
        catch (QmpException ex)
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] QMP {command}: {ex.Description}");
        }
    }

    private async Task WaitUntilGoneAsync(string query, string key, string id, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + SettleTimeout;
        while (true)
        {
            var list = await ExecuteAsync(query, null, cancellationToken).ConfigureAwait(false);
            if (!list.EnumerateArray().Any(item => item.GetProperty(key).GetString() == id))
            {
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new ReplicaException("QmpTeardownTimeout", ReplicaErrorCategory.OperationTimeout,
                    $"{Vm.DisplayName}: '{id}' was still listed by {query} {SettleTimeout.TotalSeconds:0} s after it was ended.", Host.Name, id);
            }

            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }
    }
}
