using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Drbd;

public sealed partial class ReplicatedDiskManager
{
    /// <summary>
    /// Plans moving the disk to <paramref name="newPrimary"/>: stop the export on the old primary, demote it, promote the
    /// new one, start the export there. Every step already done is left out, so a switch that was interrupted halfway
    /// is finished by planning and running it again.
    /// </summary>
    /// <param name="newPrimary">The host to promote: a session name, host name or kernel host name of one of <paramref name="hosts"/>.</param>
    /// <param name="force">Promote even when the new primary's disk is not UpToDate, or when the old primary cannot be reached (it is dead).</param>
    /// <exception cref="ReplicaException">DrbdNotUpToDate, DrbdPeerUnreachable (without <paramref name="force"/>), DrbdResourceDown, or a bad -NewPrimary.</exception>
    public async Task<ReplicatedDiskPlan> PlanSwitchAsync(IReadOnlyList<ReplicaSession> hosts, string name, string newPrimary, bool force, CancellationToken cancellationToken = default)
    {
        var pair = await ProbePairAsync(hosts, name, cancellationToken).ConfigureAwait(false);
        var config = pair.Config;
        var target = pair.Probes.FirstOrDefault(p => Names(p).Contains(newPrimary, StringComparer.OrdinalIgnoreCase));
        if (target is null)
        {
            var unreachable = pair.Unreachable.Any(u => string.Equals(u.Host, newPrimary, StringComparison.OrdinalIgnoreCase));
            throw unreachable
                ? new ReplicaException("DrbdPeerUnreachable", ReplicaErrorCategory.ConnectionError, $"-NewPrimary '{newPrimary}' cannot be reached, so it cannot be promoted: {pair.Unreachable.First(u => string.Equals(u.Host, newPrimary, StringComparison.OrdinalIgnoreCase)).Why}", newPrimary, name)
                : DrbdErrors.Invalid(null, newPrimary, $"-NewPrimary '{newPrimary}' is not one of the storage hosts of '{name}' ({string.Join(", ", pair.Probes.SelectMany(Names).Distinct())}).");
        }

        var old = pair.Probes.FirstOrDefault(p => p != target);
        var notes = new List<string> { $"{name}: {target.Name} becomes primary." };
        var warnings = new List<ReplicatedDiskWarning>();
        if (target.Status is null)
        {
            throw new ReplicaException("DrbdResourceDown", ReplicaErrorCategory.InvalidOperation,
                $"On host '{target.Name}', '{name}' is not up, so it cannot become primary. Bring it up first (New-ReplicatedDisk with the same parameters does that).", target.Name, name);
        }

        if (old is null)
        {
            var why = pair.Unreachable.Count > 0 ? $"cannot be reached ({pair.Unreachable[0].Why})" : "was not given (-StorageHost)";
            if (!force)
            {
                throw new ReplicaException("DrbdPeerUnreachable", ReplicaErrorCategory.ConnectionError,
                    $"The other node of '{name}' {why}, so its export cannot be stopped nor the node demoted. If it is dead, pass -Force to promote '{target.Name}' without it; if it still serves clients, two primaries would let the data diverge. Nothing was changed.",
                    target.Name, name);
            }

            warnings.Add(new ReplicatedDiskWarning(target.Name, $"its peer {why}: it is promoted without stopping the peer's export or demoting the peer (-Force). Before that node serves clients again, make sure it is secondary"));
        }

        var uptodate = target.Status.DiskState == "UpToDate";
        if (!uptodate && !force)
        {
            var sync = target.Status.Peer?.Volume0;
            throw new ReplicaException("DrbdNotUpToDate", ReplicaErrorCategory.InvalidOperation,
                $"On host '{target.Name}', the disk of '{name}' is {target.Status.DiskState}{(sync is { IsResyncing: true } ? $" ({sync.ReplicationState}, {(sync.PercentResyncDone ?? sync.PercentInSync):0.00}% done)" : string.Empty)}, not UpToDate: promoting it would serve stale or incomplete data. " +
                "Wait until it is in sync (Wait-ReplicatedDisk), or pass -Force if the old primary is dead and this copy is the best there is. Nothing was changed.",
                target.Name, name);
        }

        var actions = new List<ReplicatedDiskAction>();
        NodeExport? oldExport = null;
        if (old is not null)
        {
            oldExport = await ExportOf(old, config).ProbeAsync(cancellationToken).ConfigureAwait(false);
            if (await oldExport.PlanStopAsync(cancellationToken).ConfigureAwait(false) is { } stop)
            {
                actions.Add(stop);
            }

            if (old.Status?.Role == "Primary")
            {
                actions.Add(KernelAction(old, $"demote {old.Name} to secondary", DrbdCommands.Drbdadm(old.Layout.ConfigFile(name), "secondary", name)));
            }
        }

        if (target.Status.Role != "Primary")
        {
            actions.Add(KernelAction(target, uptodate ? $"promote {target.Name} to primary" : $"promote {target.Name} to primary although its disk is {target.Status.DiskState} (-Force)",
                DrbdCommands.Drbdadm(target.Layout.ConfigFile(name), "primary", name, uptodate ? Array.Empty<string>() : new[] { "--force" })));
        }

        var newExport = await ExportOf(target, config).ProbeAsync(cancellationToken).ConfigureAwait(false);
        if (await newExport.PlanStartAsync(cancellationToken).ConfigureAwait(false) is { } start)
        {
            actions.Add(start);
        }

        if (oldExport is { State: ReplicatedDiskExportState.Missing } && await oldExport.PlanStandbyAsync(cancellationToken).ConfigureAwait(false) is { } standby)
        {
            actions.Add(standby);
        }

        if (actions.Count == 0)
        {
            notes.Add($"{target.Name} already is the primary and serves the export; nothing to do.");
        }

        return new ReplicatedDiskPlan(name, actions, notes) { Warnings = warnings, Sessions = pair.Probes.Select(p => p.Session).ToArray() };
    }

    /// <summary>
    /// Plans taking a replicated disk down for good on every reachable node: its exports, the resource (drbdadm down),
    /// optionally its metadata (wipe-md), and its resource file. The data on the backing disks stays.
    /// </summary>
    /// <param name="wipeMetadata">Also erase DRBD's metadata, so the disks no longer carry a DRBD signature.</param>
    /// <param name="force">Disconnect iSCSI initiators still logged in.</param>
    public async Task<ReplicatedDiskPlan> PlanRemoveAsync(IReadOnlyList<ReplicaSession> hosts, string name, bool wipeMetadata, bool force, CancellationToken cancellationToken = default)
    {
        var pair = await ProbePairAsync(hosts, name, cancellationToken).ConfigureAwait(false);
        var config = pair.Config;
        var warnings = pair.Unreachable.Select(u => new ReplicatedDiskWarning(u.Host, $"it cannot be reached ({u.Why}); its part of '{name}' stays until Remove-ReplicatedDisk runs again with it")).ToList();
        var notes = new List<string> { $"{name}: removed from {string.Join(" and ", pair.Probes.Select(p => p.Name))}; the data on the backing disks stays{(wipeMetadata ? ", their DRBD metadata is wiped" : ", and so does their DRBD metadata (New-ReplicatedDisk -UseExistingMetadata adopts it)")}." };
        var actions = new List<ReplicatedDiskAction>();

        // Exports first (primary first), so nothing holds a device open when the resource goes down.
        foreach (var probe in pair.Probes.OrderBy(p => p.Status?.Role == "Primary" ? 0 : 1))
        {
            var export = await ExportOf(probe, config).ProbeAsync(cancellationToken).ConfigureAwait(false);
            if (await export.PlanRemoveAsync(force, cancellationToken).ConfigureAwait(false) is { } remove)
            {
                actions.Add(remove);
            }
        }

        foreach (var probe in pair.Probes.Where(p => p.Status is not null))
        {
            actions.Add(KernelAction(probe, $"take {name} down", DrbdCommands.Drbdadm(probe.Layout.ConfigFile(name), "down", name)));
        }

        foreach (var probe in pair.Probes.Where(p => p.Config is not null))
        {
            var file = probe.Layout.ConfigFile(name);
            if (wipeMetadata)
            {
                actions.Add(KernelFreeAction(probe, $"wipe the DRBD metadata on {config.Node(probe.NodeName)!.Disk}", DrbdCommands.Drbdadm(file, "wipe-md", name, "--force")));
            }

            actions.Add(KernelFreeAction(probe, $"remove the resource file {file}", new CommandSpec("rm", "-f", "--", file) { Timeout = DrbdCommands.QuickTimeout }));
        }

        return new ReplicatedDiskPlan(name, actions, notes) { Warnings = warnings, Sessions = pair.Probes.Select(p => p.Session).ToArray() };
    }

    /// <summary>Runs a switch or remove plan; returns the disk's state afterwards (null once it is removed).</summary>
    public async Task<ReplicatedDisk?> RunAsync(ReplicatedDiskPlan plan, bool readBack = true, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        await RunActionsAsync(plan, cancellationToken).ConfigureAwait(false);
        return readBack ? await GetAsync(plan.Sessions, plan.Name, cancellationToken).ConfigureAwait(false) : null;
    }

    private static IEnumerable<string> Names(DrbdHostProbe probe) => new[] { probe.Session.Name, probe.Session.HostName, probe.Host.Name, probe.NodeName };
}
