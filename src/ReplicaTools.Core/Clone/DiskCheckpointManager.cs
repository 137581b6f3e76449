using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>Lists and removes checkpoints (libvirt checkpoints, QEMU dirty bitmaps) for Get-/Remove-DiskCheckpoint.</summary>
public static class DiskCheckpointManager
{
    /// <summary>
    /// Checkpoints of one disk, or of every disk of the VM when <paramref name="drive"/> is null. Invoke-NbdClone's
    /// checkpoints carry their destination (from the chain records in <paramref name="stateDirectory"/> on the VM host) and
    /// whether it still exists: an orphaned one is reported with a warning that says how to remove it.
    /// </summary>
    public static async Task<IReadOnlyList<DiskCheckpoint>> ListAsync(VirtualMachine vm, string? drive, CancellationToken cancellationToken = default,
        string stateDirectory = CloneChainRecord.DefaultStateDirectory)
    {
        var drives = drive is null
            ? (await vm.GetDisksAsync(cancellationToken).ConfigureAwait(false)).Select(d => d.Drive).ToList()
            : new List<string> { drive };
        var all = new List<DiskCheckpoint>();
        foreach (var name in drives)
        {
            await using var source = vm.CreatePointInTimeSource("/var/tmp");
            await source.OpenAsync(name, cancellationToken).ConfigureAwait(false);
            all.AddRange(await source.GetCheckpointsAsync(cancellationToken).ConfigureAwait(false));
        }

        // libvirt lists a checkpoint once per disk it tracks; keep one row per (disk, checkpoint).
        var list = all.GroupBy(c => (c.Drive, c.Name)).Select(g => g.First()).OrderBy(c => c.Drive, StringComparer.Ordinal).ThenBy(c => c.CreationTime).ThenBy(c => c.Name, StringComparer.Ordinal).ToList();
        await FindOrphansAsync(vm, list, stateDirectory, cancellationToken).ConfigureAwait(false);
        return list;
    }

    /// <summary>The command that removes a checkpoint, for -WhatIf; nothing is contacted.</summary>
    public static PlannedCommand PlanRemoval(VirtualMachine vm, string? drive, string name) => vm.CreatePointInTimeSource("/var/tmp").PlanRemoveCheckpoint(drive, name);

    /// <summary>
    /// Removes the checkpoint <paramref name="name"/> of <paramref name="drive"/>; a missing one is an error naming the ones
    /// there are. Removing the last checkpoint of a clone chain also removes the chain's record on the VM host.
    /// </summary>
    public static async Task RemoveAsync(VirtualMachine vm, string? drive, string name, CancellationToken cancellationToken = default,
        string stateDirectory = CloneChainRecord.DefaultStateDirectory)
    {
        await using var source = vm.CreatePointInTimeSource("/var/tmp");
        await source.OpenAsync(drive, cancellationToken).ConfigureAwait(false);
        var checkpoints = await source.GetCheckpointsAsync(cancellationToken).ConfigureAwait(false);
        var checkpoint = checkpoints.FirstOrDefault(c => c.Name == name)
            ?? throw new ReplicaException("CheckpointNotFound", ReplicaErrorCategory.ObjectNotFound,
                $"{vm.DisplayName}, disk '{source.Disk.Drive}', has no checkpoint '{name}'. Its checkpoints: {(checkpoints.Count == 0 ? "none" : string.Join(", ", checkpoints.Select(c => c.Name)))}.",
                vm.Host.Name, name);
        if (checkpoint.IsCloneCheckpoint)
        {
            OperationContext.Reporter.Warning($"'{name}' is the checkpoint of an Invoke-NbdClone destination: its next -Incremental clone will be a full clone.");
        }

        await source.RemoveCheckpointAsync(name, cancellationToken).ConfigureAwait(false);
        if (checkpoint.Chain is { } chain && !checkpoints.Any(c => c.Name != name && c.Chain == chain))
        {
            await CloneChainRecord.DeleteAsync(vm.Host, stateDirectory, chain, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Sets Destination and Orphaned on clone checkpoints, by asking each destination's host whether the clone is still there.</summary>
    private static async Task FindOrphansAsync(VirtualMachine vm, IReadOnlyList<DiskCheckpoint> checkpoints, string stateDirectory, CancellationToken cancellationToken)
    {
        var chains = checkpoints.Where(c => c.Chain is not null).Select(c => c.Chain!).Distinct().ToList();
        var records = await CloneChainRecord.ReadManyAsync(vm.Host, stateDirectory, chains, cancellationToken).ConfigureAwait(false);
        foreach (var record in records.Values)
        {
            var host = HostOf(vm, record.DestinationHost);
            var gone = host is null ? null : await WhyGoneAsync(host, record, cancellationToken).ConfigureAwait(false);
            if (host is null)
            {
                OperationContext.Reporter.Verbose($"Chain '{record.Chain}' of {vm.DisplayName} belongs to {record.Destination}; no open session reaches host '{record.DestinationHost}', so whether it still exists is not known (New-ReplicaSession opens one).");
            }

            foreach (var checkpoint in checkpoints.Where(c => c.Chain == record.Chain))
            {
                checkpoint.Destination = record.Destination;
                checkpoint.Orphaned = host is null ? null : gone is not null;
                if (gone is null)
                {
                    continue;
                }

                var target = vm.Backend == VmBackend.Libvirt ? $"-VMName '{vm.Name}'" : $"-QmpSocket '{vm.Name}'";
                checkpoint.Problem = $"orphaned: {gone}. Nothing will read this checkpoint again, and its dirty bitmap keeps counting every guest write. " +
                                     $"Remove it with: Remove-DiskCheckpoint {target} -Drive '{checkpoint.Drive}' -Name '{checkpoint.Name}' (or pipe Get-DiskCheckpoint | Where-Object Orphaned into Remove-DiskCheckpoint)";
                OperationContext.Reporter.Warning($"{vm.DisplayName}, disk '{checkpoint.Drive}': checkpoint '{checkpoint.Name}' is {checkpoint.Problem}.");
            }
        }
    }

    /// <summary>The host of a destination as the clone's session named it: the VM's own host, this machine, or an open session's.</summary>
    private static IReplicaHost? HostOf(VirtualMachine vm, string hostName)
    {
        if (string.Equals(hostName, vm.Session.HostName, StringComparison.OrdinalIgnoreCase))
        {
            return vm.Host;
        }

        return string.Equals(hostName, ReplicaSession.Local.HostName, StringComparison.OrdinalIgnoreCase)
            ? LocalHost.Instance
            : ReplicaSessionRegistry.Find(hostName)?.Host;
    }

    /// <summary>Null while the destination is still the chain's clone; otherwise why it is not.</summary>
    private static async Task<string?> WhyGoneAsync(IReplicaHost host, CloneChainRecord record, CancellationToken cancellationToken)
    {
        var probe = await host.RunAsync(new CommandSpec("sh", "-c", "[ -e \"$1\" ] || { echo missing; exit 0; }; cat -- \"$2\" 2>/dev/null || echo no-metadata", "rt",
            record.DestinationPath, record.SidecarPath) { Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
        var output = probe.StandardOutput.Trim();
        if (output == "missing")
        {
            return $"its clone destination {record.Destination} no longer exists";
        }

        var sidecar = output == "no-metadata" ? null : CloneSidecar.Parse(output);
        return sidecar is null ? $"{record.Destination} exists but no longer carries clone metadata ({record.SidecarPath})"
            : sidecar.Chain != record.Chain ? $"{record.Destination} is now the clone of checkpoint chain '{sidecar.Chain}', not '{record.Chain}'"
            : null;
    }
}
