namespace ReplicaTools.Core.Clone;

/// <summary>The kinds of state an interrupted clone can leave behind on the VM host.</summary>
public enum StaleStateKind
{
    /// <summary>A QEMU block job of a clone (fleecing) that was never released.</summary>
    BlockJob,

    /// <summary>A libvirt pull-mode backup job that was never released.</summary>
    BackupJob,

    /// <summary>A QEMU NBD export of a clone.</summary>
    NbdExport,

    /// <summary>A QEMU block node of a clone (scratch or filter node).</summary>
    BlockNode,

    /// <summary>A clone bitmap that stopped recording: an interrupted checkpoint rotation.</summary>
    DisabledBitmap,

    /// <summary>More than one checkpoint of the destination's chain: the last run did not finish.</summary>
    CheckpointRotation,

    /// <summary>A scratch (or definition) file of a clone in the scratch directory.</summary>
    ScratchFile,
}

/// <summary>State an interrupted clone left behind, as the stale-state check finds it and -Repair settles it.</summary>
/// <param name="Type">What it is; repairs match on this.</param>
/// <param name="Name">Its name on the VM or host (job id, node name, bitmap names, file path).</param>
public sealed record StaleFinding(StaleStateKind Type, string Name, string Detail)
{
    /// <summary>What it is, as messages say it ("block job", "scratch file" ...).</summary>
    public string Kind => Type switch
    {
        StaleStateKind.BlockJob => "block job",
        StaleStateKind.BackupJob => "backup job",
        StaleStateKind.NbdExport => "NBD export",
        StaleStateKind.BlockNode => "block node",
        StaleStateKind.DisabledBitmap => "disabled bitmap",
        StaleStateKind.CheckpointRotation => "checkpoint rotation",
        _ => "scratch file",
    };

    public override string ToString() => $"{Kind} '{Name}' ({Detail})";
}

/// <summary>An interrupted earlier run left state behind; nothing was started. -Repair cleans it up.</summary>
public sealed class StaleCloneStateException : ReplicaException
{
    public StaleCloneStateException(string vmDisplayName, string drive, string hostName, IReadOnlyList<StaleFinding> findings)
        : base("StaleCloneState", ReplicaErrorCategory.ResourceExists,
            $"{vmDisplayName}, disk '{drive}': an interrupted earlier clone left state behind, so no new clone was started. Found: " +
            string.Join("; ", findings) + ".", hostName, vmDisplayName)
    {
        Findings = findings;
        RecommendedAction = "Run Invoke-NbdClone again with -Repair: it ends the stale export and job, merges the point-in-time state back " +
                            "(guest writes are never discarded), rolls back an unfinished checkpoint rotation and deletes scratch files, then clones.";
    }

    public IReadOnlyList<StaleFinding> Findings { get; }
}

/// <summary>Another clone of the same VM or to the same destination is running right now.</summary>
public sealed class CloneInProgressException : ReplicaException
{
    public CloneInProgressException(string hostName, string what, string? holder = null)
        : base("CloneInProgress", ReplicaErrorCategory.ResourceUnavailable,
            $"On host '{hostName}', another clone holds the lock of {what}{(holder is null ? string.Empty : $": {holder}")}; nothing was changed.", hostName, what)
    {
        Holder = holder;
        RecommendedAction = "Wait for the other clone to finish (an hourly clone that takes longer than an hour overlaps the next one). " +
                            "If its PowerShell was killed, its remote copier ends within seconds and the lock with it; a retry then waits for that by itself.";
    }

    /// <summary>The run holding the lock, as it recorded itself ("Invoke-NbdClone run r1a2b3c4 (pid 4711 on ctl1, since ...)"), or null.</summary>
    public string? Holder { get; }
}

/// <summary>The copy did not complete: the export, the job, the copier or a connection failed. The VM runs on its original disk with every write.</summary>
public sealed class CloneFailedException : ReplicaException
{
    public CloneFailedException(string message, string? hostName, object? target, Exception? inner = null)
        : base("CloneFailed", ReplicaErrorCategory.InvalidResult, message, hostName, target, inner)
    {
    }
}

/// <summary>-Verify found that the destination differs from the point-in-time source; the destination was not promoted.</summary>
public sealed class CloneVerificationException : ReplicaException
{
    public CloneVerificationException(string message, string hostName, object? target)
        : base("CloneVerificationFailed", ReplicaErrorCategory.InvalidData, message, hostName, target)
    {
        RecommendedAction = "Run the clone again without -Incremental. If it fails again, check the destination's storage and the network path.";
    }
}
