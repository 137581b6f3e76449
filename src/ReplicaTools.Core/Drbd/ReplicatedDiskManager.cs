using System.Globalization;
using System.Net;
using System.Text;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;
using ReplicaTools.Core.Text;

namespace ReplicaTools.Core.Drbd;

/// <summary>
/// Sets up, inspects, fails over and removes DRBD-replicated disks on pairs of storage hosts (the seed scenario's
/// mirror-a and mirror-b), exported to the KVM hosts over NBD or iSCSI by whichever node is primary. Every operation
/// first probes both hosts with read-only commands and returns a <see cref="ReplicatedDiskPlan"/>; running the plan
/// changes the hosts.
/// </summary>
public sealed partial class ReplicatedDiskManager
{
    /// <summary>Copies of images can take hours.</summary>
    private static readonly TimeSpan CopyTimeout = TimeSpan.FromHours(48);

    public ReplicatedDiskManager(DrbdEnvironment? environment = null)
    {
        Environment = environment ?? DrbdEnvironment.Default;
    }

    public DrbdEnvironment Environment { get; }

    /// <summary>
    /// Works out how to set up <paramref name="request"/>: validates it, probes both hosts (node names, disks, existing
    /// resources and metadata, ports, kernel state, exports), has the real drbdadm on each host validate the resource
    /// file (with the secret replaced) and dry-run every DRBD step. Writes nothing.
    /// </summary>
    /// <exception cref="ReplicaException">Bad input or a conflict on either host; the message names host and parameter.</exception>
    public async Task<ReplicatedDiskPlan> PlanNewAsync(ReplicatedDiskRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.Validate();
        var probes = await Task.WhenAll(
            DrbdHostProbe.ForNewAsync(request.Primary, Environment, request.Name, request.PrimaryDisk, cancellationToken),
            DrbdHostProbe.ForNewAsync(request.Secondary, Environment, request.Name, request.SecondaryDisk, cancellationToken)).ConfigureAwait(false);
        var (primary, secondary) = (probes[0], probes[1]);
        var notes = new List<string>();

        CheckDistinct(primary, secondary);
        CheckDisk(primary, request.PrimaryDisk);
        CheckDisk(secondary, request.SecondaryDisk);
        var existing = ExistingResource(request.Name, primary, secondary);
        var config = await BuildConfigAsync(request, primary, secondary, existing, cancellationToken).ConfigureAwait(false);
        var secret = SecretText.Reveal(request.SharedSecret);
        CheckAgainstExisting(config, secret, existing, primary, secondary);

        var createMetadata = new Dictionary<DrbdHostProbe, bool>();
        foreach (var (probe, disk) in new[] { (primary, request.PrimaryDisk), (secondary, request.SecondaryDisk) })
        {
            var node = config.Node(probe.NodeName)!;
            CheckPortAndDisk(probe, config, node, disk);
            createMetadata[probe] = NeedsMetadata(probe, node, request.UseExistingMetadata, notes);
        }

        var fresh = createMetadata.Values.All(v => v);
        var usable = Math.Min(UsableBytes(primary), UsableBytes(secondary));
        notes.Insert(0, $"{config.Name}: {primary.Name} ({primary.NodeName}, {request.PrimaryDisk}) is primary, {secondary.Name} ({secondary.NodeName}, {request.SecondaryDisk}) secondary; {config.Device}, port {config.Port}, protocol {config.Protocol}.");
        notes.Insert(1, $"Usable size {ByteSize.Format(usable)} ({usable.ToString(CultureInfo.InvariantCulture)} bytes): DRBD's internal metadata takes the last {ByteSize.Format(primary.DiskSize!.Value - UsableBytes(primary))} of {request.PrimaryDisk} on {primary.Name} and {ByteSize.Format(secondary.DiskSize!.Value - UsableBytes(secondary))} of {request.SecondaryDisk} on {secondary.Name}.");
        var source = request.SourceImage is null ? null : await CheckSourceAsync(request, primary, secondary, usable, fresh, notes, cancellationToken).ConfigureAwait(false);

        var validation = await Task.WhenAll(
            ValidateAsync(primary, config, withPrimary: true, cancellationToken),
            ValidateAsync(secondary, config, withPrimary: false, cancellationToken)).ConfigureAwait(false);
        var dryRuns = new Dictionary<DrbdHostProbe, DryRun> { [primary] = validation[0], [secondary] = validation[1] };

        var actions = new List<ReplicatedDiskAction>();
        foreach (var probe in probes)
        {
            if (probe.ConfigText != config.Render(secret))
            {
                actions.Add(WriteConfigAction(probe, config, request.SharedSecret));
            }
        }

        foreach (var probe in probes.Where(p => createMetadata[p]))
        {
            actions.Add(KernelFreeAction(probe, $"initialise DRBD metadata on {config.Node(probe.NodeName)!.Disk}",
                DrbdCommands.Drbdadm(probe.Layout.ConfigFile(config.Name), "create-md", config.Name), dryRuns[probe].CreateMetadata));
        }

        foreach (var probe in probes.Where(p => p.Status is null))
        {
            actions.Add(KernelAction(probe, $"bring {config.Name} up", DrbdCommands.Drbdadm(probe.Layout.ConfigFile(config.Name), "up", config.Name), dryRuns[probe].Up));
        }

        var current = probes.FirstOrDefault(p => p.Status?.Role == "Primary");
        if (current is null)
        {
            var force = fresh || createMetadata[primary];
            actions.Add(KernelAction(primary, force ? $"make {primary.Name} primary; the initial sync overwrites {secondary.Name}" : $"make {primary.Name} primary",
                DrbdCommands.Drbdadm(primary.Layout.ConfigFile(config.Name), "primary", config.Name, force ? new[] { "--force" } : Array.Empty<string>()), force ? dryRuns[primary].Primary : Array.Empty<string>()));
        }
        else if (current != primary)
        {
            notes.Add($"{current.Name} is primary now (a switch happened since the disk was set up); New-ReplicatedDisk leaves the roles as they are.");
        }

        if (source is not null)
        {
            actions.Add(CopyAction(primary, config, source));
        }

        var exporter = current ?? primary;
        var standby = exporter == primary ? secondary : primary;
        await AddExportActionsAsync(actions, config, exporter, standby, cancellationToken).ConfigureAwait(false);

        if (actions.Count == 0)
        {
            notes.Add($"{config.Name} is already set up on {primary.Name} and {secondary.Name} as requested; nothing to do.");
        }

        return new ReplicatedDiskPlan(config.Name, actions, notes) { Warnings = ModuleWarnings(probes), Sessions = probes.Select(p => p.Session).ToArray() };
    }

    /// <summary>Runs a plan action by action, then reads the disk's state back from both hosts.</summary>
    /// <exception cref="ReplicaException">A step failed: the message says which, and what was done before it (running the same request again continues).</exception>
    public async Task<ReplicatedDisk> ExecuteAsync(ReplicatedDiskPlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (plan.Warnings.FirstOrDefault(w => w.Fatal) is { } missing)
        {
            throw DrbdErrors.ModuleMissing(missing.HostName, missing.Message);
        }

        await RunActionsAsync(plan, cancellationToken).ConfigureAwait(false);
        return await GetAsync(plan.Sessions, plan.Name, cancellationToken).ConfigureAwait(false);
    }

    private async Task RunActionsAsync(ReplicatedDiskPlan plan, CancellationToken cancellationToken)
    {
        var activity = $"Replicated disk {plan.Name}";
        for (var i = 0; i < plan.Actions.Count; i++)
        {
            var action = plan.Actions[i];
            OperationContext.Reporter.Progress(new OperationProgress(activity, $"[{action.HostName}] {action.Description}", i * 100 / plan.Actions.Count));
            OperationContext.Reporter.Verbose($"[{action.HostName}] {action.Description}");
            try
            {
                await action.Run(cancellationToken).ConfigureAwait(false);
            }
            catch (ReplicaException ex)
            {
                var done = i == 0 ? "Nothing was changed before it." : $"Done before it: {string.Join("; ", plan.Actions.Take(i).Select(a => a.ToString()))}. Running the same command again continues from here.";
                throw new ReplicaException(ex.ErrorId, ex.Category, $"{DrbdCommands.Scrub(ex.Message)} (Step {i + 1} of {plan.Actions.Count}: {action}.) {done}", ex.HostName, ex.Target, ex)
                {
                    RecommendedAction = ex.RecommendedAction,
                };
            }
        }

        OperationContext.Reporter.Progress(new OperationProgress(activity, "Done", 100, Completed: true));
    }

    private static void CheckDistinct(DrbdHostProbe primary, DrbdHostProbe secondary)
    {
        if (string.Equals(primary.NodeName, secondary.NodeName, StringComparison.Ordinal))
        {
            throw new ReplicaException("DrbdSameHost", ReplicaErrorCategory.InvalidArgument,
                $"-PrimaryHost '{primary.Name}' and -SecondaryHost '{secondary.Name}' are the same machine, or two machines with the same kernel host name '{primary.NodeName}' (uname -n). " +
                "DRBD tells the nodes of a resource apart by that name; give two different storage hosts.", secondary.Name, secondary.NodeName);
        }

        foreach (var probe in new[] { primary, secondary })
        {
            if (probe.NodeName.Length == 0 || !ReplicatedDiskRequest.IsConfigSafe(probe.NodeName) || probe.NodeName.Contains('"'))
            {
                throw DrbdErrors.Invalid(probe.Name, probe.NodeName, $"Host '{probe.Name}' reports the kernel host name '{probe.NodeName}' (uname -n), which cannot name a DRBD node.");
            }
        }
    }

    private static void CheckDisk(DrbdHostProbe probe, string disk)
    {
        switch (probe.DiskKind)
        {
            case "missing":
                throw new ReplicaException("DrbdDiskNotFound", ReplicaErrorCategory.ObjectNotFound,
                    $"On host '{probe.Name}', the disk '{disk}' does not exist. Nothing was written on either host.", probe.Name, disk)
                {
                    RecommendedAction = $"Check -Disk for '{probe.Name}' (lsblk lists its block devices).",
                };
            case "block" when probe.DiskSize is > 0:
                return;
            case "block":
                throw DrbdErrors.Invalid(probe.Name, disk, $"On host '{probe.Name}', the size of '{disk}' could not be read (blockdev --getsize64).");
            default:
                throw DrbdErrors.Invalid(probe.Name, disk, $"On host '{probe.Name}', '{disk}' is not a block device. DRBD replicates block devices; attach an image file with losetup first.");
        }
    }

    /// <summary>The resource as already configured (ours), or a clear error when the name is taken by something else.</summary>
    private static DrbdResourceConfig? ExistingResource(string name, DrbdHostProbe primary, DrbdHostProbe secondary)
    {
        foreach (var probe in new[] { primary, secondary })
        {
            if (probe.ConfigText is not null && probe.Config is null)
            {
                throw new ReplicaException("DrbdResourceExists", ReplicaErrorCategory.ResourceExists,
                    $"On host '{probe.Name}', {probe.Layout.ConfigFile(name)} exists but was not written by ReplicaTools: a DRBD resource named '{name}' is already configured there. Choose another -Name. Nothing was written on either host.",
                    probe.Name, name);
            }

            if (probe.Config is null && probe.Status is not null)
            {
                throw new ReplicaException("DrbdResourceExists", ReplicaErrorCategory.ResourceExists,
                    $"On host '{probe.Name}', a DRBD resource named '{name}' is up (role {probe.Status.Role}) but has no ReplicaTools resource file in {probe.Layout.ConfigDirectory}. Choose another -Name. Nothing was written on either host.",
                    probe.Name, name);
            }
        }

        return primary.Config ?? secondary.Config;
    }

    private async Task<DrbdResourceConfig> BuildConfigAsync(ReplicatedDiskRequest request, DrbdHostProbe primary, DrbdHostProbe secondary, DrbdResourceConfig? existing, CancellationToken cancellationToken)
    {
        var addresses = await Task.WhenAll(
            ReplicationAddressAsync(primary, request.PrimaryAddress, existing, cancellationToken),
            ReplicationAddressAsync(secondary, request.SecondaryAddress, existing, cancellationToken)).ConfigureAwait(false);
        if (addresses[0] == addresses[1])
        {
            throw DrbdErrors.Invalid(secondary.Name, addresses[1], $"'{primary.Name}' and '{secondary.Name}' both resolve to the replication address {addresses[0]}; give each its own with -ReplicationAddress.");
        }

        var nodes = new[]
        {
            new DrbdNodeConfig(primary.NodeName, 0, request.PrimaryDisk, addresses[0], request.PrimaryExportAddress ?? "0.0.0.0"),
            new DrbdNodeConfig(secondary.NodeName, 1, request.SecondaryDisk, addresses[1], request.SecondaryExportAddress ?? "0.0.0.0"),
        };
        if (existing is not null && existing.Nodes.Select(n => n.NodeName).OrderBy(n => n, StringComparer.Ordinal).SequenceEqual(nodes.Select(n => n.NodeName).OrderBy(n => n, StringComparer.Ordinal)))
        {
            // Keep the node order (and node ids) of the first run, whoever is primary now.
            nodes = existing.Nodes.Select(n => nodes.First(m => m.NodeName == n.NodeName) with { NodeId = n.NodeId }).ToArray();
        }

        return new DrbdResourceConfig
        {
            Name = request.Name,
            Minor = request.Minor ?? existing?.Minor ?? FreeMinor(primary, secondary),
            Port = request.Port,
            Protocol = request.Protocol,
            HmacAlgorithm = request.HmacAlgorithm,
            ResyncRateMBps = request.ResyncRateMBps,
            WaitForConnectionSeconds = request.WaitForConnectionSeconds,
            DegradedWaitSeconds = request.DegradedWaitSeconds,
            Nodes = nodes,
            Export = request.Export switch
            {
                ReplicatedDiskExport.Nbd => new DrbdExportConfig(ReplicatedDiskExport.Nbd, request.EffectiveExportName, request.NbdPort),
                ReplicatedDiskExport.Iscsi => new DrbdExportConfig(ReplicatedDiskExport.Iscsi, Iqn: request.Iqn, Lun: request.Lun, InitiatorName: request.InitiatorName, InitiatorAddress: request.InitiatorAddress),
                _ => new DrbdExportConfig(ReplicatedDiskExport.None),
            },
        };
    }

    /// <summary>-ReplicationAddress, else what the resource already uses, else the address the host is reached by.</summary>
    private static async Task<string> ReplicationAddressAsync(DrbdHostProbe probe, string? requested, DrbdResourceConfig? existing, CancellationToken cancellationToken)
    {
        if (requested is not null)
        {
            return requested;
        }

        if (existing?.Node(probe.NodeName) is { } node)
        {
            return node.Address;
        }

        if (probe.Session.Options is { } options)
        {
            if (IPAddress.TryParse(options.HostName, out _))
            {
                return options.HostName;
            }

            var lookup = await probe.Host.RunAsync(new CommandSpec("getent", "ahosts", options.HostName) { Timeout = DrbdCommands.QuickTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
            var address = lookup.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(line => line.Split(' ', 2)[0])
                .FirstOrDefault(a => IPAddress.TryParse(a, out var ip) && !IPAddress.IsLoopback(ip));
            if (address is not null)
            {
                return address;
            }
        }

        throw DrbdErrors.Invalid(probe.Name, "ReplicationAddress",
            $"The replication address of '{probe.Name}' is not known (its host name does not resolve to an address other than loopback there). Give -ReplicationAddress with the addresses of both hosts on the replication network.");
    }

    private static int FreeMinor(DrbdHostProbe primary, DrbdHostProbe secondary)
    {
        var used = primary.Others.Concat(secondary.Others).Select(o => o.Minor).OfType<int>()
            .Concat(primary.Kernel.Resources.Concat(secondary.Kernel.Resources).SelectMany(r => r.Devices).Select(d => d.Minor))
            .ToHashSet();
        return Enumerable.Range(0, 1 << 20).First(minor => !used.Contains(minor));
    }

    private static void CheckAgainstExisting(DrbdResourceConfig config, string secret, DrbdResourceConfig? existing, params DrbdHostProbe[] probes)
    {
        foreach (var probe in probes.Where(p => p.Config is not null))
        {
            var differences = config.Differences(probe.Config!);
            if (differences.Count == 0 && probe.ConfigText != config.Render(secret))
            {
                differences = new[] { "the shared secret differs" };
            }

            if (differences.Count > 0)
            {
                throw new ReplicaException("DrbdResourceConflict", ReplicaErrorCategory.ResourceExists,
                    $"On host '{probe.Name}', the replicated disk '{config.Name}' already exists ({probe.Layout.ConfigFile(config.Name)}) and differs from this request: {string.Join("; ", differences.Select(d => d.Replace(" instead of ", " there, requested ", StringComparison.Ordinal)))}. Nothing was changed. " +
                    "Run New-ReplicatedDisk with the same parameters as before, or remove it first (Remove-ReplicatedDisk).",
                    probe.Name, config.Name);
            }
        }

        _ = existing;
    }

    private static void CheckPortAndDisk(DrbdHostProbe probe, DrbdResourceConfig config, DrbdNodeConfig node, string disk)
    {
        foreach (var other in probe.Others)
        {
            if (other.Minor == config.Minor)
            {
                throw new ReplicaException("DrbdDeviceInUse", ReplicaErrorCategory.ResourceExists,
                    $"On host '{probe.Name}', {config.Device} is the device of DRBD resource '{other.Name}'. Choose another -Device, or leave it out to take the next free one. Nothing was written on either host.", probe.Name, config.Device);
            }

            if (other.Disk == disk)
            {
                throw new ReplicaException("DrbdDiskInUse", ReplicaErrorCategory.ResourceExists,
                    $"On host '{probe.Name}', '{disk}' is already the backing disk of DRBD resource '{other.Name}'. Nothing was written on either host.", probe.Name, disk);
            }

            if (other.Port == config.Port && (other.Address == node.Address || IsWildcard(other.Address)))
            {
                throw PortInUse(probe, node, config.Port, $"DRBD resource '{other.Name}' uses it");
            }
        }

        if (probe.Kernel.Resources.FirstOrDefault(r => r.Name != config.Name && r.Devices.Any(d => d.Minor == config.Minor)) is { } up)
        {
            throw new ReplicaException("DrbdDeviceInUse", ReplicaErrorCategory.ResourceExists,
                $"On host '{probe.Name}', {config.Device} belongs to DRBD resource '{up.Name}', which is up. Choose another -Device. Nothing was written on either host.", probe.Name, config.Device);
        }

        if (probe.Status is null && probe.Listening.Any(e => e.Port == config.Port && (e.Address == node.Address || IsWildcard(e.Address))))
        {
            throw PortInUse(probe, node, config.Port, "a program already listens on it (ss -ltnp shows which)");
        }
    }

    private static ReplicaException PortInUse(DrbdHostProbe probe, DrbdNodeConfig node, int port, string why) =>
        new("DrbdPortInUse", ReplicaErrorCategory.ResourceUnavailable,
            $"On host '{probe.Name}', TCP port {port} on {node.Address} is taken: {why}. Give another -Port. Nothing was written on either host.", probe.Name, port)
        {
            RecommendedAction = "Give another -Port (the same on both hosts), e.g. 7789.",
        };

    private static bool IsWildcard(string? address) => address is "0.0.0.0" or "::" or "*";

    private static bool NeedsMetadata(DrbdHostProbe probe, DrbdNodeConfig node, bool useExisting, List<string> notes)
    {
        if (probe.Status is not null)
        {
            return false;
        }

        if (probe.Metadata is not { } metadata)
        {
            return true;
        }

        if (probe.Config?.Node(probe.NodeName)?.Disk == node.Disk)
        {
            notes.Add($"{node.Disk} on {probe.Name} already carries this resource's DRBD metadata; create-md is skipped.");
            return false;
        }

        if (useExisting)
        {
            notes.Add($"{node.Disk} on {probe.Name} carries DRBD metadata ({metadata.Version}, current UUID {metadata.CurrentUuid}); it is used as it is (-UseExistingMetadata).");
            return false;
        }

        throw new ReplicaException("DrbdDiskHasMetadata", ReplicaErrorCategory.ResourceExists,
            $"On host '{probe.Name}', '{node.Disk}' already carries DRBD metadata ({metadata.Version}, current UUID {metadata.CurrentUuid}) of another resource: none configured on this host uses the disk (a removed resource, or one of another cluster). " +
            "Nothing was written on either host.", probe.Name, node.Disk)
        {
            RecommendedAction = $"To keep the disk's data and adopt its metadata, add -UseExistingMetadata. To start afresh, wipe it first on '{probe.Name}': drbdmeta --force - v09 {node.Disk} internal wipe-md.",
        };
    }

    /// <summary>The size /dev/drbdN gets on this host: from the metadata on disk when there is some, else DRBD's formula.</summary>
    private static long UsableBytes(DrbdHostProbe probe) =>
        probe.Metadata?.BitmapOffset ?? DrbdMetadata.UsableBytes(probe.DiskSize ?? 0);

    private sealed record SourceImage(string Path, QemuImgInfo Info);

    private static async Task<SourceImage?> CheckSourceAsync(ReplicatedDiskRequest request, DrbdHostProbe primary, DrbdHostProbe secondary, long usable, bool fresh, List<string> notes, CancellationToken cancellationToken)
    {
        var source = request.SourceImage!;
        if (!fresh)
        {
            notes.Add($"-SourceImage {source} is not copied: the disks already carry this resource's data.");
            return null;
        }

        var info = await primary.Host.RunAsync(new CommandSpec("qemu-img", "info", "-U", "--output=json", "--", source) { Timeout = DrbdCommands.QuickTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (info.ExitCode != 0)
        {
            throw new ReplicaException("DrbdSourceImageNotFound", ReplicaErrorCategory.ObjectNotFound,
                $"On host '{primary.Name}', qemu-img cannot read -SourceImage '{source}': {CommandFailedException.StderrTail(info.StandardError)}. Nothing was written on either host.", primary.Name, source);
        }

        var image = QemuImgInfo.Parse(info.StandardOutput, $"{primary.Name}:{source}");
        if (image.VirtualSize > usable)
        {
            var (small, disk) = UsableBytes(primary) <= UsableBytes(secondary) ? (primary, request.PrimaryDisk) : (secondary, request.SecondaryDisk);
            var metadata = small.DiskSize!.Value - UsableBytes(small);
            throw new ReplicaException("DrbdSourceImageTooLarge", ReplicaErrorCategory.LimitsExceeded,
                $"-SourceImage '{source}' ({image.Format}) has a virtual size of {ByteSize.Format(image.VirtualSize)} ({image.VirtualSize.ToString(CultureInfo.InvariantCulture)} bytes), more than the replicated disk holds: " +
                $"'{disk}' on '{small.Name}' has {small.DiskSize.Value.ToString(CultureInfo.InvariantCulture)} bytes, of which DRBD's internal metadata takes the last {metadata.ToString(CultureInfo.InvariantCulture)} bytes ({ByteSize.Format(metadata)}), " +
                $"leaving {usable.ToString(CultureInfo.InvariantCulture)} bytes. Use backing disks of at least {(image.VirtualSize + metadata).ToString(CultureInfo.InvariantCulture)} bytes, or a smaller image. Nothing was written on either host.",
                small.Name, source);
        }

        notes.Add($"{source} ({image.Format}, {ByteSize.Format(image.VirtualSize)}) is copied onto the DRBD device on {primary.Name} once it is primary; DRBD replicates every write to {secondary.Name}.");
        return new SourceImage(source, image);
    }

    private sealed record DryRun(IReadOnlyList<string> Up, IReadOnlyList<string> CreateMetadata, IReadOnlyList<string> Primary);

    /// <summary>drbdadm on the host checks the file (secret replaced, read from standard input: nothing is written) and dry-runs each step.</summary>
    private static async Task<DryRun> ValidateAsync(DrbdHostProbe probe, DrbdResourceConfig config, bool withPrimary, CancellationToken cancellationToken)
    {
        var text = config.Render(PlannedCommand.Redacted);
        var dump = await probe.Host.RunAsync(DrbdCommands.DrbdadmFromInput(text, "dump", config.Name), cancellationToken).ConfigureAwait(false);
        if (dump.ExitCode != 0)
        {
            var message = dump.StandardError.Contains("not defined in your config", StringComparison.Ordinal)
                ? $"drbdadm on '{probe.Name}' finds no 'on {probe.NodeName}' section for itself: the host's kernel host name (uname -n) changed while planning?"
                : $"drbdadm on '{probe.Name}' rejects the resource file: {DrbdCommands.Scrub(CommandFailedException.StderrTail(dump.StandardError))}";
            throw new ReplicaException("DrbdConfigInvalid", ReplicaErrorCategory.InvalidData, message + " Nothing was written on either host.", probe.Name, config.Name);
        }

        async Task<IReadOnlyList<string>> DryRunAsync(string verb, params string[] arguments)
        {
            var command = DrbdCommands.DrbdadmFromInput(text, verb, config.Name, dryRun: true);
            command = new CommandSpec(command.Arguments.Take(command.Arguments.Count - 1).Concat(arguments).Append(config.Name)) { Timeout = command.Timeout, StandardInput = command.StandardInput, ThrowOnFailure = false };
            var result = await probe.Host.RunAsync(command, cancellationToken).ConfigureAwait(false);
            if (result.ExitCode != 0)
            {
                throw new ReplicaException("DrbdConfigInvalid", ReplicaErrorCategory.InvalidData,
                    $"drbdadm on '{probe.Name}' cannot plan '{verb}' for '{config.Name}': {DrbdCommands.Scrub(CommandFailedException.StderrTail(result.StandardError))}. Nothing was written on either host.", probe.Name, config.Name);
            }

            return DrbdCommands.DryRunLines(result.StandardOutput);
        }

        return new DryRun(
            await DryRunAsync("up").ConfigureAwait(false),
            await DryRunAsync("create-md").ConfigureAwait(false),
            withPrimary ? await DryRunAsync("primary", "--force").ConfigureAwait(false) : Array.Empty<string>());
    }

    /// <summary>Writes the resource file (0600, secret through standard input), then has drbdadm read it back.</summary>
    private static ReplicatedDiskAction WriteConfigAction(DrbdHostProbe probe, DrbdResourceConfig config, System.Security.SecureString secret)
    {
        var file = probe.Layout.ConfigFile(config.Name);
        var write = new PlannedCommand(probe.Name, HostFiles.WriteAtomically(file, isPrivate: true, createDirectory: true, timeout: DrbdCommands.QuickTimeout), $"write {file} (mode 0600; the secret travels on standard input)")
        {
            ShownInput = config.Render(PlannedCommand.Redacted),
        };
        var check = new PlannedCommand(probe.Name, DrbdCommands.Drbdadm(file, "dump", config.Name), "drbdadm reads the written file back");
        var existed = probe.ConfigText is not null;
        return new ReplicatedDiskAction(probe.Name, $"write the resource file {file}", new[] { write, check }, async token =>
        {
            var content = Encoding.UTF8.GetBytes(config.Render(SecretText.Reveal(secret)));
            try
            {
                await probe.Host.RunAsync(write.Command.WithStandardInput(content), token).ConfigureAwait(false);
            }
            finally
            {
                Array.Clear(content);
            }

            var result = await probe.Host.RunAsync(new CommandSpec(check.Command.Arguments) { Timeout = check.Command.Timeout, ThrowOnFailure = false }, token).ConfigureAwait(false);
            if (result.ExitCode != 0)
            {
                if (!existed)
                {
                    await probe.Host.RunAsync(new CommandSpec("rm", "-f", "--", file) { Timeout = DrbdCommands.QuickTimeout, ThrowOnFailure = false }, CancellationToken.None).ConfigureAwait(false);
                }

                throw new ReplicaException("DrbdConfigInvalid", ReplicaErrorCategory.InvalidData,
                    $"On host '{probe.Name}', drbdadm rejects the written {file}: {DrbdCommands.Scrub(CommandFailedException.StderrTail(result.StandardError))}", probe.Name, file);
            }
        });
    }

    /// <summary>A drbdadm step that works without the kernel module (create-md, wipe-md): run on the host itself.</summary>
    private static ReplicatedDiskAction KernelFreeAction(DrbdHostProbe probe, string description, CommandSpec command, IReadOnlyList<string>? expansion = null)
    {
        var step = new PlannedCommand(probe.Name, command, description);
        return new ReplicatedDiskAction(probe.Name, description, new[] { step }, async token =>
        {
            var result = await probe.Host.RunAsync(new CommandSpec(command.Arguments) { Timeout = command.Timeout, ThrowOnFailure = false }, token).ConfigureAwait(false);
            if (result.ExitCode != 0)
            {
                throw DrbdErrors.CommandFailed(result, description);
            }
        }, expansion);
    }

    /// <summary>A step that needs the kernel module, run through <see cref="IDrbdKernel"/>.</summary>
    private ReplicatedDiskAction KernelAction(DrbdHostProbe probe, string description, CommandSpec command, IReadOnlyList<string>? expansion = null)
    {
        var step = new PlannedCommand(probe.Name, command, description);
        return new ReplicatedDiskAction(probe.Name, description, new[] { step }, token => Environment.Kernel.RunAsync(probe.Host, step, token), expansion);
    }

    private ReplicatedDiskAction CopyAction(DrbdHostProbe primary, DrbdResourceConfig config, SourceImage source)
    {
        var device = Environment.Kernel.DevicePath(primary.Host, config.Minor);
        var command = new CommandSpec("qemu-img", "convert", "-n", "-p", "-f", source.Info.Format, "-O", "raw", "--", source.Path, device) { Timeout = CopyTimeout };
        var description = $"copy {source.Path} onto {device}";
        var step = new PlannedCommand(primary.Name, command, description);
        return new ReplicatedDiskAction(primary.Name, description, new[] { step }, async token =>
        {
            var activity = $"Copying {source.Path} onto {config.Name}";
            await primary.Host.RunAsync(command.WithOutputLines(line =>
            {
                if (QemuImgProgress.TryParse(line, out var percent))
                {
                    OperationContext.Reporter.Progress(new OperationProgress(activity, $"{percent:0.00}% of {ByteSize.Format(source.Info.VirtualSize)}", (int)percent, ActivityId: 2));
                }
            }), token).ConfigureAwait(false);
            OperationContext.Reporter.Progress(new OperationProgress(activity, "Done", 100, ActivityId: 2, Completed: true));
        });
    }

    private async Task AddExportActionsAsync(List<ReplicatedDiskAction> actions, DrbdResourceConfig config, DrbdHostProbe exporter, DrbdHostProbe standby, CancellationToken cancellationToken)
    {
        var exports = await Task.WhenAll(ExportOf(exporter, config).ProbeAsync(cancellationToken), ExportOf(standby, config).ProbeAsync(cancellationToken)).ConfigureAwait(false);
        if (await exports[0].PlanStartAsync(cancellationToken).ConfigureAwait(false) is { } start)
        {
            actions.Add(start);
        }

        if (exports[1].State == ReplicatedDiskExportState.Running)
        {
            throw new ReplicaException("DrbdExportConflict", ReplicaErrorCategory.ResourceExists,
                $"On host '{standby.Name}', the export of '{config.Name}' runs although {exporter.Name} is the one to export it. Stop it first (Switch-ReplicatedDisk -NewPrimary {exporter.Name} finishes an interrupted switch).", standby.Name, config.Name);
        }

        if (await exports[1].PlanStandbyAsync(cancellationToken).ConfigureAwait(false) is { } configure)
        {
            actions.Add(configure);
        }
    }

    private NodeExport ExportOf(DrbdHostProbe probe, DrbdResourceConfig config) =>
        new(probe.Host, config, config.Node(probe.NodeName)!, probe.Layout, Environment.Kernel.DevicePath(probe.Host, config.Minor));

    private static IReadOnlyList<ReplicatedDiskWarning> ModuleWarnings(IEnumerable<DrbdHostProbe> probes) =>
        probes.Where(p => !p.Kernel.ModuleLoaded)
            .Select(p => new ReplicatedDiskWarning(p.Name, $"the DRBD kernel module is not available there ({p.Kernel.Problem?.Trim()}); the plan cannot run until it is loaded (modprobe drbd)", Fatal: true))
            .ToArray();
}

/// <summary>Something the operator must know about a plan; <see cref="Fatal"/> ones stop it from running.</summary>
public sealed record ReplicatedDiskWarning(string HostName, string Message, bool Fatal = false)
{
    public override string ToString() => $"On host '{HostName}', {Message}.";
}

/// <summary>Reads qemu-img's -p progress meter, e.g. <c>    (42.17/100%)</c>.</summary>
internal static class QemuImgProgress
{
    public static bool TryParse(string line, out double percent)
    {
        percent = 0;
        var start = line.IndexOf('(');
        var slash = line.IndexOf("/100%", StringComparison.Ordinal);
        return start >= 0 && slash > start && double.TryParse(line.AsSpan(start + 1, slash - start - 1), NumberStyles.Float, CultureInfo.InvariantCulture, out percent);
    }
}
