using System.Text.Json;
using System.Text.Json.Nodes;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Quorum;

/// <summary>
/// The quorum disks of one running VM: attach (blockdev-add of the replicas and the quorum node, device_add), list with
/// health, compare the replicas through QEMU, repair a replica in place or onto a new image. Works on a bare QEMU (its QMP
/// socket) and on a libvirt domain (QMP passthrough: libvirt has no quorum support, so the disk is invisible to libvirt's
/// own disk commands). What the module knows about each disk lives in QEMU itself, in a secret object
/// (<see cref="QuorumDefinition.RecordId"/>), for exactly as long as the VM runs.
/// </summary>
public sealed partial class QuorumDiskManager
{
    public QuorumDiskManager(VirtualMachine vm, StorageOptions? storageOptions = null)
    {
        ArgumentNullException.ThrowIfNull(vm);
        Vm = vm;
        StorageOptions = storageOptions ?? StorageOptions.Default;
    }

    public VirtualMachine Vm { get; }

    public IReplicaHost Host => Vm.Host;

    public StorageOptions StorageOptions { get; }

    /// <summary>How long a replica probe may take (qemu-img under a kill timeout).</summary>
    public TimeSpan ProbeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The state directory for event files (null: <see cref="QuorumEventRecorder.StateDirectoryAsync"/>).</summary>
    public string? StateDirectory { get; init; }

    // ------------------------------------------------------------------ the VM as QEMU shows it

    /// <summary>What every operation reads first, on one monitor: run state, block graph, quorum records, device ids.</summary>
    internal sealed record View(VmRunState State, QuorumGraph Graph, IReadOnlyList<QuorumDefinition> Disks, IReadOnlySet<string> ObjectIds, IReadOnlySet<string> DeviceIds);

    internal async Task<View> ReadViewAsync(QemuMonitor monitor, CancellationToken cancellationToken)
    {
        var status = await monitor.ExecuteAsync("query-status", null, null, cancellationToken).ConfigureAwait(false);
        var graph = QuorumGraph.Parse(await monitor.ExecuteAsync("x-debug-query-block-graph", null, null, cancellationToken).ConfigureAwait(false));
        var objects = await monitor.ExecuteAsync("qom-list", new JsonObject { ["path"] = "/objects" }, null, cancellationToken).ConfigureAwait(false);
        var objectIds = new HashSet<string>(StringComparer.Ordinal);
        var disks = new List<QuorumDefinition>();
        foreach (var entry in objects.EnumerateArray())
        {
            var name = entry.GetProperty("name").GetString();
            if (name is null)
            {
                continue;
            }

            objectIds.Add(name);
            if (!name.StartsWith(QuorumDefinition.RecordPrefix, StringComparison.Ordinal) || entry.GetProperty("type").GetString() != "child<secret>")
            {
                continue;
            }

            var data = await monitor.ExecuteAsync("qom-get", new JsonObject { ["path"] = "/objects/" + name, ["property"] = "data" }, null, cancellationToken).ConfigureAwait(false);
            try
            {
                disks.Add(QuorumDefinition.FromRecord(data.GetString() ?? string.Empty));
            }
            catch (Exception ex) when (ex is JsonException or ArgumentException or InvalidOperationException or NullReferenceException)
            {
                OperationContext.Reporter.Warning($"{Vm.DisplayName}: the object '{name}' does not hold a quorum record this module can read ({ex.Message}); it is skipped.");
            }
        }

        var peripherals = await monitor.ExecuteAsync("qom-list", new JsonObject { ["path"] = "/machine/peripheral" }, null, cancellationToken).ConfigureAwait(false);
        var devices = peripherals.EnumerateArray().Select(p => p.GetProperty("name").GetString()).OfType<string>().ToHashSet(StringComparer.Ordinal);
        return new View(QmpVirtualMachine.ParseRunState(status), graph, disks, objectIds, devices);
    }

    /// <summary>The quorum disk named <paramref name="drive"/> (device id or quorum node), or the VM's only one.</summary>
    internal QuorumDefinition ResolveDisk(View view, string? drive)
    {
        if (string.IsNullOrEmpty(drive))
        {
            return view.Disks.Count switch
            {
                1 => view.Disks[0],
                0 => throw new QuorumException(QuorumErrorIds.DiskNotFound, ReplicaErrorCategory.ObjectNotFound,
                    $"{Vm.DisplayName} has no quorum disk attached by ReplicaTools.", Host.Name, Vm.Name)
                {
                    RecommendedAction = "New-QuorumDisk attaches one; a disk wired by hand carries no record (see Get-Help New-QuorumDisk).",
                },
                _ => throw new QuorumException(QuorumErrorIds.DiskNotFound, ReplicaErrorCategory.InvalidArgument,
                    $"{Vm.DisplayName} has {view.Disks.Count} quorum disks; name one with -Drive: {string.Join(", ", view.Disks.Select(d => d.Drive))}.", Host.Name, Vm.Name),
            };
        }

        return view.Disks.FirstOrDefault(d => d.DeviceId == drive || d.NodeName == drive)
            ?? throw new QuorumException(QuorumErrorIds.DiskNotFound, ReplicaErrorCategory.ObjectNotFound,
                $"{Vm.DisplayName} has no quorum disk '{drive}'. Its quorum disks: {(view.Disks.Count == 0 ? "none" : string.Join(", ", view.Disks.Select(d => d.Drive)))}.", Host.Name, drive);
    }

    private static void EnsureRunning(VirtualMachine vm, View view)
    {
        if (view.State is not (VmRunState.Running or VmRunState.Paused))
        {
            throw new VmNotRunningException(vm, view.State);
        }
    }

    private async Task<string> EventFileAsync(CancellationToken cancellationToken)
    {
        var directory = StateDirectory ?? await QuorumEventRecorder.StateDirectoryAsync(Host, cancellationToken).ConfigureAwait(false);
        return QuorumEventRecorder.EventFile(directory, Vm);
    }

    // ------------------------------------------------------------------ New-QuorumDisk -VMName/-QmpSocket

    /// <summary>
    /// Validates the request against the replicas (<see cref="QuorumDiskBuilder"/>) and the running VM (names in use,
    /// replicas another quorum disk of this VM has), and lists every step. Read-only.
    /// </summary>
    /// <param name="eventSocket">For a bare QEMU: a second QMP socket for the event recorder; null runs none.</param>
    public async Task<QuorumDiskPlan> PlanAttachAsync(QuorumDiskRequest request, string? eventSocket, CancellationToken cancellationToken = default)
    {
        var plan = await new QuorumDiskBuilder(Vm.Session, StorageOptions).PlanAsync(request, cancellationToken).ConfigureAwait(false);
        var definition = plan.Definition;
        if (!string.IsNullOrEmpty(eventSocket))
        {
            await CheckEventSocketAsync(eventSocket, cancellationToken).ConfigureAwait(false);
        }

        await using (var monitor = await QemuMonitor.OpenAsync(Vm, cancellationToken).ConfigureAwait(false))
        {
            var view = await ReadViewAsync(monitor, cancellationToken).ConfigureAwait(false);
            EnsureRunning(Vm, view);
            var names = new[] { definition.NodeName }.Concat(definition.Replicas.SelectMany(r => new[] { r.NodeName, r.ProtocolNodeName }));
            if (names.FirstOrDefault(view.Graph.HasNode) is { } taken)
            {
                throw new QuorumException(QuorumErrorIds.NameInUse, ReplicaErrorCategory.ResourceExists,
                    $"{Vm.DisplayName} already has a block node '{taken}'.", Host.Name, taken)
                {
                    RecommendedAction = "Choose another -Drive or -NodeName.",
                };
            }

            if (definition.DeviceId is { } device && view.DeviceIds.Contains(device))
            {
                throw new QuorumException(QuorumErrorIds.NameInUse, ReplicaErrorCategory.ResourceExists,
                    $"{Vm.DisplayName} already has a device '{device}'.", Host.Name, device)
                {
                    RecommendedAction = "Choose another -Drive.",
                };
            }

            if (view.ObjectIds.Contains(definition.RecordId))
            {
                throw new QuorumException(QuorumErrorIds.NameInUse, ReplicaErrorCategory.ResourceExists,
                    $"{Vm.DisplayName} already has an object '{definition.RecordId}' (a quorum disk of that name).", Host.Name, definition.RecordId);
            }

            foreach (var other in view.Disks)
            {
                if (other.Replicas.FirstOrDefault(r => definition.Replicas.Any(n => n.Location.Equals(r.Location))) is { } shared)
                {
                    throw new QuorumException(QuorumErrorIds.ReplicaInUse, ReplicaErrorCategory.ResourceUnavailable,
                        $"The replica '{shared.Location.Text}' already belongs to quorum disk '{other.Drive}' of {Vm.DisplayName}.", Host.Name, shared.Location.Text);
                }
            }
        }

        string? eventFile = null;
        var steps = plan.Steps.ToList();
        if (Vm is LibvirtVirtualMachine || !string.IsNullOrEmpty(eventSocket))
        {
            eventFile = await EventFileAsync(cancellationToken).ConfigureAwait(false);
            steps.Add(QuorumEventRecorder.PlanStart(Vm, eventFile, eventSocket));
        }

        definition = definition with { EventFile = eventFile };
        steps.AddRange(definition.AttachCommands().Select(c => QemuMonitor.Plan(Vm, c.Command, c.Arguments, c.Purpose)));
        return new QuorumDiskPlan { Definition = definition, Creates = plan.Creates, Size = plan.Size, Steps = steps, Warnings = plan.Warnings };
    }

    /// <summary>The recorder's QMP socket: a bare QEMU's second socket, not the one the cmdlets use, and there.</summary>
    private async Task CheckEventSocketAsync(string eventSocket, CancellationToken cancellationToken)
    {
        if (Vm is not QmpVirtualMachine)
        {
            throw new QuorumException(QuorumErrorIds.EventSocketInvalid, ReplicaErrorCategory.InvalidArgument,
                $"-EventQmpSocket applies to a bare QEMU; for {Vm.DisplayName} the recorder listens through libvirt (virsh qemu-monitor-event).", Host.Name, eventSocket);
        }

        if (!eventSocket.StartsWith('/') || eventSocket == Vm.Name)
        {
            throw new QuorumException(QuorumErrorIds.EventSocketInvalid, ReplicaErrorCategory.InvalidArgument,
                eventSocket == Vm.Name
                    ? $"-EventQmpSocket '{eventSocket}' is the VM's -QmpSocket: the recorder keeps its socket for good, and QEMU serves one client per socket, so every later cmdlet would wait. Give the VM a second -qmp socket."
                    : $"-EventQmpSocket '{eventSocket}' must be an absolute path on host '{Host.Name}'.", Host.Name, eventSocket);
        }

        var probe = await Host.RunAsync(new CommandSpec("test", "-S", eventSocket) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false);
        if (probe.ExitCode != 0)
        {
            throw new QuorumException(QuorumErrorIds.EventSocketInvalid, ReplicaErrorCategory.ObjectNotFound,
                $"-EventQmpSocket '{eventSocket}' is not a socket on host '{Host.Name}'.", Host.Name, eventSocket)
            {
                RecommendedAction = "Start the VM with a second QMP socket (-qmp unix:PATH,server=on,wait=off) and pass that PATH.",
            };
        }
    }

    /// <summary>
    /// Runs an attach plan: creates the missing replicas, starts the event recorder, then the QMP steps. A failing step
    /// undoes the ones before it (device_del is not needed: the device is the last step) and removes created replicas.
    /// </summary>
    /// <exception cref="QuorumException">QuorumAttachFailed, with QEMU's reason.</exception>
    public async Task<QuorumDisk> AttachAsync(QuorumDiskPlan plan, string? eventSocket, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var builder = new QuorumDiskBuilder(Vm.Session, StorageOptions);
        foreach (var warning in plan.Warnings)
        {
            OperationContext.Reporter.Warning(warning);
        }

        await builder.CreateReplicasAsync(plan, cancellationToken).ConfigureAwait(false);
        var definition = plan.Definition;
        try
        {
            if (definition.EventFile is { } eventFile)
            {
                await QuorumEventRecorder.EnsureRunningAsync(Vm, eventFile, eventSocket, cancellationToken).ConfigureAwait(false);
            }

            await using var monitor = await QemuMonitor.OpenAsync(Vm, cancellationToken).ConfigureAwait(false);
            var done = new List<(string Command, JsonObject Arguments)>();
            try
            {
                foreach (var (command, arguments, purpose) in definition.AttachCommands())
                {
                    OperationContext.Reporter.Verbose(QemuMonitor.Plan(Vm, command, arguments, purpose).ToString());
                    await monitor.ExecuteAsync(command, arguments, TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
                    done.Add((command, arguments));
                }
            }
            catch (Exception ex) when (ex is ReplicaException or OperationCanceledException)
            {
                await UndoAttachAsync(monitor, done).ConfigureAwait(false);
                if (ex is OperationCanceledException)
                {
                    throw;
                }

                throw new QuorumException(QuorumErrorIds.AttachFailed, ReplicaErrorCategory.InvalidResult,
                    $"Attaching quorum disk '{definition.Drive}' to {Vm.DisplayName} failed: {ex.Message} The steps already done were undone.", Host.Name, definition.Drive, ex);
            }
        }
        catch
        {
            await builder.RemoveCreatedAsync(plan.Creates.Select(c => c.Location)).ConfigureAwait(false);
            throw;
        }

        return (await GetAsync(definition.Drive, probe: false, cancellationToken).ConfigureAwait(false)).Single();
    }

    private async Task UndoAttachAsync(QemuMonitor monitor, List<(string Command, JsonObject Arguments)> done)
    {
        foreach (var (command, arguments) in Enumerable.Reverse(done))
        {
            var (undo, undoArguments) = command switch
            {
                "object-add" => ("object-del", new JsonObject { ["id"] = (string?)arguments["id"] }),
                "blockdev-add" => ("blockdev-del", new JsonObject { ["node-name"] = (string?)arguments["node-name"] }),
                "device_add" => ("device_del", new JsonObject { ["id"] = (string?)arguments["id"] }),
                _ => (string.Empty, new JsonObject()),
            };
            if (undo.Length == 0)
            {
                continue;
            }

            try
            {
                OperationContext.Reporter.Verbose(QemuMonitor.Plan(Vm, undo, undoArguments, "undo").ToString());
                await monitor.ExecuteAsync(undo, undoArguments, null, CancellationToken.None).ConfigureAwait(false);
            }
            catch (ReplicaException ex)
            {
                OperationContext.Reporter.Warning($"Undoing '{command}' on {Vm.DisplayName} failed: {ex.Message}");
            }
        }
    }

    // ------------------------------------------------------------------ Get-QuorumDisk

    /// <summary>
    /// The VM's quorum disks (or the one named <paramref name="drive"/>), each replica with its health: events from the
    /// recorder's file and from this call's own QMP connection, the graph (a replica no longer a child is Detached) and,
    /// with <paramref name="probe"/>, a probe of each replica's storage from the VM host.
    /// </summary>
    public async Task<IReadOnlyList<QuorumDisk>> GetAsync(string? drive, bool probe, CancellationToken cancellationToken = default)
    {
        View view;
        IReadOnlyList<QmpEvent> seen;
        await using (var monitor = await QemuMonitor.OpenAsync(Vm, cancellationToken).ConfigureAwait(false))
        {
            view = await ReadViewAsync(monitor, cancellationToken).ConfigureAwait(false);
            seen = monitor.TakeEvents();
        }

        var disks = string.IsNullOrEmpty(drive) ? view.Disks : new[] { ResolveDisk(view, drive) };
        var unrecorded = view.Graph.QuorumNodes().Where(n => view.Disks.All(d => d.NodeName != n)).ToArray();
        if (string.IsNullOrEmpty(drive) && unrecorded.Length > 0)
        {
            OperationContext.Reporter.Warning($"{Vm.DisplayName} also has quorum node(s) {string.Join(", ", unrecorded)} that ReplicaTools did not attach: they carry no record of their replicas and options, so they are not listed.");
        }

        var live = seen.Select(e => QuorumEventRecorder.FromQmp(e.Name, e.Data, e.Timestamp, "monitor")).OfType<QuorumEvent>().ToArray();
        var files = new Dictionary<string, IReadOnlyList<QuorumEvent>>(StringComparer.Ordinal);
        var recorders = new Dictionary<string, bool>(StringComparer.Ordinal);
        foreach (var file in disks.Select(d => d.EventFile).OfType<string>().Distinct())
        {
            files[file] = await QuorumEventRecorder.ReadAsync(Host, file, cancellationToken).ConfigureAwait(false);
            recorders[file] = await QuorumEventRecorder.IsRunningAsync(Host, file, cancellationToken).ConfigureAwait(false);
        }

        var result = new List<QuorumDisk>();
        foreach (var definition in disks)
        {
            var recorded = definition.EventFile is { } f ? files[f] : Array.Empty<QuorumEvent>();
            var nodes = definition.Replicas.Select(r => r.NodeName).Append(definition.NodeName).ToHashSet(StringComparer.Ordinal);
            var events = recorded.Concat(live.Where(l => !recorded.Any(r => r.Timestamp == l.Timestamp && r.NodeName == l.NodeName && r.Name == l.Name)))
                .Where(e => nodes.Contains(e.NodeName)).OrderBy(e => e.Timestamp).ToArray();
            var source = definition.EventFile is null
                ? "this cmdlet's QMP connection only (no event recorder runs for this VM)"
                : $"recorder file {definition.EventFile} on {Host.Name}{(recorders[definition.EventFile] ? string.Empty : " (the recorder is not running: newer events are missing)")}, and this cmdlet's QMP connection";
            if (Vm is LibvirtVirtualMachine && definition.EventFile is null)
            {
                source = "none (no event recorder runs for this domain; libvirt's QMP passthrough carries no events)";
            }

            result.Add(await BuildDiskAsync(view, definition, events, source, probe, cancellationToken).ConfigureAwait(false));
        }

        return result;
    }

    private async Task<QuorumDisk> BuildDiskAsync(View view, QuorumDefinition definition, IReadOnlyList<QuorumEvent> events, string source, bool probe, CancellationToken cancellationToken)
    {
        var children = view.Graph.ChildrenOf(definition.NodeName);
        var probes = probe
            ? await Task.WhenAll(definition.Replicas.Select(r => QuorumProbe.ProbeOpenAsync(Host, r.Location, ProbeTimeout, cancellationToken))).ConfigureAwait(false)
            : null;
        var replicas = new List<QuorumReplica>();
        for (var i = 0; i < definition.Replicas.Count; i++)
        {
            var spec = definition.Replicas[i];
            DateTimeOffset? since = definition.Since.TryGetValue(spec.NodeName, out var s) ? s : null;
            var reports = events.Where(e => e.Name == QuorumEvent.ReportBad && e.NodeName == spec.NodeName && (since is null || e.Timestamp >= since)).ToArray();
            var errors = reports.Count(r => r.Error is not null);
            var bad = reports.Length - errors;
            var edge = children.FirstOrDefault(c => c.Child == spec.NodeName).Edge;
            var (health, reason) = edge is null
                ? (QuorumReplicaHealth.Detached, $"it is not a child of quorum node '{definition.NodeName}' (taken out and not put back)")
                : probes?[i] is { Status: not QuorumProbeStatus.Readable } failed
                    ? (QuorumReplicaHealth.Unreachable, failed.Reason)
                    : errors > 0
                        ? (QuorumReplicaHealth.Failing, $"{errors} I/O error report{(errors == 1 ? string.Empty : "s")}, the latest: {reports.Last(r => r.Error is not null).Error}")
                        : bad > 0
                            ? (QuorumReplicaHealth.Corrupt, $"outvoted {bad} time{(bad == 1 ? string.Empty : "s")}: its data disagreed with the majority")
                            : (QuorumReplicaHealth.Healthy, string.Empty);
            replicas.Add(new QuorumReplica(Vm.Target)
            {
                Drive = definition.Drive,
                QuorumNode = definition.NodeName,
                Index = i + 1,
                Child = edge,
                NodeName = spec.NodeName,
                Location = spec.Location.Text,
                Transport = spec.Location.Transport,
                StorageHost = spec.Location.StorageHost ?? Host.Name,
                Format = spec.Format,
                Health = health,
                Reason = reason,
                BadReports = bad,
                ErrorReports = errors,
                LastReport = reports.LastOrDefault(),
                Since = since,
            });
        }

        var healthy = replicas.Count(r => r.Health == QuorumReplicaHealth.Healthy);
        var state = healthy == replicas.Count ? QuorumDiskState.Healthy : healthy >= definition.VoteThreshold ? QuorumDiskState.Degraded : QuorumDiskState.NoQuorum;
        return new QuorumDisk(Vm.Target)
        {
            Drive = view.Graph.DeviceOf(definition.NodeName) ?? definition.DeviceId ?? definition.NodeName,
            QuorumNode = definition.NodeName,
            DeviceId = view.Graph.DeviceOf(definition.NodeName) ?? definition.DeviceId,
            VoteThreshold = definition.VoteThreshold,
            ReadPattern = definition.ReadPattern,
            RewriteCorrupted = definition.RewriteCorrupted,
            Blkverify = definition.Blkverify,
            State = state,
            Replicas = replicas,
            Events = events,
            Failures = events.Where(e => e.Name == QuorumEvent.Failure).ToArray(),
            EventSource = source,
            Definition = definition,
        };
    }
}
