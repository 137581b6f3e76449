namespace ReplicaTools.Core.Qemu;

/// <summary>QEMU answered a QMP command with an error (its class and description are kept).</summary>
public class QmpException : ReplicaException
{
    public QmpException(string endpoint, string command, string errorClass, string description)
        : base($"Qmp{errorClass}", Categorize(errorClass), $"QEMU at {endpoint} refused '{command}': {description} ({errorClass})", null, command)
    {
        Endpoint = endpoint;
        Command = command;
        ErrorClass = errorClass;
        Description = description;
    }

    public string Endpoint { get; }

    public string Command { get; }

    /// <summary>QMP's error class: GenericError, CommandNotFound, DeviceNotFound, DeviceNotActive, KVMMissingCap.</summary>
    public string ErrorClass { get; }

    public string Description { get; }

    internal static QmpException Create(string endpoint, string command, string errorClass, string description) => errorClass switch
    {
        "DeviceNotFound" => new QmpDeviceNotFoundException(endpoint, command, description),
        "CommandNotFound" => new QmpCommandNotFoundException(endpoint, command, description),
        _ => new QmpException(endpoint, command, errorClass, description),
    };

    private static ReplicaErrorCategory Categorize(string errorClass) => errorClass switch
    {
        "DeviceNotFound" => ReplicaErrorCategory.ObjectNotFound,
        "CommandNotFound" => ReplicaErrorCategory.NotInstalled,
        "DeviceNotActive" => ReplicaErrorCategory.ResourceUnavailable,
        _ => ReplicaErrorCategory.InvalidOperation,
    };
}

/// <summary>The device, node or job named in a QMP command does not exist.</summary>
public sealed class QmpDeviceNotFoundException(string endpoint, string command, string description)
    : QmpException(endpoint, command, "DeviceNotFound", description);

/// <summary>This QEMU does not know the command (too old, or not compiled in).</summary>
public sealed class QmpCommandNotFoundException(string endpoint, string command, string description)
    : QmpException(endpoint, command, "CommandNotFound", description);

/// <summary>The QMP connection failed or closed (QEMU gone, socket missing, another client connected).</summary>
public sealed class QmpConnectionException : ReplicaException
{
    public QmpConnectionException(string endpoint, string message, string? hostName = null, Exception? inner = null)
        : base("QmpConnectionFailed", ReplicaErrorCategory.ConnectionError, $"QMP connection to {endpoint}: {message}", hostName, endpoint, inner)
    {
        Endpoint = endpoint;
    }

    public string Endpoint { get; }
}
