namespace ReplicaTools.Core.Remote;

/// <summary>A command ran and exited with a code that does not count as success.</summary>
public sealed class CommandFailedException : ReplicaException
{
    public CommandFailedException(CommandResult result)
        : base("CommandFailed", ReplicaErrorCategory.InvalidResult, BuildMessage(result), result.HostName, result.CommandLine)
    {
        Result = result;
    }

    public CommandResult Result { get; }

    public int ExitCode => Result.ExitCode;

    public string StandardError => Result.StandardError;

    private static string BuildMessage(CommandResult result)
    {
        var detail = StderrTail(result.StandardError);
        return $"On host '{result.HostName}', the command '{Shorten(result.CommandLine)}' failed with exit code {result.ExitCode}" +
               (detail.Length > 0 ? $": {detail}" : " and printed nothing on standard error.");
    }

    internal static string Shorten(string commandLine) =>
        commandLine.Length <= 300 ? commandLine : commandLine[..300] + "...";

    internal static string StderrTail(string stderr)
    {
        var text = stderr.Trim();
        return text.Length <= 2000 ? text : "..." + text[^2000..];
    }
}

/// <summary>The command did not finish within its timeout; it was killed on the host.</summary>
public sealed class CommandTimeoutException : ReplicaException
{
    public CommandTimeoutException(string hostName, string commandLine, TimeSpan timeout)
        : base("CommandTimedOut", ReplicaErrorCategory.OperationTimeout,
            $"On host '{hostName}', the command '{CommandFailedException.Shorten(commandLine)}' did not finish within {timeout.TotalSeconds:0.#} s and was killed.",
            hostName, commandLine)
    {
        Timeout = timeout;
        RecommendedAction = "Raise the timeout (-TimeoutSeconds) if the command needs longer, or check why it hangs on that host.";
    }

    public TimeSpan Timeout { get; }
}

/// <summary>The host could not be reached at all (refused, timed out, name not resolved).</summary>
public sealed class HostUnreachableException : ReplicaException
{
    public HostUnreachableException(string hostName, string detail)
        : base("HostUnreachable", ReplicaErrorCategory.ConnectionError, $"Cannot reach host '{hostName}': {detail}", hostName, hostName)
    {
        RecommendedAction = "Check the host name, port and network path (and -JumpHost), and that sshd runs on the host.";
    }
}

/// <summary>The host's SSH key is unknown or has changed; nothing was run.</summary>
public sealed class HostKeyVerificationException : ReplicaException
{
    public HostKeyVerificationException(string hostName, bool keyChanged, string detail)
        : base(keyChanged ? "HostKeyChanged" : "HostKeyUnknown", ReplicaErrorCategory.SecurityError, BuildMessage(hostName, keyChanged, detail), hostName, hostName)
    {
        KeyChanged = keyChanged;
        RecommendedAction = keyChanged
            ? "Find out why the key changed. Only if the change is legitimate, remove the old entry with 'ssh-keygen -R HOST' and connect again."
            : "Verify the host's key fingerprint out of band and add it to known_hosts (ssh-keyscan), or pass -AcceptNewHostKey to trust it on first use.";
    }

    public bool KeyChanged { get; }

    private static string BuildMessage(string hostName, bool keyChanged, string detail) => keyChanged
        ? $"The SSH host key of '{hostName}' has CHANGED since it was recorded in known_hosts; refusing to connect. {detail}"
        : $"The SSH host key of '{hostName}' is not in known_hosts and strict host key checking is on; refusing to connect. " +
          "Verify the key and add it to known_hosts, or pass -AcceptNewHostKey to trust a key seen for the first time. " + detail;
}

/// <summary>SSH reached the host but authentication failed.</summary>
public sealed class SshAuthenticationException : ReplicaException
{
    public SshAuthenticationException(string hostName, string detail)
        : base("AuthenticationFailed", ReplicaErrorCategory.AuthenticationError, $"SSH authentication to '{hostName}' failed: {detail}", hostName, hostName)
    {
        RecommendedAction = "Check -UserName and -KeyFilePath, and that the key is in the user's authorized_keys on the host. Password prompts are disabled (BatchMode).";
    }
}

/// <summary>Any other failure of the SSH transport itself.</summary>
public sealed class SshConnectionException : ReplicaException
{
    public SshConnectionException(string hostName, string detail)
        : base("SshConnectionFailed", ReplicaErrorCategory.ConnectionError, $"SSH to '{hostName}' failed: {detail}", hostName, hostName)
    {
    }
}

/// <summary>The operation was cancelled (Ctrl+C, StopProcessing); any remote process was killed.</summary>
public sealed class CommandCancelledException : ReplicaException
{
    public CommandCancelledException(string hostName, string commandLine)
        : base("CommandCancelled", ReplicaErrorCategory.OperationStopped,
            $"On host '{hostName}', the command '{CommandFailedException.Shorten(commandLine)}' was cancelled and killed.", hostName, commandLine)
    {
    }
}
