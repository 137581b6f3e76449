namespace ReplicaTools.Core.Remote;

/// <summary>How a session reaches its host (New-ReplicaSession -Transport, a topology host's 'transport').</summary>
public enum SessionTransport
{
    /// <summary>The OpenSSH client (ssh) with one ControlMaster connection per session; uses ssh_config and ssh-agent.</summary>
    OpenSsh,

    /// <summary>SSH.NET (Renci.SshNet) in this process: one connection per session, password and key authentication.</summary>
    SshNet,
}

/// <summary>Which transport a session uses when none is named.</summary>
public static class SessionTransports
{
    /// <summary>
    /// OpenSsh where the ssh client multiplexes (Linux, macOS); SshNet on Windows, whose OpenSSH client has no
    /// ControlMaster (Win32-OpenSSH issue 405) and would pay a full handshake for every command.
    /// </summary>
    public static SessionTransport Default => OperatingSystem.IsWindows() ? SessionTransport.SshNet : SessionTransport.OpenSsh;
}

/// <summary>A host reached over SSH, by either transport: the connection a <see cref="ReplicaSession"/> manages.</summary>
public interface ISshHost : IReplicaHost
{
    SshConnectionOptions Options { get; }

    SessionTransport Transport { get; }

    /// <summary>True while the shared connection is up (always true for OpenSSH without multiplexing).</summary>
    bool IsConnected { get; }

    /// <summary>Opens the shared connection now (instead of on the first command), so connection errors surface here.</summary>
    Task ConnectAsync(CancellationToken cancellationToken = default);

    /// <summary>Closes the shared connection; the next command opens a new one.</summary>
    Task DisconnectAsync();
}
