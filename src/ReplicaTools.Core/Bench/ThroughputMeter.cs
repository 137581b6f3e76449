using System.Diagnostics;
using System.Globalization;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Bench;

/// <summary>One measurement of a plan: a block size, an operation and the command that runs it.</summary>
public sealed record ThroughputStep(long BlockSize, ThroughputOperation Operation, ThroughputEngine Engine, PlannedCommand Command);

/// <summary>What <see cref="ThroughputMeter.RunAsync"/> will do for one target: probed facts and the exact commands.</summary>
public sealed class ThroughputPlan
{
    public required string HostName { get; init; }

    public required ThroughputTarget Target { get; init; }

    public required ThroughputRequest Request { get; init; }

    public required ThroughputEngine Engine { get; init; }

    /// <summary>Creating and laying out the scratch file (empty unless the cmdlet creates the target).</summary>
    public IReadOnlyList<PlannedCommand> Setup { get; init; } = Array.Empty<PlannedCommand>();

    /// <summary>The measurements, in order (qemu-img bench commands show the first trial's count; the real count is calibrated from it).</summary>
    public IReadOnlyList<ThroughputStep> Steps { get; init; } = Array.Empty<ThroughputStep>();

    /// <summary>Removing the scratch file.</summary>
    public IReadOnlyList<PlannedCommand> Cleanup { get; init; } = Array.Empty<PlannedCommand>();

    /// <summary>What the operator should know: writes skipped on a read-only target, buffered I/O and why.</summary>
    public IReadOnlyList<string> Notes { get; init; } = Array.Empty<string>();

    public bool Writes => Steps.Any(s => s.Operation == ThroughputOperation.Write);

    public IEnumerable<PlannedCommand> Commands => Setup.Concat(Steps.Select(s => s.Command)).Concat(Cleanup);

    /// <summary>Every command on its own line, as -WhatIf shows it.</summary>
    public string Describe() => PlannedCommand.Describe(Commands);
}

/// <summary>
/// Measures the throughput of targets from one load-generating host: plans with read-only probes
/// (<see cref="PlanAsync"/>, which also enforces the safety rules), then runs fio or qemu-img bench
/// (<see cref="RunAsync"/>), one <see cref="ThroughputSample"/> per block size and operation.
/// </summary>
public sealed class ThroughputMeter
{
    public ThroughputMeter(IReplicaHost host)
    {
        ArgumentNullException.ThrowIfNull(host);
        Host = host;
    }

    public IReplicaHost Host { get; }

    /// <summary>Checks what can be checked without the host; throws ReplicaException naming the parameter.</summary>
    public static void Validate(ThroughputRequest request, string hostName)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.BlockSizes.Count == 0 || request.BlockSizes.Any(b => b <= 0 || b > 1L << 30))
        {
            throw Invalid(hostName, request.BlockSizes, "-BlockSize must list sizes between 1 byte and 1GB, e.g. 512, 4KB, 1MB.");
        }

        if (request.Operations.Count == 0)
        {
            throw Invalid(hostName, request.Operations, "-Operation must name Read, Write or both.");
        }

        if (request.QueueDepth is < 1 or > 4096)
        {
            throw Invalid(hostName, request.QueueDepth, $"-QueueDepth {request.QueueDepth} is out of range (1-4096).");
        }

        if (request.DurationSeconds is < 1 or > 86400)
        {
            throw Invalid(hostName, request.DurationSeconds, $"-DurationSeconds {request.DurationSeconds} is out of range (1-86400).");
        }

        if (request.IoEngine is not ("libaio" or "io_uring"))
        {
            throw Invalid(hostName, request.IoEngine, $"-IoEngine '{request.IoEngine}' is not one fio engine this module drives for files and devices: use libaio or io_uring.");
        }

        if (request.ScratchSize < 1 << 20)
        {
            throw Invalid(hostName, request.ScratchSize, "-ScratchSize must be at least 1MB.");
        }
    }

    /// <summary>The engine that measures a kind of target, or an error saying why the requested one cannot.</summary>
    public static ThroughputEngine ResolveEngine(ThroughputTargetKind kind, ThroughputRequest request, string location, string hostName)
    {
        var engine = request.Engine switch
        {
            ThroughputEngine.Auto => kind == ThroughputTargetKind.QemuUrl ? ThroughputEngine.QemuImgBench : ThroughputEngine.Fio,
            var chosen => chosen,
        };
        if (engine == ThroughputEngine.Fio && kind == ThroughputTargetKind.QemuUrl)
        {
            throw new ReplicaException("EngineNotSupported", ReplicaErrorCategory.InvalidArgument,
                $"fio has no engine for '{TargetProbe.SchemeOf(location)}://' targets ({location}); only qemu-img bench reaches them. Use -Engine QemuImgBench (or Auto).",
                hostName, location);
        }

        if (engine == ThroughputEngine.QemuImgBench && request.Pattern == AccessPattern.Random)
        {
            throw new ReplicaException("EngineNotSupported", ReplicaErrorCategory.InvalidArgument,
                kind == ThroughputTargetKind.QemuUrl
                    ? $"qemu-img bench measures sequential requests only, and it is the only engine for '{location}'. Measure -Pattern Sequential, or log in with a kernel initiator and measure the block device with fio."
                    : $"qemu-img bench measures sequential requests only. Use -Engine Fio (or Auto) for -Pattern Random on '{location}'.",
                hostName, location);
        }

        return engine;
    }

    /// <summary>
    /// Probes <paramref name="spec"/> on the host with read-only commands and lists what <see cref="RunAsync"/> will run.
    /// Throws, before anything is written: TargetInvalid, TargetNotFound, TargetUnreachable, ProgramNotFound,
    /// BlockSizeInvalid (not a multiple of 512, or of the device's direct I/O alignment), EngineNotSupported,
    /// TargetReadOnly (only writes asked of a read-only target) and TargetHoldsData (writes to a target holding data without Force).
    /// </summary>
    public async Task<ThroughputPlan> PlanAsync(ThroughputTargetSpec spec, ThroughputRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        Validate(request, Host.Name);
        var location = spec.Location;
        var kind = TargetProbe.Classify(location, Host.Name);
        var engine = ResolveEngine(kind, request, location, Host.Name);
        var isPath = kind == ThroughputTargetKind.File;
        if (isPath && !request.Buffered && request.BlockSizes.FirstOrDefault(b => b % 512 != 0) is > 0 and var odd)
        {
            throw new ReplicaException("BlockSizeInvalid", ReplicaErrorCategory.InvalidArgument,
                $"-BlockSize {odd} is not a multiple of 512 bytes, and direct I/O (O_DIRECT) on '{location}' needs requests aligned to the sector size. Give a multiple of 512 (e.g. 512, 4KB, 1MB), or -Buffered to measure through the page cache. Nothing was written.",
                Host.Name, odd);
        }

        var wantsWrites = request.Operations.Contains(ThroughputOperation.Write);
        var tools = new List<string> { engine == ThroughputEngine.Fio ? "fio" : "qemu-img" };
        if (wantsWrites && !request.Force && !spec.ReadOnly)
        {
            tools.AddRange(new[] { "qemu-img", "qemu-io" });
        }

        if (kind == ThroughputTargetKind.NbdUri)
        {
            tools.Add("nbdinfo");
        }

        tools = tools.Distinct(StringComparer.Ordinal).ToList();
        var notes = new List<string>();
        var target = isPath
            ? await ProbePathAsync(spec, request, tools, notes, cancellationToken).ConfigureAwait(false)
            : await ProbeUrlAsync(spec, request, kind, tools, wantsWrites, cancellationToken).ConfigureAwait(false);

        var operations = request.Operations.Distinct().OrderBy(o => o).ToList();
        if (wantsWrites && target.ReadOnly)
        {
            if (operations.All(o => o == ThroughputOperation.Write))
            {
                throw new ReplicaException("TargetReadOnly", ReplicaErrorCategory.PermissionDenied,
                    $"On host '{Host.Name}', '{location}' is read-only ({target.WriteRefusal}), so it cannot be measured with -Operation Write. Measure -Operation Read, or export it read-write.",
                    Host.Name, location);
            }

            operations.Remove(ThroughputOperation.Write);
            notes.Add($"'{location}' is read-only ({target.WriteRefusal}): only reads are measured.");
        }
        else if (wantsWrites && !request.Force && !target.IsScratch)
        {
            var data = await TargetProbe.FindDataAsync(Host, location, cancellationToken).ConfigureAwait(false);
            if (data is not null)
            {
                throw new ReplicaException("TargetHoldsData", ReplicaErrorCategory.PermissionDenied,
                    $"On host '{Host.Name}', '{location}' holds data ({data}); measuring writes would overwrite it, so nothing was written. Pass -Force to overwrite it anyway, -Operation Read to only read it, or give a path that does not exist yet to measure a scratch file.",
                    Host.Name, location)
                {
                    RecommendedAction = "Measure reads only (-Operation Read), use a scratch file (a -Target path that does not exist), or pass -Force if the data may be destroyed.",
                };
            }
        }

        var setup = new List<PlannedCommand>();
        var cleanup = new List<PlannedCommand>();
        if (target.IsScratch)
        {
            setup.Add(new PlannedCommand(Host.Name, new CommandSpec("sh", "-c", "set -C; : > \"$1\"", "sh", location) { Timeout = TargetProbe.ProbeTimeout },
                "create the scratch file, refusing one that exists"));
            setup.Add(new PlannedCommand(Host.Name, engine == ThroughputEngine.Fio
                    ? FioJob.BuildLayout(location, request.ScratchSize)
                    : new CommandSpec("qemu-img", "create", "-f", "raw", "-o", "preallocation=full", "--", location, request.ScratchSize.ToString(CultureInfo.InvariantCulture)) { Timeout = TimeSpan.FromMinutes(30) },
                $"lay out {Text.ByteSize.Format(request.ScratchSize)} so that reads hit allocated blocks"));
            if (!request.KeepScratch)
            {
                cleanup.Add(new PlannedCommand(Host.Name, new CommandSpec("rm", "-f", "--", location) { Timeout = TargetProbe.ProbeTimeout }, "remove the scratch file"));
            }
        }

        return new ThroughputPlan
        {
            HostName = Host.Name,
            Target = target,
            Request = request,
            Engine = engine,
            Setup = setup,
            Steps = BuildSteps(target, request, engine, operations),
            Cleanup = cleanup,
            Notes = notes,
        };
    }

    /// <summary>
    /// Runs a plan: creates the scratch file if any, measures every step in order (reporting progress), and removes the
    /// scratch file again even on failure. Returns one sample per step.
    /// </summary>
    public async Task<IReadOnlyList<ThroughputSample>> RunAsync(ThroughputPlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var samples = new List<ThroughputSample>();
        var created = false;
        try
        {
            foreach (var step in plan.Setup)
            {
                await Host.RunAsync(step.Command, cancellationToken).ConfigureAwait(false);
                created = true;
            }

            var target = plan.Target;
            var steps = plan.Steps;
            if (target.IsScratch && !plan.Request.Buffered)
            {
                // Only now does the file exist on its file system: find out whether that file system takes O_DIRECT.
                target = await WithDirectIoAsync(target, plan.Request, cancellationToken).ConfigureAwait(false);
                steps = BuildSteps(target, plan.Request, plan.Engine, plan.Steps.Select(s => s.Operation).Distinct().ToList());
            }

            var activity = $"Measuring {target.Protocol} throughput of {target.Location} on {Host.Name}";
            var total = steps.Count * (double)plan.Request.DurationSeconds;
            for (var i = 0; i < steps.Count; i++)
            {
                var step = steps[i];
                var status = $"{BlockSizes.Label(step.BlockSize)} {plan.Request.Pattern.ToString().ToLowerInvariant()} {step.Operation.ToString().ToLowerInvariant()}s ({i + 1} of {steps.Count})";
                var before = i * (double)plan.Request.DurationSeconds;
                using var ticker = StartTicker(activity, status, before, total, plan.Request.DurationSeconds);
                var sample = step.Engine == ThroughputEngine.Fio
                    ? await MeasureWithFioAsync(target, plan.Request, step, cancellationToken).ConfigureAwait(false)
                    : await MeasureWithQemuImgBenchAsync(target, plan.Request, step, cancellationToken).ConfigureAwait(false);
                samples.Add(sample);
                OperationContext.Reporter.Verbose($"[{Host.Name}] {sample}");
            }

            OperationContext.Reporter.Progress(new OperationProgress(activity, "Done", 100, Completed: true));
            return samples;
        }
        finally
        {
            if (created && plan.Cleanup.Count > 0)
            {
                foreach (var step in plan.Cleanup)
                {
                    try
                    {
                        await Host.RunAsync(step.Command, CancellationToken.None).ConfigureAwait(false);
                    }
                    catch (ReplicaException ex)
                    {
                        OperationContext.Reporter.Warning($"On host '{Host.Name}', the scratch file '{plan.Target.Location}' could not be removed: {ex.Message}");
                    }
                }
            }
        }
    }

    /// <summary>Plans and runs one target (see <see cref="PlanAsync"/> and <see cref="RunAsync"/>), reporting the plan's notes as warnings.</summary>
    public async Task<IReadOnlyList<ThroughputSample>> MeasureAsync(ThroughputTargetSpec spec, ThroughputRequest request, CancellationToken cancellationToken = default)
    {
        var plan = await PlanAsync(spec, request, cancellationToken).ConfigureAwait(false);
        foreach (var note in plan.Notes)
        {
            OperationContext.Reporter.Warning(note);
        }

        return await RunAsync(plan, cancellationToken).ConfigureAwait(false);
    }

    private async Task<ThroughputTarget> ProbePathAsync(ThroughputTargetSpec spec, ThroughputRequest request, List<string> tools, List<string> notes, CancellationToken cancellationToken)
    {
        var location = spec.Location;
        var arguments = new List<string> { "sh", "-c", TargetProbe.PathScript, "sh", location };
        arguments.AddRange(tools);
        var probe = await Host.RunAsync(new CommandSpec(arguments) { Timeout = TargetProbe.ProbeTimeout }, cancellationToken).ConfigureAwait(false);
        var facts = TargetProbe.ParsePathFacts(probe.StandardOutput);
        TargetProbe.RequireTools(Host.Name, facts.MissingTools, $"to measure '{location}'");
        switch (facts.Kind)
        {
            case "missing" when facts.Parent == "writable":
                if (facts.FreeBytes is { } free && free < request.ScratchSize)
                {
                    throw new ReplicaException("ScratchSpaceInsufficient", ReplicaErrorCategory.ResourceUnavailable,
                        $"On host '{Host.Name}', '{location}' does not exist, and its directory has {Text.ByteSize.Format(free)} free, less than the {Text.ByteSize.Format(request.ScratchSize)} scratch file (-ScratchSize) it would be measured on.",
                        Host.Name, location);
                }

                return new ThroughputTarget
                {
                    Location = location, Kind = ThroughputTargetKind.File, Protocol = "Direct", Server = spec.Server, Size = request.ScratchSize,
                    IsScratch = true, DirectIo = !request.Buffered, DirectIoAlignment = request.Buffered ? null : 512,
                    DirectIoNote = request.Buffered ? "-Buffered" : null,
                };
            case "missing":
                throw new ReplicaException("TargetNotFound", ReplicaErrorCategory.ObjectNotFound,
                    facts.Parent == "readonly"
                        ? $"On host '{Host.Name}', '{location}' does not exist and its directory is not writable, so no scratch file can be created there."
                        : $"On host '{Host.Name}', '{location}' does not exist, nor does its directory. Give an existing file or block device, or a path in an existing directory for a scratch file.",
                    Host.Name, location);
            case "other":
                throw new ReplicaException("TargetInvalid", ReplicaErrorCategory.InvalidArgument,
                    $"On host '{Host.Name}', '{location}' is neither a regular file nor a block device.", Host.Name, location);
        }

        var target = new ThroughputTarget
        {
            Location = location,
            Kind = facts.Kind == "device" ? ThroughputTargetKind.BlockDevice : ThroughputTargetKind.File,
            Protocol = "Direct",
            Server = spec.Server,
            Size = facts.Size,
            ReadOnly = spec.ReadOnly || facts.ReadOnly,
            WriteRefusal = spec.ReadOnly ? "marked read-only by its source" : facts.ReadOnly ? (facts.Kind == "device" ? "blockdev --getro says read-only" : "not writable by this user") : null,
            DirectIoNote = request.Buffered ? "-Buffered" : null,
        };
        if (facts.Size == 0)
        {
            throw new ReplicaException("TargetInvalid", ReplicaErrorCategory.InvalidArgument,
                $"On host '{Host.Name}', '{location}' is empty (0 bytes); there is nothing to read or write. Give a path that does not exist for a scratch file of -ScratchSize.", Host.Name, location);
        }

        if (request.Buffered)
        {
            return target;
        }

        target = await WithDirectIoAsync(target, request, cancellationToken).ConfigureAwait(false);
        if (target.DirectIoNote is not null)
        {
            notes.Add($"On host '{Host.Name}', '{location}' is measured through the page cache: {target.DirectIoNote}.");
        }

        return target;
    }

    private async Task<ThroughputTarget> WithDirectIoAsync(ThroughputTarget target, ThroughputRequest request, CancellationToken cancellationToken)
    {
        var probe = await Host.RunAsync(new CommandSpec("sh", "-c", TargetProbe.DirectIoScript, "sh", target.Location) { Timeout = TargetProbe.ProbeTimeout }, cancellationToken).ConfigureAwait(false);
        var (alignment, reason) = TargetProbe.ParseDirectIo(probe.StandardOutput);
        if (alignment is null)
        {
            var note = $"its file system does not allow direct I/O (O_DIRECT: {reason})";
            OperationContext.Reporter.Warning($"On host '{Host.Name}', '{target.Location}' is measured through the page cache: {note}.");
            return Copy(target, false, null, note);
        }

        if (request.BlockSizes.FirstOrDefault(b => b % alignment.Value != 0) is > 0 and var odd)
        {
            throw new ReplicaException("BlockSizeInvalid", ReplicaErrorCategory.InvalidArgument,
                $"On host '{Host.Name}', direct I/O on '{target.Location}' needs requests aligned to {alignment} bytes (its logical block size), but -BlockSize includes {odd}. Give multiples of {alignment}, or -Buffered. Nothing was written.",
                Host.Name, odd);
        }

        return Copy(target, true, alignment, null);
    }

    private static ThroughputTarget Copy(ThroughputTarget target, bool direct, int? alignment, string? note) => new()
    {
        Location = target.Location,
        Kind = target.Kind,
        Protocol = target.Protocol,
        Server = target.Server,
        Size = target.Size,
        ReadOnly = target.ReadOnly,
        WriteRefusal = target.WriteRefusal,
        IsScratch = target.IsScratch,
        DirectIo = direct,
        DirectIoAlignment = alignment,
        DirectIoNote = note,
    };

    private async Task<ThroughputTarget> ProbeUrlAsync(ThroughputTargetSpec spec, ThroughputRequest request, ThroughputTargetKind kind, List<string> tools, bool wantsWrites, CancellationToken cancellationToken)
    {
        var location = spec.Location;
        var arguments = new List<string> { "sh", "-c", TargetProbe.ToolsScript, "sh" };
        arguments.AddRange(tools);
        var missing = TargetProbe.ParsePathFacts((await Host.RunAsync(new CommandSpec(arguments) { Timeout = TargetProbe.ProbeTimeout }, cancellationToken).ConfigureAwait(false)).StandardOutput).MissingTools;
        TargetProbe.RequireTools(Host.Name, missing, $"to measure '{location}'");

        long size;
        var readOnly = spec.ReadOnly;
        string? refusal = spec.ReadOnly ? "marked read-only by its source" : null;
        if (kind == ThroughputTargetKind.NbdUri)
        {
            var info = await TargetProbe.NbdInfoAsync(Host, location, cancellationToken).ConfigureAwait(false);
            size = info.Size;
            if (info.IsReadOnly && !readOnly)
            {
                readOnly = true;
                refusal = "the NBD server exports it read-only";
            }
        }
        else
        {
            size = await TargetProbe.QemuUrlSizeAsync(Host, location, cancellationToken).ConfigureAwait(false);
            if (wantsWrites && !readOnly && await TargetProbe.QemuUrlIsReadOnlyAsync(Host, location, cancellationToken).ConfigureAwait(false))
            {
                readOnly = true;
                refusal = "QEMU can open it only read-only (write-protected)";
            }
        }

        if (size <= 0)
        {
            throw new ReplicaException("TargetInvalid", ReplicaErrorCategory.InvalidArgument,
                $"From host '{Host.Name}', '{location}' reports a size of {size} bytes; there is nothing to measure.", Host.Name, location);
        }

        return new ThroughputTarget
        {
            Location = location,
            Kind = kind,
            Protocol = TargetProbe.ProtocolOf(location),
            Server = spec.Server,
            Size = size,
            ReadOnly = readOnly,
            WriteRefusal = refusal,
            DirectIoNote = "a network target (the server decides its caching)",
        };
    }

    private List<ThroughputStep> BuildSteps(ThroughputTarget target, ThroughputRequest request, ThroughputEngine engine, IReadOnlyList<ThroughputOperation> operations)
    {
        var steps = new List<ThroughputStep>();
        foreach (var blockSize in request.BlockSizes.Distinct())
        {
            foreach (var operation in operations.OrderBy(o => o))
            {
                var command = engine == ThroughputEngine.Fio
                    ? FioJob.Build(target, request, blockSize, operation, request.DurationSeconds)
                    : QemuImgBench.Build(target, request, blockSize, operation, QemuImgBench.FirstTrialCount(blockSize, request.QueueDepth), BenchTimeout(request));
                var purpose = $"{BlockSizes.Label(blockSize)} {request.Pattern.ToString().ToLowerInvariant()} {operation.ToString().ToLowerInvariant()}s for {request.DurationSeconds} s"
                    + (engine == ThroughputEngine.QemuImgBench ? " (first a trial run; the count is then sized to the duration)" : string.Empty);
                steps.Add(new ThroughputStep(blockSize, operation, engine, new PlannedCommand(Host.Name, command, purpose)));
            }
        }

        return steps;
    }

    private static TimeSpan BenchTimeout(ThroughputRequest request) => TimeSpan.FromSeconds(request.DurationSeconds * 3 + 120);

    private async Task<ThroughputSample> MeasureWithFioAsync(ThroughputTarget target, ThroughputRequest request, ThroughputStep step, CancellationToken cancellationToken)
    {
        var result = await Host.RunAsync(step.Command.Command, cancellationToken).ConfigureAwait(false);
        FioResult fio;
        try
        {
            fio = FioJob.Parse(result.StandardOutput, step.Operation);
        }
        catch (ReplicaException ex)
        {
            throw new ReplicaException(ex.ErrorId, ex.Category, $"On host '{Host.Name}', measuring '{target.Location}': {ex.Message} Command: {result.CommandLine}", Host.Name, target.Location, ex);
        }

        return Sample(target, request, step, result, ThroughputEngine.Fio, target.Kind == ThroughputTargetKind.NbdUri ? "nbd" : request.IoEngine,
            fio.IoBytes, fio.Runtime, fio.BandwidthBytes / 1e6, fio.Iops, fio.LatencyMeanNs / 1000, fio.LatencyP99Ns / 1000);
    }

    private async Task<ThroughputSample> MeasureWithQemuImgBenchAsync(ThroughputTarget target, ThroughputRequest request, ThroughputStep step, CancellationToken cancellationToken)
    {
        var timeout = BenchTimeout(request);
        var count = QemuImgBench.FirstTrialCount(step.BlockSize, request.QueueDepth);
        var trial = await Host.RunAsync(step.Command.Command, cancellationToken).ConfigureAwait(false);
        var runtime = QemuImgBench.ParseRuntime(trial.StandardOutput);
        for (var round = 0; round < 6 && runtime < QemuImgBench.MinimumTrial && count < int.MaxValue / 16; round++)
        {
            // Too short to size from: grow the trial by the factor that should reach the minimum, at most 16x.
            var factor = Math.Clamp(Math.Ceiling(QemuImgBench.MinimumTrial.TotalSeconds * 1.5 / runtime.TotalSeconds), 2, 16);
            count = (long)(count * factor);
            trial = await Host.RunAsync(QemuImgBench.Build(target, request, step.BlockSize, step.Operation, count, timeout), cancellationToken).ConfigureAwait(false);
            runtime = QemuImgBench.ParseRuntime(trial.StandardOutput);
        }

        count = QemuImgBench.CalibrateCount(count, runtime, TimeSpan.FromSeconds(request.DurationSeconds), request.QueueDepth);
        var result = await Host.RunAsync(QemuImgBench.Build(target, request, step.BlockSize, step.Operation, count, timeout), cancellationToken).ConfigureAwait(false);
        runtime = QemuImgBench.ParseRuntime(result.StandardOutput);
        var iops = count / runtime.TotalSeconds;
        var ioEngine = target.Kind is ThroughputTargetKind.File or ThroughputTargetKind.BlockDevice ? (target.DirectIo ? "native" : "threads") : $"qemu {TargetProbe.SchemeOf(target.Location)}";
        return Sample(target, request, step, result, ThroughputEngine.QemuImgBench, ioEngine,
            count * step.BlockSize, runtime, count * step.BlockSize / runtime.TotalSeconds / 1e6, iops, request.QueueDepth / iops * 1e6, null);
    }

    private ThroughputSample Sample(ThroughputTarget target, ThroughputRequest request, ThroughputStep step, CommandResult result, ThroughputEngine engine, string ioEngine,
        long bytes, TimeSpan runtime, double mbps, double iops, double? latencyAvgUs, double? latencyP99Us) => new()
    {
        HostName = Host.Name,
        Protocol = target.Protocol,
        Server = target.Server,
        Target = target.Location,
        BlockSize = step.BlockSize,
        Operation = step.Operation,
        Pattern = request.Pattern,
        QueueDepth = request.QueueDepth,
        MBps = mbps,
        Iops = iops,
        LatencyAvgUs = latencyAvgUs,
        LatencyP99Us = latencyP99Us,
        Engine = engine,
        IoEngine = ioEngine,
        DirectIo = target.DirectIo,
        Runtime = runtime,
        Bytes = bytes,
        Timestamp = result.StartTime,
        CommandLine = result.CommandLine,
    };

    private static IDisposable StartTicker(string activity, string status, double secondsBefore, double totalSeconds, int stepSeconds)
    {
        var stopwatch = Stopwatch.StartNew();
        void Report()
        {
            var elapsed = Math.Min(stopwatch.Elapsed.TotalSeconds, stepSeconds);
            var percent = totalSeconds <= 0 ? -1 : (int)Math.Clamp((secondsBefore + elapsed) * 100 / totalSeconds, 0, 99);
            var remaining = (int)Math.Max(0, totalSeconds - secondsBefore - elapsed);
            OperationContext.Reporter.Progress(new OperationProgress(activity, status, percent, remaining));
        }

        Report();
        var reporter = OperationContext.Reporter;
        return new Timer(_ =>
        {
            using (OperationContext.Use(reporter))
            {
                Report();
            }
        }, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
    }

    private static ReplicaException Invalid(string hostName, object? target, string message) =>
        new("ThroughputInvalidArgument", ReplicaErrorCategory.InvalidArgument, message, hostName, target);
}
