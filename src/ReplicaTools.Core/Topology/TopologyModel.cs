using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Topology;

/// <summary>A topology file: the hosts ReplicaTools manages and the replicated disks on them.</summary>
public sealed class ReplicaTopology
{
    internal ReplicaTopology(string path, IReadOnlyList<TopologyHost> hosts, IReadOnlyList<TopologyDisk> disks)
    {
        Path = path;
        Hosts = new TopologyHostCollection(hosts);
        Disks = disks;
    }

    public string Path { get; }

    public TopologyHostCollection Hosts { get; }

    public IReadOnlyList<TopologyDisk> Disks { get; }

    public TopologyDisk? Disk(string name) => Disks.FirstOrDefault(d => string.Equals(d.Name, name, StringComparison.OrdinalIgnoreCase));

    public override string ToString() => $"{Path} ({Hosts.Count} hosts, {Disks.Count} disks)";
}

/// <summary>Hosts in file order, also indexable by name: <c>$topology.Hosts['nfs1']</c>.</summary>
public sealed class TopologyHostCollection : IReadOnlyList<TopologyHost>
{
    private readonly IReadOnlyList<TopologyHost> hosts;

    internal TopologyHostCollection(IReadOnlyList<TopologyHost> hosts) => this.hosts = hosts;

    public int Count => hosts.Count;

    public TopologyHost this[int index] => hosts[index];

    public TopologyHost this[string name] =>
        hosts.FirstOrDefault(h => string.Equals(h.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new KeyNotFoundException($"The topology has no host named '{name}'. Hosts: {string.Join(", ", hosts.Select(h => h.Name))}.");

    public IEnumerable<TopologyHost> WithRole(string role) => hosts.Where(h => h.Roles.Contains(role, StringComparer.OrdinalIgnoreCase));

    public IEnumerator<TopologyHost> GetEnumerator() => hosts.GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>
/// A host of the topology. Its property names match New-ReplicaSession's parameters, so hosts pipe into it;
/// <see cref="Session"/> opens a session on first use, so hosts also pipe straight into every other cmdlet.
/// </summary>
public sealed class TopologyHost
{
    private readonly object gate = new();
    private ReplicaSession? session;

    internal TopologyHost(string name, string address)
    {
        Name = name;
        HostName = address;
    }

    public string Name { get; }

    /// <summary>The address ssh connects to.</summary>
    public string HostName { get; }

    public string? UserName { get; init; }

    public int Port { get; init; } = 22;

    public string? KeyFilePath { get; init; }

    public string? JumpHost { get; init; }

    /// <summary>The transport the file names for this host ('transport'); null for the platform's default.</summary>
    public SessionTransport? Transport { get; init; }

    /// <summary>The known_hosts file for this host ('knownHostsFile'); null for ~/.ssh/known_hosts.</summary>
    public string? KnownHostsPath { get; init; }

    public int ConnectTimeoutSeconds { get; init; } = 10;

    public bool AcceptNewHostKey { get; init; }

    /// <summary>Extra ssh options as "Name=Value" strings, as New-ReplicaSession -SshOption takes them.</summary>
    public string[] SshOption { get; init; } = Array.Empty<string>();

    public string[] Roles { get; init; } = Array.Empty<string>();

    public int Line { get; init; }

    public SshConnectionOptions ConnectionOptions => new()
    {
        Transport = Transport ?? SessionTransports.Default,
        HostName = HostName,
        Port = Port,
        UserName = UserName,
        KeyFilePath = KeyFilePath,
        KnownHostsPath = KnownHostsPath,
        JumpHost = JumpHost,
        ConnectTimeoutSeconds = ConnectTimeoutSeconds,
        AcceptNewHostKey = AcceptNewHostKey,
        ExtraOptions = SshOption.Select(SshConnectionOptions.ParseOption).ToArray(),
        DisplayName = Name,
    };

    /// <summary>The session to this host, created when first asked for (the connection opens on its first command).</summary>
    public ReplicaSession Session
    {
        get
        {
            lock (gate)
            {
                if (session is null || session.State == ReplicaSessionState.Closed)
                {
                    session = ReplicaSessionRegistry.Find(Name) is { State: not ReplicaSessionState.Closed } existing && existing.HostName == HostName && existing.Port == Port
                        ? existing
                        : ReplicaSessionRegistry.Create(ConnectionOptions, Name, isImplicit: true);
                }

                return session;
            }
        }
    }

    public override string ToString() => $"{Name} ({HostName})";
}

/// <summary>A copy of a replicated disk: a path (or nfs:// URL) on a storage host.</summary>
public sealed record TopologyDiskCopy(string Host, string Path);

/// <summary>A replicated VM disk described by the topology.</summary>
public sealed class TopologyDisk
{
    internal TopologyDisk(string name, string vmName, string host)
    {
        Name = name;
        VMName = vmName;
        Host = host;
    }

    public string Name { get; }

    public string VMName { get; }

    /// <summary>The KVM host the VM runs on (a topology host name).</summary>
    public string Host { get; }

    public string? Drive { get; init; }

    public string? Format { get; init; }

    public long? Size { get; init; }

    /// <summary>The disk's copies in order of preference: the first is the primary.</summary>
    public IReadOnlyList<TopologyDiskCopy> Copies { get; init; } = Array.Empty<TopologyDiskCopy>();

    public int Line { get; init; }

    public override string ToString() => $"{Name} ({VMName} on {Host})";
}
