namespace ReplicaTools.Core.Quorum;

/// <summary>The ErrorIds of the quorum cmdlets (PowerShell's FullyQualifiedErrorId prefix).</summary>
public static class QuorumErrorIds
{
    public const string TooFewReplicas = "QuorumTooFewReplicas";
    public const string ThresholdInvalid = "QuorumThresholdInvalid";
    public const string OptionConflict = "QuorumOptionConflict";
    public const string NameInvalid = "QuorumNameInvalid";
    public const string ReplicaTwice = "QuorumReplicaTwice";
    public const string ReplicaNotFound = "QuorumReplicaNotFound";
    public const string ReplicaUnreachable = "QuorumReplicaUnreachable";
    public const string ReplicaUnreadable = "QuorumReplicaUnreadable";
    public const string ReplicaOnOtherHost = "QuorumReplicaOnOtherHost";
    public const string SizeMismatch = "QuorumReplicaSizeMismatch";
    public const string ReplicasDiffer = "QuorumReplicasDiffer";
    public const string ReplicaInUse = "QuorumReplicaInUse";
    public const string NameInUse = "QuorumNameInUse";
    public const string AttachFailed = "QuorumAttachFailed";
    public const string DiskNotFound = "QuorumDiskNotFound";
    public const string ReplicaNotInQuorum = "QuorumReplicaNotInQuorum";
    public const string NoMajority = "QuorumNoMajority";
    public const string CompareFailed = "QuorumCompareFailed";
    public const string NbdServerBusy = "QuorumNbdServerBusy";
    public const string RepairFailed = "QuorumRepairFailed";
    public const string RepairUnsupported = "QuorumRepairUnsupported";
    public const string ToolMissing = "QuorumToolMissing";
    public const string EventSocketInvalid = "QuorumEventSocketInvalid";
}

/// <summary>An error of the quorum feature: its ErrorId is one of <see cref="QuorumErrorIds"/>.</summary>
public sealed class QuorumException : ReplicaException
{
    public QuorumException(string errorId, ReplicaErrorCategory category, string message, string? hostName = null, object? target = null, Exception? inner = null)
        : base(errorId, category, message, hostName, target, inner)
    {
    }
}
