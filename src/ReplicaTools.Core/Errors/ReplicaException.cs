namespace ReplicaTools.Core;

/// <summary>
/// Mirrors the PowerShell ErrorCategory names the module uses, so the core can classify errors without
/// referencing System.Management.Automation; the cmdlet layer maps them by name.
/// </summary>
public enum ReplicaErrorCategory
{
    NotSpecified,
    ConnectionError,
    SecurityError,
    AuthenticationError,
    OperationTimeout,
    OperationStopped,
    InvalidArgument,
    InvalidData,
    InvalidResult,
    InvalidOperation,
    ObjectNotFound,
    ResourceExists,
    ResourceUnavailable,
    NotInstalled,
    ParserError,
    DeviceError,
    WriteError,
    ReadError,
    ProtocolError,
    LimitsExceeded,
    NotImplemented,
    PermissionDenied,
}

/// <summary>Base of every error the core reports: carries an ErrorId, a category and the host it concerns.</summary>
public class ReplicaException : Exception
{
    public ReplicaException(string errorId, ReplicaErrorCategory category, string message, string? hostName = null, object? target = null, Exception? inner = null)
        : base(message, inner)
    {
        ErrorId = errorId;
        Category = category;
        HostName = hostName;
        Target = target;
    }

    /// <summary>A stable identifier (PowerShell's FullyQualifiedErrorId prefix), e.g. "HostUnreachable".</summary>
    public string ErrorId { get; }

    public ReplicaErrorCategory Category { get; }

    /// <summary>The host the error concerns, if any.</summary>
    public string? HostName { get; }

    /// <summary>The object the error concerns (a path, a VM name ...), for ErrorRecord.TargetObject.</summary>
    public object? Target { get; }

    /// <summary>What the operator can do about it, if the core knows.</summary>
    public string? RecommendedAction { get; init; }
}
