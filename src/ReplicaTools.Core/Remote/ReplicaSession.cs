namespace ReplicaTools.Core.Remote;

public enum ReplicaSessionState
{
    /// <summary>Created; the shared connection opens on first use.</summary>
    Disconnected,

    /// <summary>The shared SSH connection is up (or the session is the local machine).</summary>
    Opened,

    /// <summary>Removed; it can no longer run commands.</summary>
    Closed,
}

/// <summary>A host the module runs commands on, as the cmdlets pass it around (-Session).</summary>
public sealed class ReplicaSession
{
    private readonly IReplicaHost host;
    private volatile bool closed;

    internal ReplicaSession(int id, string name, IReplicaHost host, SshConnectionOptions? options, bool isImplicit)
    {
        Id = id;
        Name = name;
        this.host = host;
        Options = options;
        IsImplicit = isImplicit;
        CreatedAt = DateTimeOffset.Now;
    }

    /// <summary>The local machine: what every cmdlet uses when given neither -Session nor -HostName.</summary>
    public static ReplicaSession Local { get; } = new(0, "localhost", LocalHost.Instance, null, isImplicit: true);

    public int Id { get; }

    public string Name { get; }

    public string HostName => Options?.HostName ?? "localhost";

    public int Port => Options?.Port ?? 0;

    public string? UserName => Options?.UserName;

    public bool IsLocal => Options is null;

    /// <summary>True when the session was opened by a cmdlet given only -HostName (or a topology host), not by New-ReplicaSession.</summary>
    public bool IsImplicit { get; }

    public DateTimeOffset CreatedAt { get; }

    public SshConnectionOptions? Options { get; }

    /// <summary>The SSH implementation carrying the session; null for the local machine.</summary>
    public SessionTransport? Transport => (host as ISshHost)?.Transport;

    /// <summary>The OpenSSH ControlMaster socket; null for other transports and the local machine.</summary>
    public string? ControlPath => (host as SshHost)?.ControlPath;

    public ReplicaSessionState State => closed ? ReplicaSessionState.Closed
        : IsLocal || (host is ISshHost ssh && ssh.IsConnected) ? ReplicaSessionState.Opened
        : ReplicaSessionState.Disconnected;

    /// <summary>The host to run commands on; a closed session refuses.</summary>
    public IReplicaHost Host
    {
        get
        {
            if (closed)
            {
                throw new ReplicaException("SessionClosed", ReplicaErrorCategory.InvalidOperation,
                    $"Session {Id} ('{Name}') is closed. Create a new one with New-ReplicaSession.", HostName, this);
            }

            return host;
        }
    }

    public async Task OpenAsync(CancellationToken cancellationToken = default)
    {
        if (Host is ISshHost ssh)
        {
            await ssh.ConnectAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    internal async Task CloseAsync()
    {
        if (IsLocal || closed)
        {
            return;
        }

        closed = true;
        if (host is ISshHost ssh)
        {
            await ssh.DisconnectAsync().ConfigureAwait(false);
        }
    }

    public override string ToString() => IsLocal ? "localhost" : $"{Name} (session {Id})";
}

/// <summary>The sessions of this process, as Get-ReplicaSession lists them.</summary>
public static class ReplicaSessionRegistry
{
    private static readonly object Gate = new();
    private static readonly List<ReplicaSession> Open = new();
    private static int nextId;

    public static IReadOnlyList<ReplicaSession> Sessions
    {
        get
        {
            lock (Gate)
            {
                return Open.ToArray();
            }
        }
    }

    public static ReplicaSession Create(SshConnectionOptions options, string? name = null, bool isImplicit = false, string? controlDirectory = null)
    {
        ISshHost host = options.Transport == SessionTransport.SshNet ? new SshNetHost(options) : new SshHost(options, controlDirectory);
        lock (Gate)
        {
            var session = new ReplicaSession(++nextId, name ?? options.DisplayName ?? options.HostName, host, options, isImplicit);
            Open.Add(session);
            return session;
        }
    }

    /// <summary>An open session whose name or host name is <paramref name="hostNameOrName"/>, preferring explicit sessions.</summary>
    public static ReplicaSession? Find(string hostNameOrName)
    {
        lock (Gate)
        {
            return Open
                .Where(s => string.Equals(s.Name, hostNameOrName, StringComparison.OrdinalIgnoreCase) || string.Equals(s.HostName, hostNameOrName, StringComparison.OrdinalIgnoreCase))
                .OrderBy(s => s.IsImplicit)
                .ThenBy(s => s.Id)
                .FirstOrDefault();
        }
    }

    public static async Task RemoveAsync(ReplicaSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        lock (Gate)
        {
            Open.Remove(session);
        }

        await session.CloseAsync().ConfigureAwait(false);
    }
}

/// <summary>Implements the module-wide rule: -Session wins, else -HostName (reusing an open session), else the local machine.</summary>
public static class HostResolver
{
    public static ReplicaSession Resolve(ReplicaSession? session, string? hostName, Func<string, SshConnectionOptions>? defaultsForHost = null)
    {
        if (session is not null)
        {
            if (!string.IsNullOrEmpty(hostName) && !session.IsLocal
                && !string.Equals(hostName, session.HostName, StringComparison.OrdinalIgnoreCase)
                && !string.Equals(hostName, session.Name, StringComparison.OrdinalIgnoreCase))
            {
                throw new ReplicaException("SessionHostMismatch", ReplicaErrorCategory.InvalidArgument,
                    $"-Session is session {session.Id} to '{session.HostName}', but -HostName is '{hostName}'. Give one of them.", hostName, session);
            }

            _ = session.Host; // a closed session fails here, with its message
            return session;
        }

        if (string.IsNullOrEmpty(hostName))
        {
            return ReplicaSession.Local;
        }

        return ReplicaSessionRegistry.Find(hostName)
            ?? ReplicaSessionRegistry.Create(defaultsForHost?.Invoke(hostName) ?? new SshConnectionOptions { HostName = hostName }, isImplicit: true);
    }
}
