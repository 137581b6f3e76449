using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Nbd;

/// <summary>
/// Starts, lists and removes NBD exports (nbd-server or qemu-nbd) on one host, local or over SSH. Each export is
/// recorded as a JSON file in the host's state directory, so another session (or another PowerShell) can list and
/// remove it later; listing checks that the recorded process still is that server.
/// </summary>
public sealed class NbdExportManager
{
    /// <summary>The state directory on a remote host, relative to the login directory (sshd starts commands in $HOME).</summary>
    public const string DefaultRemoteStateDirectory = ".local/state/replicatools/nbd";

    /// <summary>Environment variable that overrides the local machine's state directory (tests, unusual setups).</summary>
    public const string StateDirectoryVariable = "REPLICATOOLS_NBD_STATE_DIR";

    /// <summary>Automatic ports are picked in this range (10809 is the IANA NBD port), avoiding the kernel's ephemeral range.</summary>
    public const int FirstAutomaticPort = 10809;

    public const int LastAutomaticPort = 11808;

    /// <summary>How many ports are tried when an automatically picked one turns out to be taken.</summary>
    public const int MaxPortAttempts = 5;

    public static readonly TimeSpan DefaultStopGrace = TimeSpan.FromSeconds(10);

    internal static readonly TimeSpan QuickTimeout = TimeSpan.FromSeconds(60);

    private readonly string? configuredStateDirectory;
    private string? stateDirectory;

    /// <param name="host">The host the exports run on.</param>
    /// <param name="stateDirectory">Where export records live on that host; null for the default (see <see cref="DefaultStateDirectory"/>). A relative path is relative to the login directory.</param>
    public NbdExportManager(IReplicaHost host, string? stateDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(host);
        Host = host;
        configuredStateDirectory = string.IsNullOrEmpty(stateDirectory) ? null : stateDirectory;
    }

    public IReplicaHost Host { get; }

    /// <summary>Test hook: picks the port for an attempt (listening ports, attempt number); default: a random free one in the automatic range.</summary>
    internal Func<IReadOnlySet<int>, int, int>? PortChooser { get; set; }

    /// <summary>
    /// The default state directory: for the local machine <c>$REPLICATOOLS_NBD_STATE_DIR</c> or
    /// <c>~/.local/state/replicatools/nbd</c>; for a remote host <see cref="DefaultRemoteStateDirectory"/> under its login directory.
    /// </summary>
    public static string DefaultStateDirectory(IReplicaHost host)
    {
        ArgumentNullException.ThrowIfNull(host);
        if (!host.IsLocal)
        {
            return DefaultRemoteStateDirectory;
        }

        var configured = Environment.GetEnvironmentVariable(StateDirectoryVariable);
        return !string.IsNullOrEmpty(configured)
            ? System.IO.Path.GetFullPath(configured)
            : System.IO.Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), DefaultRemoteStateDirectory);
    }

    /// <summary>The absolute state directory on the host (asks the host for its login directory once, if needed).</summary>
    public async Task<string> GetStateDirectoryAsync(CancellationToken cancellationToken = default)
    {
        if (stateDirectory is not null)
        {
            return stateDirectory;
        }

        var directory = configuredStateDirectory ?? DefaultStateDirectory(Host);
        if (!directory.StartsWith('/'))
        {
            var home = Host.IsLocal
                ? Environment.GetFolderPath(Environment.SpecialFolder.UserProfile)
                : (await Host.RunAsync(new CommandSpec("pwd", "-P") { Timeout = QuickTimeout }, cancellationToken).ConfigureAwait(false)).StandardOutput.TrimEnd('\n');
            if (!home.StartsWith('/'))
            {
                throw new ReplicaException("NbdStateDirectoryUnknown", ReplicaErrorCategory.InvalidResult,
                    $"On host '{Host.Name}', the login directory could not be determined ('pwd -P' printed '{home}'), so the NBD state directory '{directory}' cannot be resolved.", Host.Name, directory);
            }

            directory = home.TrimEnd('/') + "/" + directory;
        }

        stateDirectory = directory.Length > 1 ? directory.TrimEnd('/') : directory;
        return stateDirectory;
    }

    /// <summary>
    /// Works out how <paramref name="request"/> would be started: validates it, resolves the path on the host, settles the
    /// format and the port, and lists the exact commands. Runs only read-only commands on the host.
    /// </summary>
    public async Task<NbdExportPlan> PlanAsync(NbdExportRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.Validate(Host.Name);
        var directory = await GetStateDirectoryAsync(cancellationToken).ConfigureAwait(false);
        var path = await ResolvePathAsync(request, cancellationToken).ConfigureAwait(false);
        if (!request.ReadOnly)
        {
            // Two writers of one image corrupt it; nbd-server takes no QEMU locks, so nothing else would stop it.
            await Storage.ImageLocks.EnsureNotInUseAsync(Host, path, "to export it writable (pass -ReadOnly to export it read-only)", cancellationToken).ConfigureAwait(false);
        }

        var format = await DecideFormatAsync(request, path, cancellationToken).ConfigureAwait(false);
        if (request.Bitmap is not null && format != "qcow2")
        {
            throw new ReplicaException("NbdExportInvalidArgument", ReplicaErrorCategory.InvalidArgument,
                $"-Bitmap needs a qcow2 image (persistent dirty bitmaps live in qcow2 files), but '{path}' on host '{Host.Name}' is exported as {format}. Pass -Format qcow2 if it is a qcow2 image.",
                Host.Name, request.Bitmap);
        }

        var automatic = request.Port == 0;
        var port = request.Port;
        if (automatic)
        {
            var listening = await GetListeningPortsAsync(cancellationToken).ConfigureAwait(false);
            port = ChoosePort(listening, new HashSet<int>(), 0);
        }

        return NbdExportPlan.Create(Host.Name, request, directory, path, format, port, automatic, UriHostFor(request.ListenAddress));
    }

    /// <summary>Plans and starts an export in one go (see <see cref="PlanAsync"/> and <see cref="StartAsync"/>).</summary>
    public async Task<NbdExport> NewAsync(NbdExportRequest request, CancellationToken cancellationToken = default)
    {
        var plan = await PlanAsync(request, cancellationToken).ConfigureAwait(false);
        return await StartAsync(plan, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs a plan: claims the export name in the state directory, starts the server, waits until it listens and records it.
    /// An automatically picked port that is taken meanwhile is replaced by another. On failure everything started is
    /// stopped and removed again.
    /// </summary>
    public async Task<NbdExport> StartAsync(NbdExportPlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (!string.Equals(plan.HostName, Host.Name, StringComparison.Ordinal))
        {
            throw new ArgumentException($"The plan is for host '{plan.HostName}', this manager for '{Host.Name}'.", nameof(plan));
        }

        var createdAt = DateTimeOffset.Now;
        await Host.RunAsync(plan.MakeDirectory.Command, cancellationToken).ConfigureAwait(false);
        var claim = await Host.RunAsync(plan.Claim.Command.WithStandardInput(BuildRecord(plan, 0, "starting", createdAt).ToJson()), cancellationToken).ConfigureAwait(false);
        if (claim.ExitCode != 0 && !claim.StandardError.Contains("exist", StringComparison.OrdinalIgnoreCase) && claim.ExitCode != 17)
        {
            throw new CommandFailedException(claim);
        }

        if (claim.ExitCode != 0)
        {
            throw new ReplicaException("NbdExportExists", ReplicaErrorCategory.ResourceExists,
                $"On host '{Host.Name}', an NBD export named '{plan.Request.Name}' already exists (state file {plan.StateFile}). Choose another -Name, or remove it first with Remove-NbdExport -Name {plan.Request.Name}.",
                Host.Name, plan.Request.Name)
            {
                RecommendedAction = $"Get-NbdExport -Name {plan.Request.Name} shows it; Remove-NbdExport -Name {plan.Request.Name} stops and removes it.",
            };
        }

        var tried = new HashSet<int> { plan.Port };
        try
        {
            int processId;
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    processId = await LaunchAsync(plan, cancellationToken).ConfigureAwait(false);
                    break;
                }
                catch (NbdPortInUseException ex) when (plan.PortIsAutomatic && attempt < MaxPortAttempts)
                {
                    var listening = await GetListeningPortsAsync(cancellationToken).ConfigureAwait(false);
                    var next = ChoosePort(listening, tried, attempt);
                    tried.Add(next);
                    OperationContext.Reporter.Verbose($"[{Host.Name}] port {plan.Port} was taken ({ex.Message}); trying port {next}.");
                    plan = plan.WithPort(next);
                }
            }

            var record = BuildRecord(plan, processId, "running", createdAt);
            await Host.RunAsync(plan.WriteRecord.Command.WithStandardInput(record.ToJson()), cancellationToken).ConfigureAwait(false);
            OperationContext.Reporter.Verbose($"[{Host.Name}] NBD export '{plan.Request.Name}' serves {plan.Path} at {plan.Uri} ({plan.ServerProgram}, pid {processId}).");
            return ToExport(record, plan.StateFile, NbdExportState.Running, null);
        }
        catch
        {
            await CleanUpFailedStartAsync(plan).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Every export recorded on the host, each checked against its process; stale ones are also reported as warnings.</summary>
    public Task<IReadOnlyList<NbdExport>> ListAsync(CancellationToken cancellationToken = default) => ListAsync(null, warnAboutStale: true, cancellationToken);

    /// <summary>The exports whose name <paramref name="include"/> accepts (all when null), each checked against its process.</summary>
    /// <param name="warnAboutStale">Report each stale export as a warning (off when the caller is about to remove them).</param>
    public async Task<IReadOnlyList<NbdExport>> ListAsync(Func<string, bool>? include, bool warnAboutStale = true, CancellationToken cancellationToken = default)
    {
        var directory = await GetStateDirectoryAsync(cancellationToken).ConfigureAwait(false);
        var listing = await Host.RunAsync(new CommandSpec("sh", "-c", NbdHostScripts.ListRecords, "sh", directory) { Timeout = QuickTimeout }, cancellationToken).ConfigureAwait(false);

        var records = new List<(string File, NbdStateRecord? Record, string? Error)>();
        foreach (var chunk in listing.StandardOutput.Split('\u001e', StringSplitOptions.RemoveEmptyEntries))
        {
            var newline = chunk.IndexOf('\n');
            if (newline < 0)
            {
                continue;
            }

            var file = $"{directory}/{chunk[..newline]}";
            if (include is not null && !include(System.IO.Path.GetFileNameWithoutExtension(file)))
            {
                continue;
            }

            try
            {
                records.Add((file, NbdStateRecord.Parse(chunk[(newline + 1)..]), null));
            }
            catch (JsonException ex)
            {
                records.Add((file, null, ex.Message));
            }
        }

        var processes = await CheckProcessesAsync(records.Where(r => r.Record is { ProcessId: > 0 }).Select(r => r.Record!), cancellationToken).ConfigureAwait(false);
        var exports = new List<NbdExport>();
        foreach (var (file, record, error) in records)
        {
            NbdExport export;
            if (record is null)
            {
                var name = System.IO.Path.GetFileNameWithoutExtension(file);
                export = new NbdExport
                {
                    Name = name,
                    HostName = Host.Name,
                    Path = string.Empty,
                    ListenAddress = string.Empty,
                    Uri = string.Empty,
                    StateFile = file,
                    PidFile = $"{directory}/{name}.pid",
                    ConfigFile = $"{directory}/{name}.conf",
                    State = NbdExportState.Stale,
                    StaleReason = $"its state file cannot be read ({error})",
                };
            }
            else
            {
                var status = record.ProcessId > 0 && processes.TryGetValue(record.ProcessId, out var found) ? found : "gone";
                string? reason = (record.Status, record.ProcessId, status) switch
                {
                    ("running", _, "ours") => null,
                    (_, 0, _) => "its start did not complete (no server process was recorded)",
                    (_, _, "ours") => "its start did not complete",
                    (_, var pid, "other") => $"process {pid} is no longer {ProgramOf(record)} (the pid was reused)",
                    (_, var pid, _) => $"its server process {pid} is gone",
                };
                export = ToExport(record, file, reason is null ? NbdExportState.Running : NbdExportState.Stale, reason);
            }

            if (export.State == NbdExportState.Stale && warnAboutStale)
            {
                OperationContext.Reporter.Warning($"On host '{Host.Name}', the NBD export '{export.Name}' is stale: {export.StaleReason}. Remove-NbdExport -Name {export.Name} cleans it up.");
            }

            exports.Add(export);
        }

        return exports.OrderBy(e => e.Name, StringComparer.Ordinal).ToArray();
    }

    /// <summary>The export named <paramref name="name"/> on the host, or null.</summary>
    public async Task<NbdExport?> GetAsync(string name, CancellationToken cancellationToken = default) =>
        (await ListAsync(cancellationToken).ConfigureAwait(false)).FirstOrDefault(e => string.Equals(e.Name, name, StringComparison.Ordinal));

    /// <summary>The commands that stop an export's server (TERM, then KILL after <paramref name="grace"/>) and remove its files.</summary>
    public IReadOnlyList<PlannedCommand> PlanRemoval(NbdExport export, TimeSpan? grace = null)
    {
        ArgumentNullException.ThrowIfNull(export);
        var seconds = Math.Max(1, (int)Math.Ceiling((grace ?? DefaultStopGrace).TotalSeconds));
        var program = export.ServerArguments.Count > 0 ? ProgramName(export.ServerArguments[0]) : export.Server == NbdServerKind.NbdServer ? "nbd-server" : "qemu-nbd";
        var files = new List<string> { "rm", "-f", "--" };
        if (export.ConfigFile is not null)
        {
            files.Add(export.ConfigFile);
        }

        files.Add(export.PidFile);
        files.Add(export.StateFile);
        return new[]
        {
            new PlannedCommand(Host.Name, new CommandSpec("sh", "-c", NbdHostScripts.StopServer, "sh",
                (export.ProcessId ?? 0).ToString(CultureInfo.InvariantCulture), export.PidFile, program, seconds.ToString(CultureInfo.InvariantCulture))
            {
                Timeout = TimeSpan.FromSeconds(seconds + 30),
            }, $"stop {program} (pid {export.ProcessId?.ToString(CultureInfo.InvariantCulture) ?? "from its pid file"}) if it still is this export's server"),
            new PlannedCommand(Host.Name, new CommandSpec(files) { Timeout = QuickTimeout }, "remove the export's configuration, pid and state files"),
        };
    }

    /// <summary>Stops the export's server, if it still runs, and removes its records. Works for stale exports too.</summary>
    public async Task RemoveAsync(NbdExport export, TimeSpan? grace = null, CancellationToken cancellationToken = default)
    {
        var plan = PlanRemoval(export, grace);
        var stop = await Host.RunAsync(plan[0].Command, cancellationToken).ConfigureAwait(false);
        var outcome = stop.StandardOutput.Trim();
        if (outcome == "killed")
        {
            OperationContext.Reporter.Warning($"On host '{Host.Name}', the server of NBD export '{export.Name}' (pid {export.ProcessId}) did not stop within the grace period and was killed.");
        }

        await Host.RunAsync(plan[1].Command, cancellationToken).ConfigureAwait(false);
        OperationContext.Reporter.Verbose($"[{Host.Name}] NBD export '{export.Name}' removed (server: {outcome}).");
    }

    /// <summary>The TCP ports something listens on at the host, from <c>ss -ltnH</c>.</summary>
    public async Task<IReadOnlySet<int>> GetListeningPortsAsync(CancellationToken cancellationToken = default)
    {
        var result = await Host.RunAsync(new CommandSpec(NbdHostScripts.ListeningSockets) { Timeout = QuickTimeout }, cancellationToken).ConfigureAwait(false);
        return ListeningPorts.ParseSs(result.StandardOutput);
    }

    private async Task<int> LaunchAsync(NbdExportPlan plan, CancellationToken cancellationToken)
    {
        await Host.RunAsync(plan.RemovePidFile.Command, cancellationToken).ConfigureAwait(false);
        if (plan.WriteConfig is { } writeConfig)
        {
            await Host.RunAsync(writeConfig.Command, cancellationToken).ConfigureAwait(false);
        }

        var started = await Host.RunAsync(plan.StartServer.Command, cancellationToken).ConfigureAwait(false);
        if (started.ExitCode != 0)
        {
            if (started.StandardError.Contains("Address already in use", StringComparison.OrdinalIgnoreCase) || started.StandardError.Contains("Failed to bind", StringComparison.OrdinalIgnoreCase))
            {
                throw new NbdPortInUseException(Host.Name, plan.Request.ListenAddress, plan.Port, CommandFailedException.StderrTail(started.StandardError));
            }

            if (started.ExitCode == 127)
            {
                throw new NbdToolMissingException(Host.Name, plan.ServerProgram, plan.Request.Server == NbdServerKind.NbdServer ? "nbd-server" : "qemu-utils", started.StandardError);
            }

            throw new CommandFailedException(started);
        }

        var wait = await Host.RunAsync(new CommandSpec("sh", "-c", NbdHostScripts.WaitListening, "sh", plan.PidFile, plan.Port.ToString(CultureInfo.InvariantCulture))
        {
            Timeout = QuickTimeout,
        }, cancellationToken).ConfigureAwait(false);
        var words = wait.StandardOutput.Trim().Split(' ');
        var pid = words.Length > 1 && int.TryParse(words[1], NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) ? parsed : 0;
        switch (words[0])
        {
            case "listening" when pid > 0:
                return pid;
            case "exited":
                var listening = await GetListeningPortsAsync(cancellationToken).ConfigureAwait(false);
                if (listening.Contains(plan.Port))
                {
                    throw new NbdPortInUseException(Host.Name, plan.Request.ListenAddress, plan.Port, $"{plan.ServerProgram} (pid {pid}) exited right after starting while another program listens on the port");
                }

                throw new ReplicaException("NbdServerStartFailed", ReplicaErrorCategory.InvalidResult,
                    $"On host '{Host.Name}', {plan.ServerProgram} (pid {pid}) exited right after it started for export '{plan.Request.Name}'. " +
                    (plan.Request.Server == NbdServerKind.NbdServer ? "nbd-server logs the reason to syslog (journalctl -t nbd-server); check the address and port." : "Check the image and the address."),
                    Host.Name, plan.Request.Name);
            default:
                throw new ReplicaException("NbdServerStartFailed", ReplicaErrorCategory.OperationTimeout,
                    $"On host '{Host.Name}', {plan.ServerProgram} did not listen on {plan.Request.ListenAddress}:{plan.Port} within 10 s of starting for export '{plan.Request.Name}' (pid file {plan.PidFile}: '{(pid > 0 ? pid : "missing")}').",
                    Host.Name, plan.Request.Name);
        }
    }

    private async Task CleanUpFailedStartAsync(NbdExportPlan plan)
    {
        // Stop whatever the pid file names (only if it really is our server), then remove the files; never mask the original error.
        var export = ToExport(BuildRecord(plan, 0, "starting", DateTimeOffset.Now), plan.StateFile, NbdExportState.Stale, "start failed");
        try
        {
            await RemoveAsync(export, TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ReplicaException or IOException or InvalidOperationException or TimeoutException)
        {
            OperationContext.Reporter.Warning($"On host '{Host.Name}', cleaning up the failed start of NBD export '{plan.Request.Name}' failed: {ex.Message}. Check {plan.StateFile} and {plan.PidFile}.");
        }
    }

    private async Task<Dictionary<int, string>> CheckProcessesAsync(IEnumerable<NbdStateRecord> records, CancellationToken cancellationToken)
    {
        var arguments = new List<string> { "sh", "-c", NbdHostScripts.CheckProcesses, "sh" };
        foreach (var record in records)
        {
            arguments.AddRange(new[] { record.ProcessId.ToString(CultureInfo.InvariantCulture), record.PidFile, ProgramOf(record) });
        }

        var states = new Dictionary<int, string>();
        if (arguments.Count == 4)
        {
            return states;
        }

        var result = await Host.RunAsync(new CommandSpec(arguments) { Timeout = QuickTimeout }, cancellationToken).ConfigureAwait(false);
        foreach (var line in result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Split(' ');
            if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                states[pid] = parts[1];
            }
        }

        return states;
    }

    private int ChoosePort(IReadOnlySet<int> listening, IReadOnlySet<int> tried, int attempt)
    {
        if (PortChooser is { } chooser)
        {
            return chooser(listening, attempt);
        }

        var free = Enumerable.Range(FirstAutomaticPort, LastAutomaticPort - FirstAutomaticPort + 1).Where(p => !listening.Contains(p) && !tried.Contains(p)).ToArray();
        if (free.Length == 0)
        {
            throw new ReplicaException("NbdNoFreePort", ReplicaErrorCategory.ResourceUnavailable,
                $"On host '{Host.Name}', every TCP port from {FirstAutomaticPort} to {LastAutomaticPort} is in use. Give an explicit -Port.", Host.Name, null);
        }

        return free[Random.Shared.Next(free.Length)];
    }

    private async Task<string> ResolvePathAsync(NbdExportRequest request, CancellationToken cancellationToken)
    {
        var probe = await Host.RunAsync(new CommandSpec("sh", "-c", NbdHostScripts.ProbePath, "sh", request.Path) { Timeout = QuickTimeout }, cancellationToken).ConfigureAwait(false);
        var newline = probe.StandardOutput.IndexOf('\n');
        var kind = newline < 0 ? probe.StandardOutput.Trim() : probe.StandardOutput[..newline];
        var expected = request.IsDevice ? "block" : "file";
        if (kind == "missing")
        {
            throw new ReplicaException("NbdPathNotFound", ReplicaErrorCategory.ObjectNotFound,
                $"On host '{Host.Name}', the {(request.IsDevice ? "device" : "file")} '{request.Path}' does not exist.", Host.Name, request.Path);
        }

        if (kind != expected)
        {
            var what = kind switch { "block" => "a block device (use -Device)", "file" => "a regular file (use -Path)", _ => "neither a regular file nor a block device" };
            throw new ReplicaException("NbdPathWrongType", ReplicaErrorCategory.InvalidArgument,
                $"On host '{Host.Name}', '{request.Path}' is {what}; {(request.IsDevice ? "-Device takes a block device" : "-Path takes a regular file")}.", Host.Name, request.Path);
        }

        var resolved = probe.StandardOutput[(newline + 1)..];
        resolved = resolved.EndsWith('\n') ? resolved[..^1] : resolved;
        if (!resolved.StartsWith('/'))
        {
            throw new ReplicaException("NbdPathNotFound", ReplicaErrorCategory.ObjectNotFound,
                $"On host '{Host.Name}', the path '{request.Path}' could not be resolved (realpath printed '{resolved}').", Host.Name, request.Path);
        }

        return resolved;
    }

    private async Task<string> DecideFormatAsync(NbdExportRequest request, string path, CancellationToken cancellationToken)
    {
        if (request.Format is not null)
        {
            return request.Format;
        }

        // No -Format: the bytes are exported as they are (raw). Refuse if they look like an image, whose raw container
        // bytes are rarely what the operator meant; qemu-img may be missing where only nbd-server is installed.
        CommandResult info;
        try
        {
            info = await Host.RunAsync(new CommandSpec("qemu-img", "info", "-U", "--output=json", "--", path) { Timeout = QuickTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        }
        catch (ProgramNotFoundException)
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] qemu-img is not installed; exporting '{path}' as raw without checking its format.");
            return "raw";
        }

        if (info.ExitCode != 0)
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] qemu-img info could not read '{path}' ({CommandFailedException.StderrTail(info.StandardError)}); exporting it as raw.");
            return "raw";
        }

        string? detected = null;
        try
        {
            using var document = JsonDocument.Parse(info.StandardOutput);
            detected = document.RootElement.TryGetProperty("format", out var format) ? format.GetString() : null;
        }
        catch (JsonException)
        {
        }

        if (detected is not null && detected != "raw")
        {
            throw new ReplicaException("NbdFormatAmbiguous", ReplicaErrorCategory.InvalidArgument,
                $"On host '{Host.Name}', '{path}' looks like a {detected} image. Pass -Format {detected} to export the disk it contains (with -Server QemuNbd), or -Format raw to export the file's bytes as they are.",
                Host.Name, path);
        }

        return "raw";
    }

    internal string? UriHostFor(string listenAddress)
    {
        // A wildcard address is no address to connect to: use the one this host is reached by.
        if (IPAddress.TryParse(listenAddress, out var address) && (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)))
        {
            return Host is ISshHost ssh ? ssh.Options.HostName : "127.0.0.1";
        }

        return null;
    }

    private static NbdStateRecord BuildRecord(NbdExportPlan plan, int processId, string status, DateTimeOffset createdAt) => new()
    {
        Status = status,
        Name = plan.Request.Name,
        Server = plan.Request.Server,
        Path = plan.Path,
        IsDevice = plan.Request.IsDevice,
        ReadOnly = plan.Request.ReadOnly,
        ListenAddress = plan.Request.ListenAddress,
        Port = plan.Port,
        Uri = plan.Uri,
        ProcessId = processId,
        Format = plan.Format,
        Bitmap = plan.Request.Bitmap,
        CreatedAt = createdAt,
        ConfigFile = plan.ConfigFile,
        PidFile = plan.PidFile,
        ServerArguments = plan.ServerArguments.ToList(),
    };

    private NbdExport ToExport(NbdStateRecord record, string stateFile, NbdExportState state, string? staleReason) => new()
    {
        Name = record.Name,
        HostName = Host.Name,
        Server = record.Server,
        Path = record.Path,
        IsDevice = record.IsDevice,
        ReadOnly = record.ReadOnly,
        ListenAddress = record.ListenAddress,
        Port = record.Port,
        Uri = record.Uri,
        ProcessId = state == NbdExportState.Running && record.ProcessId > 1 ? record.ProcessId : null,
        Format = record.Format,
        Bitmap = record.Bitmap,
        CreatedAt = record.CreatedAt,
        State = state,
        StaleReason = staleReason,
        StateFile = stateFile,
        ConfigFile = record.ConfigFile,
        PidFile = record.PidFile,
        ServerArguments = record.ServerArguments,
    };

    private static string ProgramOf(NbdStateRecord record) =>
        record.ServerArguments.Count > 0 ? ProgramName(record.ServerArguments[0]) : record.Server == NbdServerKind.NbdServer ? "nbd-server" : "qemu-nbd";

    private static string ProgramName(string argument0) => argument0[(argument0.LastIndexOf('/') + 1)..];
}
