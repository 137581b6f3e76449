namespace ReplicaTools.Core.Clone;

/// <summary>One piece of state an interrupted clone left behind on the VM host.</summary>
public sealed record StaleFinding(string Kind, string Name, string Detail)
{
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
