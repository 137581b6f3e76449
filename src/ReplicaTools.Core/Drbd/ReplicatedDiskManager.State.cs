using System.Globalization;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Text;

namespace ReplicaTools.Core.Drbd;

public sealed partial class ReplicatedDiskManager
{
    /// <summary>Default pause between two status reads while waiting.</summary>
    public static readonly TimeSpan DefaultPollInterval = TimeSpan.FromSeconds(2);

    /// <summary>
    /// The replicated disks ReplicaTools set up on <paramref name="hosts"/> (one or both nodes), each with both nodes'
    /// state from <c>drbdsetup status --json</c> and which node exports it. A node that was not given, or cannot be
    /// reached, is described as its peer sees it.
    /// </summary>
    /// <param name="include">Which resource names to return; null for all.</param>
    public async Task<IReadOnlyList<ReplicatedDisk>> GetAsync(IReadOnlyList<ReplicaSession> hosts, Func<string, bool>? include, CancellationToken cancellationToken = default)
    {
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var session in hosts)
        {
            try
            {
                names.UnionWith(await DrbdHostProbe.ListResourcesAsync(session, Environment, cancellationToken).ConfigureAwait(false));
            }
            catch (ReplicaException ex) when (IsUnreachable(ex))
            {
                OperationContext.Reporter.Warning($"Host '{session.Host.Name}' cannot be reached ({ex.Message}); its resources are listed from the other host only.");
            }
        }

        var disks = new List<ReplicatedDisk>();
        foreach (var name in names.Where(n => include?.Invoke(n) ?? true))
        {
            disks.Add(await GetAsync(hosts, name, cancellationToken).ConfigureAwait(false));
        }

        return disks;
    }

    /// <summary>One replicated disk by name.</summary>
    /// <exception cref="ReplicaException">ReplicatedDiskNotFound: no given host has a ReplicaTools resource of that name.</exception>
    public async Task<ReplicatedDisk> GetAsync(IReadOnlyList<ReplicaSession> hosts, string name, CancellationToken cancellationToken = default)
    {
        var pair = await ProbePairAsync(hosts, name, cancellationToken).ConfigureAwait(false);
        var entries = new List<ReplicatedDiskHost>();
        foreach (var node in pair.Config.Nodes)
        {
            var probe = pair.Probe(node);
            var peer = pair.Probes.FirstOrDefault(p => p.NodeName != node.NodeName);
            if (probe is not null)
            {
                var export = await ExportOf(probe, pair.Config).ProbeAsync(cancellationToken).ConfigureAwait(false);
                entries.Add(FromOwnView(probe, node, export));
            }
            else
            {
                entries.Add(FromPeerView(node, peer, pair.Unreachable.FirstOrDefault()));
            }
        }

        return new ReplicatedDisk
        {
            Name = pair.Config.Name,
            Device = pair.Config.Device,
            Minor = pair.Config.Minor,
            Port = pair.Config.Port,
            Protocol = pair.Config.Protocol,
            Hosts = entries,
            StorageHost = pair.Probes.Select(p => p.Session).ToArray(),
            ExportProtocol = pair.Config.Export.Protocol,
            ExportName = pair.Config.Export.Protocol == ReplicatedDiskExport.Nbd ? pair.Config.Export.Name : null,
            Iqn = pair.Config.Export.Iqn,
            ConfigFile = pair.Probes[0].Layout.ConfigFile(pair.Config.Name),
        };
    }

    /// <summary>
    /// Reads the disk's state every <paramref name="interval"/> until both nodes are UpToDate and connected, reporting
    /// the resync's progress (percent, bytes out of sync, drbdsetup's time estimate).
    /// </summary>
    /// <exception cref="ReplicaException">DrbdWaitTimedOut after <paramref name="timeout"/>; DrbdNotSyncing when a node is down or stand-alone, which no wait mends.</exception>
    public async Task<ReplicatedDisk> WaitAsync(IReadOnlyList<ReplicaSession> hosts, string name, TimeSpan timeout, TimeSpan? interval = null, CancellationToken cancellationToken = default)
    {
        var deadline = DateTimeOffset.UtcNow + timeout;
        var activity = $"Replicated disk {name}: waiting until both nodes are UpToDate";
        while (true)
        {
            var disk = await GetAsync(hosts, name, cancellationToken).ConfigureAwait(false);
            if (disk.InSync)
            {
                OperationContext.Reporter.Progress(new OperationProgress(activity, "In sync", 100, Completed: true));
                return disk;
            }

            if (disk.Hosts.FirstOrDefault(h => h.Queried && (h.Role == "Down" || h.ConnectionState == "StandAlone")) is { } stuck)
            {
                throw new ReplicaException("DrbdNotSyncing", ReplicaErrorCategory.InvalidOperation,
                    $"On host '{stuck.HostName}', '{name}' is {(stuck.Role == "Down" ? "not up" : "StandAlone (disconnected on purpose, or after a split brain)")}; it will not get in sync by waiting. {Describe(disk)}",
                    stuck.HostName, name);
            }

            var percent = disk.SyncPercent;
            var eta = disk.Hosts.Select(h => h.EstimatedSecondsToFinish).FirstOrDefault(s => s is not null);
            OperationContext.Reporter.Progress(new OperationProgress(activity, Describe(disk),
                percent is { } p ? (int)Math.Floor(p) : -1, eta is { } seconds and < int.MaxValue ? (int)seconds : -1));
            if (DateTimeOffset.UtcNow >= deadline)
            {
                throw new ReplicaException("DrbdWaitTimedOut", ReplicaErrorCategory.OperationTimeout,
                    $"'{name}' was not in sync after {timeout.TotalSeconds.ToString("0", CultureInfo.InvariantCulture)} s: {Describe(disk)}", disk.Primary, name)
                {
                    RecommendedAction = "Wait longer (-TimeoutSeconds), or raise the resync rate (-ResyncRateMBps when the disk is set up).",
                };
            }

            await Task.Delay(interval ?? DefaultPollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>One line for progress and errors: each node's role, disk state, connection and sync.</summary>
    public static string Describe(ReplicatedDisk disk) => string.Join("; ", disk.Hosts.Select(h =>
        $"{h.HostName} {h.Role}/{h.DiskState} {h.ConnectionState}" +
        (h.SyncPercent is { } p && h.ReplicationState != "Established" ? $" {h.ReplicationState} {p.ToString("0.00", CultureInfo.InvariantCulture)}%" : string.Empty) +
        (h.OutOfSyncBytes is > 0 ? $", {ByteSize.Format(h.OutOfSyncBytes.Value)} out of sync" : string.Empty)));

    private static ReplicatedDiskHost FromOwnView(DrbdHostProbe probe, DrbdNodeConfig node, NodeExport export)
    {
        var status = probe.Status;
        var peer = status?.Peer?.Volume0;
        return new ReplicatedDiskHost
        {
            HostName = probe.Session.HostName,
            NodeName = node.NodeName,
            Session = probe.Session,
            Queried = true,
            Role = status?.Role ?? (probe.Kernel.ModuleLoaded ? "Down" : "Unknown"),
            DiskState = status?.DiskState ?? "DUnknown",
            ConnectionState = status?.Peer?.ConnectionState ?? (status is null ? "Unknown" : "StandAlone"),
            ReplicationState = peer?.ReplicationState ?? "Off",
            SyncPercent = peer is null ? null : peer.PercentResyncDone ?? peer.PercentInSync,
            OutOfSyncBytes = peer?.OutOfSyncKiB * 1024,
            EstimatedSecondsToFinish = peer?.EstimatedSecondsToFinish,
            Disk = node.Disk,
            Address = node.Address,
            ExportState = export.State,
            ExportUri = export.Uri,
            Problem = probe.Kernel.ModuleLoaded ? null : $"the DRBD kernel module is not available: {probe.Kernel.Problem?.Trim()}",
        };
    }

    private static ReplicatedDiskHost FromPeerView(DrbdNodeConfig node, DrbdHostProbe? peer, (string Host, string Why)? unreachable)
    {
        var seen = peer?.Status?.Peer;
        return new ReplicatedDiskHost
        {
            HostName = unreachable?.Host ?? node.NodeName,
            NodeName = node.NodeName,
            Queried = false,
            Role = seen?.PeerRole ?? "Unknown",
            DiskState = seen?.Volume0?.PeerDiskState ?? "DUnknown",
            ConnectionState = seen?.ConnectionState ?? "Unknown",
            ReplicationState = seen?.Volume0?.ReplicationState ?? "Off",
            Disk = node.Disk,
            Address = node.Address,
            Problem = unreachable is { } u ? $"not reachable: {u.Why}" : $"not queried (give both storage hosts); values as {peer?.Name ?? "nobody"} sees it",
        };
    }

    private sealed record ProbedPair(DrbdResourceConfig Config, IReadOnlyList<DrbdHostProbe> Probes, IReadOnlyList<(string Host, string Why)> Unreachable)
    {
        public DrbdHostProbe? Probe(DrbdNodeConfig node) => Probes.FirstOrDefault(p => p.NodeName == node.NodeName);
    }

    /// <summary>Probes every given host that answers; matches each to a node of the resource by its kernel host name.</summary>
    private async Task<ProbedPair> ProbePairAsync(IReadOnlyList<ReplicaSession> hosts, string name, CancellationToken cancellationToken)
    {
        if (hosts.Count is 0 or > 2)
        {
            throw DrbdErrors.Invalid(null, "StorageHost", $"Give the one or two storage hosts of '{name}' (-StorageHost), not {hosts.Count}.");
        }

        var probes = new List<DrbdHostProbe>();
        var unreachable = new List<(string, string)>();
        foreach (var (session, result) in hosts.Zip(await Task.WhenAll(hosts.Select(h => TryProbeAsync(h, name, cancellationToken))).ConfigureAwait(false)))
        {
            if (result.Probe is { } probe)
            {
                probes.Add(probe);
            }
            else
            {
                unreachable.Add((session.HostName, result.Why!));
            }
        }

        var config = probes.Select(p => p.Config).FirstOrDefault(c => c is not null);
        if (config is null)
        {
            throw new ReplicaException("ReplicatedDiskNotFound", ReplicaErrorCategory.ObjectNotFound,
                $"There is no replicated disk '{name}' on {string.Join(" or ", hosts.Select(h => $"'{h.Host.Name}'"))}{(unreachable.Count > 0 ? $" ({string.Join("; ", unreachable.Select(u => $"{u.Item1} not reachable: {u.Item2}"))})" : string.Empty)}. Get-ReplicatedDisk lists them.",
                hosts[0].Host.Name, name);
        }

        foreach (var probe in probes)
        {
            if (config.Node(probe.NodeName) is null)
            {
                throw DrbdErrors.Invalid(probe.Name, probe.NodeName,
                    $"Host '{probe.Name}' (kernel host name '{probe.NodeName}') is not a node of '{name}', whose nodes are {string.Join(" and ", config.Nodes.Select(n => n.NodeName))}.");
            }

            if (probe.Config is { } own && own.Differences(config).Count > 0)
            {
                OperationContext.Reporter.Warning($"The resource file of '{name}' on '{probe.Name}' differs from the other node's: {string.Join("; ", own.Differences(config))}.");
            }
        }

        if (probes.Select(p => p.NodeName).Distinct().Count() < probes.Count)
        {
            throw new ReplicaException("DrbdSameHost", ReplicaErrorCategory.InvalidArgument, $"The storage hosts given are the same machine ({string.Join(", ", probes.Select(p => p.Name))}).", probes[0].Name, name);
        }

        return new ProbedPair(config, probes, unreachable);
    }

    private async Task<(DrbdHostProbe? Probe, string? Why)> TryProbeAsync(ReplicaSession session, string name, CancellationToken cancellationToken)
    {
        try
        {
            return (await DrbdHostProbe.ForExistingAsync(session, Environment, name, cancellationToken).ConfigureAwait(false), null);
        }
        catch (ReplicaException ex) when (IsUnreachable(ex))
        {
            return (null, ex.Message);
        }
    }

    private static bool IsUnreachable(ReplicaException ex) => ex is HostUnreachableException or SshConnectionException || ex.ErrorId is "HostUnreachable" or "SshConnectionFailed";
}
