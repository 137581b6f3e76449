using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;

namespace ReplicaTools.Core.Clone;

/// <summary>Lists and removes checkpoints (libvirt checkpoints, QEMU dirty bitmaps) for Get-/Remove-DiskCheckpoint.</summary>
public static class DiskCheckpointManager
{
    /// <summary>Checkpoints of one disk, or of every disk of the VM when <paramref name="drive"/> is null.</summary>
    public static async Task<IReadOnlyList<DiskCheckpoint>> ListAsync(VirtualMachine vm, string? drive, CancellationToken cancellationToken = default)
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
        return all.GroupBy(c => (c.Drive, c.Name)).Select(g => g.First()).OrderBy(c => c.Drive, StringComparer.Ordinal).ThenBy(c => c.CreationTime).ThenBy(c => c.Name, StringComparer.Ordinal).ToList();
    }

    /// <summary>The command that removes a checkpoint, for -WhatIf; nothing is contacted.</summary>
    public static PlannedCommand PlanRemoval(VirtualMachine vm, string? drive, string name) => vm.CreatePointInTimeSource("/var/tmp").PlanRemoveCheckpoint(drive, name);

    /// <summary>Removes the checkpoint <paramref name="name"/> of <paramref name="drive"/>; a missing one is an error naming the ones there are.</summary>
    public static async Task RemoveAsync(VirtualMachine vm, string? drive, string name, CancellationToken cancellationToken = default)
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
    }
}
