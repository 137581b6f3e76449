using System.Globalization;
using System.Net;
using System.Text;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Iscsi;

/// <summary>
/// Creates, lists, stops and removes tgt iSCSI targets on one host: live through <c>tgtadm</c> and persistent through
/// a conf.d file that <c>tgt-admin -e</c> reads when tgtd starts. tgt is the target of the seed scenario (package tgt).
/// </summary>
public sealed class IscsiTargetManager
{
    internal static readonly TimeSpan QuickTimeout = TimeSpan.FromSeconds(60);

    /// <param name="host">The host tgtd runs on.</param>
    /// <param name="configDirectory">Where the conf.d files live; null for <see cref="IscsiTargetRequest.DefaultConfigDirectory"/>.</param>
    /// <param name="controlPort">tgtd's management channel (tgtadm -C, tgtd -C); 0 for the system's tgtd.</param>
    public IscsiTargetManager(IReplicaHost host, string? configDirectory = null, int controlPort = 0)
    {
        ArgumentNullException.ThrowIfNull(host);
        Host = host;
        ConfigDirectory = string.IsNullOrEmpty(configDirectory) ? IscsiTargetRequest.DefaultConfigDirectory : configDirectory.TrimEnd('/');
        ControlPort = controlPort;
        if (!ConfigDirectory.StartsWith('/') || !IscsiTargetRequest.IsConfigSafe(ConfigDirectory))
        {
            throw new ReplicaException("IscsiTargetInvalidArgument", ReplicaErrorCategory.InvalidArgument,
                $"-ConfigDirectory '{configDirectory}' is not an absolute directory path without blanks or quotes.", host.Name, configDirectory);
        }

        if (controlPort is < 0 or > 65535)
        {
            throw new ReplicaException("IscsiTargetInvalidArgument", ReplicaErrorCategory.InvalidArgument,
                $"-ControlPort {controlPort} is out of range (0-65535; 0 is the system's tgtd).", host.Name, controlPort);
        }
    }

    public IReplicaHost Host { get; }

    public string ConfigDirectory { get; }

    public int ControlPort { get; }

    /// <summary>The conf.d file of a target (its standby twin adds <see cref="TgtConfig.StandbySuffix"/>).</summary>
    public string ConfigFileFor(string iqn) => $"{ConfigDirectory}/{IscsiTargetRequest.ConfigFileName(iqn)}";

    /// <summary>
    /// Works out how <paramref name="request"/> will be set up: validates it, checks the backing store and that neither
    /// the IQN nor the backing store is taken, picks tgtd's next target id. Runs only read-only commands.
    /// </summary>
    public Task<IscsiTargetPlan> PlanAsync(IscsiTargetRequest request, CancellationToken cancellationToken = default) => PlanAsync(request, resolveBackingStore: true, cancellationToken);

    /// <param name="resolveBackingStore">
    /// False for a device that appears only later (a DRBD device before its resource is up): the path is taken as given.
    /// </param>
    internal async Task<IscsiTargetPlan> PlanAsync(IscsiTargetRequest request, bool resolveBackingStore, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.Validate(Host.Name);
        var backingStore = resolveBackingStore ? await ResolveBackingStoreAsync(request.BackingStore, cancellationToken).ConfigureAwait(false) : request.BackingStore;
        var live = request.Start ? await GetLiveAsync(cancellationToken).ConfigureAwait(false) : null;
        var existing = await ListAsync(warn: false, cancellationToken).ConfigureAwait(false);
        if (existing.FirstOrDefault(t => t.Iqn == request.Iqn) is { } taken)
        {
            throw new ReplicaException("IscsiTargetExists", ReplicaErrorCategory.ResourceExists,
                $"On host '{Host.Name}', the iSCSI target '{request.Iqn}' already exists ({taken.State}, LUN {taken.Lun} on {taken.BackingStore ?? "no backing store"}{(taken.ConfigFile is null ? string.Empty : ", file " + taken.ConfigFile)}). Choose another -Iqn or remove it first with Remove-IscsiTarget.",
                Host.Name, request.Iqn)
            {
                RecommendedAction = $"Get-IscsiTarget -Iqn {request.Iqn} shows it; Remove-IscsiTarget -Iqn {request.Iqn} removes it.",
            };
        }

        if (existing.FirstOrDefault(t => t.BackingStore == backingStore && t.State != IscsiTargetState.Standby) is { } user)
        {
            throw new ReplicaException("IscsiBackingStoreInUse", ReplicaErrorCategory.ResourceExists,
                $"On host '{Host.Name}', '{backingStore}' is already the backing store of iSCSI target '{user.Iqn}' ({user.State}). Two targets writing one disk corrupt it; remove that target first.",
                Host.Name, backingStore);
        }

        var tid = live is null ? 0 : live.Targets.Select(t => t.Tid).DefaultIfEmpty(0).Max() + 1;
        var resolved = new IscsiTargetRequest
        {
            Iqn = request.Iqn,
            BackingStore = backingStore,
            Lun = request.Lun,
            InitiatorName = request.InitiatorName,
            InitiatorAddress = request.InitiatorAddress,
            Start = request.Start,
        };
        return new IscsiTargetPlan(this, resolved, tid, live?.Portals ?? Array.Empty<(string, int)>());
    }

    /// <summary>Runs a plan. If a step fails, what it set up is removed again and the original error is thrown.</summary>
    public async Task<IscsiTarget> CreateAsync(IscsiTargetPlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var started = false;
        try
        {
            foreach (var step in plan.Commands)
            {
                started |= step.Command.Arguments[0] == "tgtadm";
                await RunTgtAsync(step.Command, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is ReplicaException or OperationCanceledException)
        {
            await RollBackAsync(plan, started).ConfigureAwait(false);
            throw;
        }

        OperationContext.Reporter.Verbose($"[{Host.Name}] iSCSI target '{plan.Request.Iqn}' {(plan.Request.Start ? "serves" : "is configured (standby) for")} {plan.Request.BackingStore} as LUN {plan.Request.Lun}.");
        return (await ListAsync(warn: false, cancellationToken).ConfigureAwait(false)).First(t => t.Iqn == plan.Request.Iqn);
    }

    /// <summary>Every target of this tgtd plus every configured (stopped or standby) target ReplicaTools wrote, ordered by IQN.</summary>
    public Task<IReadOnlyList<IscsiTarget>> ListAsync(CancellationToken cancellationToken = default) => ListAsync(warn: true, cancellationToken);

    /// <summary>The commands that take a target down for good: delete it from tgtd (if it runs) and remove its files.</summary>
    /// <param name="force">Delete it even while initiators are logged in (they lose the disk).</param>
    public IReadOnlyList<PlannedCommand> PlanRemoval(IscsiTarget target, bool force)
    {
        ArgumentNullException.ThrowIfNull(target);
        var steps = new List<PlannedCommand>();
        if (target.Tid is { } tid)
        {
            steps.Add(DeleteTarget(tid, force || target.ConnectedInitiators.Count == 0, target.Iqn));
        }

        var file = ConfigFileFor(target.Iqn);
        steps.Add(new PlannedCommand(Host.Name, new CommandSpec("rm", "-f", "--", file, file + TgtConfig.StandbySuffix) { Timeout = QuickTimeout }, "remove the target's conf.d file"));
        return steps;
    }

    /// <summary>Deletes a target from tgtd and removes its conf.d files. Refuses while initiators are logged in, unless <paramref name="force"/>.</summary>
    public async Task RemoveAsync(IscsiTarget target, bool force, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        RefuseIfInUse(target, force, "remove");
        foreach (var step in PlanRemoval(target, force))
        {
            await RunTgtAsync(step.Command, cancellationToken).ConfigureAwait(false);
        }

        OperationContext.Reporter.Verbose($"[{Host.Name}] iSCSI target '{target.Iqn}' removed.");
    }

    /// <summary>
    /// The commands that put a target on standby: delete it from tgtd (dropping logged-in initiators) and rename its
    /// conf.d file to the standby name, so a tgtd restart does not bring it back. Nothing for a target already on standby.
    /// </summary>
    public IReadOnlyList<PlannedCommand> PlanStandby(IscsiTarget target)
    {
        ArgumentNullException.ThrowIfNull(target);
        var steps = new List<PlannedCommand>();
        if (target.Tid is { } tid)
        {
            steps.Add(DeleteTarget(tid, force: true, target.Iqn));
        }

        if (target.State != IscsiTargetState.Standby)
        {
            var file = ConfigFileFor(target.Iqn);
            steps.Add(new PlannedCommand(Host.Name, new CommandSpec("mv", "-f", "--", file, file + TgtConfig.StandbySuffix) { Timeout = QuickTimeout }, "keep the conf.d file as standby (not read when tgtd starts)"));
        }

        return steps;
    }

    /// <summary>Runs <see cref="PlanStandby"/>.</summary>
    public async Task StandbyAsync(IscsiTarget target, CancellationToken cancellationToken = default)
    {
        foreach (var step in PlanStandby(target))
        {
            await RunTgtAsync(step.Command, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The commands that bring a configured (standby or stopped) target up: its conf.d file back under the name tgt
    /// reads, then tgtadm as in <see cref="PlanAsync"/>. Reads tgtd's state (target ids, portals) first.
    /// </summary>
    public async Task<IscsiTargetPlan> PlanActivationAsync(IscsiTarget target, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (target.State == IscsiTargetState.Running || target.BackingStore is null)
        {
            throw new ArgumentException($"Target '{target.Iqn}' is {target.State}{(target.BackingStore is null ? " without a backing store" : string.Empty)}; only a configured target can be activated.", nameof(target));
        }

        var live = await GetLiveAsync(cancellationToken).ConfigureAwait(false);
        var request = new IscsiTargetRequest
        {
            Iqn = target.Iqn,
            BackingStore = target.BackingStore,
            Lun = target.Lun,
            InitiatorName = target.InitiatorName,
            InitiatorAddress = target.InitiatorAddress,
        };
        var tid = live.Targets.Select(t => t.Tid).DefaultIfEmpty(0).Max() + 1;
        return new IscsiTargetPlan(this, request, tid, live.Portals, fromStandby: target.State == IscsiTargetState.Standby);
    }

    /// <summary>The tgtadm command with the control port, e.g. <c>tgtadm -C 7 --lld iscsi --op show --mode target</c>.</summary>
    internal CommandSpec Tgtadm(params string[] arguments)
    {
        var list = new List<string> { "tgtadm" };
        if (ControlPort != 0)
        {
            list.AddRange(new[] { "-C", ControlPort.ToString(CultureInfo.InvariantCulture) });
        }

        list.AddRange(arguments);
        return new CommandSpec(list) { Timeout = QuickTimeout };
    }

    internal PlannedCommand DeleteTarget(int tid, bool force, string iqn)
    {
        var arguments = new List<string> { "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", tid.ToString(CultureInfo.InvariantCulture) };
        if (force)
        {
            arguments.Add("--force");
        }

        return new PlannedCommand(Host.Name, Tgtadm(arguments.ToArray()), $"delete target {iqn} from tgtd");
    }

    /// <summary>The URI initiators use: the first IPv4 portal (else the first), a wildcard address replaced by the host's own.</summary>
    internal string? UriFor(IReadOnlyList<(string Address, int Port)> portals, string iqn, int lun)
    {
        if (portals.Count == 0)
        {
            return null;
        }

        var (address, port) = portals.FirstOrDefault(p => IPAddress.TryParse(p.Address, out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork);
        if (address is null)
        {
            (address, port) = portals[0];
        }

        if (IPAddress.TryParse(address, out var parsed) && (parsed.Equals(IPAddress.Any) || parsed.Equals(IPAddress.IPv6Any)))
        {
            address = Host is SshHost ssh ? ssh.Options.HostName : "127.0.0.1";
        }

        return IscsiUri.Build(address, port, iqn, lun);
    }

    /// <summary>Like <see cref="ListAsync(CancellationToken)"/>, but says nothing when tgtd is not running (a standby host may not run it).</summary>
    internal Task<IReadOnlyList<IscsiTarget>> ListQuietlyAsync(CancellationToken cancellationToken) => ListAsync(warn: false, cancellationToken);

    private async Task<IReadOnlyList<IscsiTarget>> ListAsync(bool warn, CancellationToken cancellationToken)
    {
        LiveState? live;
        try
        {
            live = await GetLiveAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (ReplicaException ex) when (ex.ErrorId == TgtdNotRunningId)
        {
            if (warn)
            {
                OperationContext.Reporter.Warning(ex.Message + " Only configured targets are listed.");
            }

            live = null;
        }

        var configs = await ReadConfigsAsync(cancellationToken).ConfigureAwait(false);
        var targets = new List<IscsiTarget>();
        foreach (var target in live?.Targets ?? Array.Empty<TgtTarget>())
        {
            configs.TryGetValue(target.Iqn, out var config);
            var lun = target.Luns.FirstOrDefault() ?? new TgtLun(config.Request?.Lun ?? 1, config.Request?.BackingStore ?? string.Empty);
            var acl = target.Acl.Where(a => a != "ALL").ToArray();
            targets.Add(new IscsiTarget
            {
                Iqn = target.Iqn,
                HostName = Host.Name,
                Lun = lun.Lun,
                BackingStore = lun.BackingStore.Length == 0 || lun.BackingStore == "None" ? null : lun.BackingStore,
                Tid = target.Tid,
                State = IscsiTargetState.Running,
                InitiatorName = acl.Where(IsIscsiName).ToArray(),
                InitiatorAddress = acl.Where(a => !IsIscsiName(a)).ToArray(),
                ConnectedInitiators = target.ConnectedInitiators,
                ConfigFile = config.File,
                ConfigDirectory = ConfigDirectory,
                ControlPort = ControlPort,
                PortalAddress = live!.Portals.FirstOrDefault().Address,
                Port = live.Portals.Count > 0 ? live.Portals[0].Port : IscsiUri.DefaultPort,
                Uri = UriFor(live.Portals, target.Iqn, lun.Lun),
            });
        }

        foreach (var (iqn, (file, request)) in configs)
        {
            if (request is null || targets.Any(t => t.Iqn == iqn))
            {
                continue;
            }

            var portals = live?.Portals ?? Array.Empty<(string, int)>();
            targets.Add(new IscsiTarget
            {
                Iqn = iqn,
                HostName = Host.Name,
                Lun = request.Lun,
                BackingStore = request.BackingStore,
                State = file.EndsWith(TgtConfig.StandbySuffix, StringComparison.Ordinal) ? IscsiTargetState.Standby : IscsiTargetState.Stopped,
                InitiatorName = request.InitiatorName,
                InitiatorAddress = request.InitiatorAddress,
                ConfigFile = file,
                ConfigDirectory = ConfigDirectory,
                ControlPort = ControlPort,
                PortalAddress = portals.FirstOrDefault().Address,
                Port = portals.Count > 0 ? portals[0].Port : IscsiUri.DefaultPort,
                Uri = UriFor(portals, iqn, request.Lun),
            });
        }

        return targets.OrderBy(t => t.Iqn, StringComparer.Ordinal).ToArray();
    }

    private const string TgtdNotRunningId = "TgtdNotRunning";

    private sealed record LiveState(IReadOnlyList<TgtTarget> Targets, IReadOnlyList<(string Address, int Port)> Portals);

    private async Task<LiveState> GetLiveAsync(CancellationToken cancellationToken)
    {
        var targets = await RunTgtAsync(Tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target"), cancellationToken).ConfigureAwait(false);
        var portals = await RunTgtAsync(Tgtadm("--lld", "iscsi", "--op", "show", "--mode", "portal"), cancellationToken).ConfigureAwait(false);
        return new LiveState(TgtadmShow.ParseTargets(targets.StandardOutput), TgtadmShow.ParsePortals(portals.StandardOutput));
    }

    /// <summary>Runs a command; tgtadm failing because tgtd is not there, or tgt not being installed, becomes a clear error.</summary>
    private async Task<CommandResult> RunTgtAsync(CommandSpec command, CancellationToken cancellationToken)
    {
        var result = await Host.RunAsync(new CommandSpec(command.Arguments)
        {
            Timeout = command.Timeout,
            StandardInput = command.StandardInput,
            ThrowOnFailure = false,
        }, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode == 0)
        {
            return result;
        }

        if (command.Arguments[0] == "tgtadm")
        {
            if (result.ExitCode == 127)
            {
                throw new NbdToolMissingException(Host.Name, "tgtadm", "tgt", result.StandardError);
            }

            if (result.StandardError.Contains("tgt daemon", StringComparison.Ordinal) || result.StandardError.Contains("Transport endpoint is not connected", StringComparison.Ordinal)
                || result.StandardError.Contains("can't send the request", StringComparison.Ordinal))
            {
                throw new ReplicaException(TgtdNotRunningId, ReplicaErrorCategory.ResourceUnavailable,
                    $"On host '{Host.Name}', tgtd is not running{(ControlPort == 0 ? string.Empty : $" on control port {ControlPort}")} (tgtadm: {CommandFailedException.StderrTail(result.StandardError)}).",
                    Host.Name, ControlPort)
                {
                    RecommendedAction = $"Start tgt on '{Host.Name}' (systemctl start tgt), or give the -ControlPort of the tgtd to use.",
                };
            }
        }

        throw new CommandFailedException(result);
    }

    private async Task<string> ResolveBackingStoreAsync(string path, CancellationToken cancellationToken)
    {
        var probe = await Host.RunAsync(new CommandSpec("sh", "-c", NbdHostScripts.ProbePath, "sh", path) { Timeout = QuickTimeout }, cancellationToken).ConfigureAwait(false);
        var lines = probe.StandardOutput.Split('\n', 2);
        var kind = lines[0].Trim();
        if (kind is "missing" or "other")
        {
            throw new ReplicaException("IscsiBackingStoreNotFound", ReplicaErrorCategory.ObjectNotFound,
                kind == "missing"
                    ? $"On host '{Host.Name}', the backing store '{path}' does not exist."
                    : $"On host '{Host.Name}', the backing store '{path}' is neither a regular file nor a block device.",
                Host.Name, path);
        }

        var resolved = lines.Length > 1 ? lines[1].TrimEnd('\n') : path;
        if (!resolved.StartsWith('/') || !IscsiTargetRequest.IsConfigSafe(resolved))
        {
            throw new ReplicaException("IscsiTargetInvalidArgument", ReplicaErrorCategory.InvalidArgument,
                $"On host '{Host.Name}', the backing store '{path}' resolves to '{resolved}', which tgt's configuration cannot carry (blanks, quotes, '<', '>' or '#').", Host.Name, path);
        }

        return resolved;
    }

    private async Task<Dictionary<string, (string File, IscsiTargetRequest? Request)>> ReadConfigsAsync(CancellationToken cancellationToken)
    {
        var listing = await Host.RunAsync(HostFiles.ListByFirstLine(ConfigDirectory, TgtConfig.Header, "*.conf", "*.conf" + TgtConfig.StandbySuffix), cancellationToken).ConfigureAwait(false);
        var configs = new Dictionary<string, (string, IscsiTargetRequest?)>(StringComparer.Ordinal);
        foreach (var (name, content) in HostFiles.ParseListing(listing.StandardOutput))
        {
            var file = $"{ConfigDirectory}/{name}";
            var request = TgtConfig.Parse(content);
            if (request is not null && (!configs.TryGetValue(request.Iqn, out var seen) || seen.Item1.EndsWith(TgtConfig.StandbySuffix, StringComparison.Ordinal)))
            {
                // Both files exist only after an interrupted switch: the one tgt reads wins.
                configs[request.Iqn] = (file, request);
            }
        }

        return configs;
    }

    private async Task RollBackAsync(IscsiTargetPlan plan, bool started)
    {
        try
        {
            if (started)
            {
                await Host.RunAsync(new CommandSpec(DeleteTarget(plan.Tid, force: true, plan.Request.Iqn).Command.Arguments) { Timeout = QuickTimeout, ThrowOnFailure = false }, CancellationToken.None).ConfigureAwait(false);
            }

            if (plan.WritesConfig)
            {
                await Host.RunAsync(new CommandSpec("rm", "-f", "--", plan.ConfigFile) { Timeout = QuickTimeout, ThrowOnFailure = false }, CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (ReplicaException ex)
        {
            OperationContext.Reporter.Warning($"On host '{Host.Name}', cleaning up the failed setup of iSCSI target '{plan.Request.Iqn}' failed: {ex.Message}. Check tgtadm --op show and {plan.ConfigFile}.");
        }
    }

    private void RefuseIfInUse(IscsiTarget target, bool force, string verb)
    {
        if (!force && target.ConnectedInitiators.Count > 0)
        {
            throw new ReplicaException("IscsiTargetInUse", ReplicaErrorCategory.ResourceUnavailable,
                $"On host '{Host.Name}', initiators are logged in to iSCSI target '{target.Iqn}' ({string.Join(", ", target.ConnectedInitiators)}); refusing to {verb} it. Log them out first, or pass -Force to disconnect them.",
                Host.Name, target.Iqn);
        }
    }

    private static bool IsIscsiName(string entry) => entry.StartsWith("iqn.", StringComparison.Ordinal) || entry.StartsWith("eui.", StringComparison.Ordinal) || entry.StartsWith("naa.", StringComparison.Ordinal);
}

/// <summary>How a target will be set up on a host: the exact commands, as data (printed by -WhatIf, run by <see cref="IscsiTargetManager.CreateAsync"/>).</summary>
public sealed class IscsiTargetPlan
{
    internal IscsiTargetPlan(IscsiTargetManager manager, IscsiTargetRequest request, int tid, IReadOnlyList<(string Address, int Port)> portals, bool fromStandby = false)
    {
        HostName = manager.Host.Name;
        Request = request;
        Tid = tid;
        var file = manager.ConfigFileFor(request.Iqn);
        ConfigFile = request.Start ? file : file + TgtConfig.StandbySuffix;
        ConfigText = TgtConfig.Build(request);
        WritesConfig = !fromStandby;
        Uri = manager.UriFor(portals, request.Iqn, request.Lun);

        var steps = new List<PlannedCommand>();
        if (fromStandby)
        {
            steps.Add(new(HostName, new CommandSpec("mv", "-f", "--", file + TgtConfig.StandbySuffix, file) { Timeout = IscsiTargetManager.QuickTimeout }, "put the standby conf.d file back where tgt reads it"));
        }
        else
        {
            steps.Add(new(HostName, new CommandSpec("mkdir", "-p", "-m", "0755", "--", manager.ConfigDirectory) { Timeout = IscsiTargetManager.QuickTimeout }, "create the conf.d directory"));
            steps.Add(new(HostName, HostFiles.WriteAtomically(ConfigFile, Encoding.UTF8.GetBytes(ConfigText), timeout: IscsiTargetManager.QuickTimeout), request.Start ? "write the conf.d file (tgt-admin -e recreates the target when tgtd starts)" : "write the standby conf.d file (not read when tgtd starts)"));
        }

        if (request.Start)
        {
            var id = tid.ToString(CultureInfo.InvariantCulture);
            steps.Add(new(HostName, manager.Tgtadm("--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", id, "-T", request.Iqn), "create the target in tgtd"));
            steps.Add(new(HostName, manager.Tgtadm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", id, "--lun", request.Lun.ToString(CultureInfo.InvariantCulture), "-b", request.BackingStore), "add the LUN"));
            if (request.InitiatorName.Count == 0 && request.InitiatorAddress.Count == 0)
            {
                steps.Add(new(HostName, manager.Tgtadm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", id, "-I", "ALL"), "allow every initiator"));
            }

            foreach (var name in request.InitiatorName)
            {
                steps.Add(new(HostName, manager.Tgtadm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", id, "-Q", name), $"allow initiator {name}"));
            }

            foreach (var address in request.InitiatorAddress)
            {
                steps.Add(new(HostName, manager.Tgtadm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", id, "-I", address), $"allow initiator address {address}"));
            }
        }

        Commands = steps;
    }

    public string HostName { get; }

    public IscsiTargetRequest Request { get; }

    /// <summary>tgtd's target id the target gets (0 when it is not started).</summary>
    public int Tid { get; }

    public string ConfigFile { get; }

    public string ConfigText { get; }

    /// <summary>Where initiators will reach the LUN, when tgtd's portal is known.</summary>
    public string? Uri { get; }

    public IReadOnlyList<PlannedCommand> Commands { get; }

    internal bool WritesConfig { get; }

    /// <summary>The plan as -WhatIf shows it: one <c>[host] command line</c> a line, then the file's content.</summary>
    public string Describe() => PlannedCommand.Describe(Commands) + (WritesConfig ? $"{Environment.NewLine}{ConfigFile}:{Environment.NewLine}{ConfigText.TrimEnd('\n')}" : string.Empty);

    public override string ToString() => Describe();
}
