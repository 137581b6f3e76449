using System.Security;

namespace ReplicaTools.Core.Remote;

/// <summary>How to reach a host over SSH, with the OpenSSH client or SSH.NET (<see cref="Transport"/>).</summary>
public sealed class SshConnectionOptions
{
    // Options ReplicaTools sets itself; each has its own parameter or must not be changed.
    private static readonly Dictionary<string, string> ManagedOptions = new(StringComparer.OrdinalIgnoreCase)
    {
        ["BatchMode"] = "ReplicaTools never prompts (BatchMode is always on)",
        ["ControlMaster"] = "connection sharing is managed by the session",
        ["ControlPath"] = "connection sharing is managed by the session",
        ["ControlPersist"] = "connection sharing is managed by the session",
        ["StrictHostKeyChecking"] = "use -AcceptNewHostKey to trust a key seen for the first time",
        ["Port"] = "use -Port",
        ["User"] = "use -UserName",
        ["IdentityFile"] = "use -KeyFilePath",
        ["ProxyJump"] = "use -JumpHost",
        ["ConnectTimeout"] = "use -ConnectTimeoutSeconds",
        ["HostName"] = "use -HostName",
        ["RemoteCommand"] = "commands are given with -ArgumentList",
        ["RequestTTY"] = "commands run without a terminal so their output stays byte-exact",
    };

    public required string HostName { get; init; }

    /// <summary>Which SSH implementation carries the session. Default: <see cref="SessionTransports.Default"/>.</summary>
    public SessionTransport Transport { get; init; } = SessionTransports.Default;

    public int Port { get; init; } = 22;

    public string? UserName { get; init; }

    public string? KeyFilePath { get; init; }

    /// <summary>The passphrase of an encrypted <see cref="KeyFilePath"/> (SshNet only; with OpenSSH, load the key into ssh-agent).</summary>
    public SecureString? KeyPassphrase { get; init; }

    /// <summary>A password for password or keyboard-interactive authentication (SshNet only: OpenSSH runs in BatchMode).</summary>
    public SecureString? Password { get; init; }

    /// <summary>
    /// The known_hosts file host keys are checked against and new ones recorded in. Default: the user's
    /// ~/.ssh/known_hosts (OpenSSH's UserKnownHostsFile), shared by both transports.
    /// </summary>
    public string? KnownHostsPath { get; init; }

    /// <summary>How many commands run at once over the connection: sshd's MaxSessions (default 10). More wait for a free channel.</summary>
    public int MaxSessions { get; init; } = 10;

    /// <summary>An ssh -J destination: [user@]host[:port].</summary>
    public string? JumpHost { get; init; }

    /// <summary>Extra ssh -o options as (name, value) pairs, in order.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> ExtraOptions { get; init; } = Array.Empty<KeyValuePair<string, string>>();

    /// <summary>Trust a host key seen for the first time (StrictHostKeyChecking=accept-new). A changed key is always refused.</summary>
    public bool AcceptNewHostKey { get; init; }

    public int ConnectTimeoutSeconds { get; init; } = 10;

    /// <summary>How long an idle shared connection stays open.</summary>
    public int ControlPersistSeconds { get; init; } = 600;

    /// <summary>Share one connection (ControlMaster) between commands. Off only for measurements.</summary>
    public bool Multiplex { get; init; } = true;

    /// <summary>The name messages use for this host (e.g. its topology name); default the host name and port.</summary>
    public string? DisplayName { get; init; }

    public string SshExecutable { get; init; } = "ssh";

    public string EffectiveName => DisplayName ?? (Port == 22 ? HostName : $"{HostName}:{Port}");

    /// <summary>Parses "Name=Value" (or "Name Value") as ssh -o takes it, rejecting what ReplicaTools manages itself.</summary>
    public static KeyValuePair<string, string> ParseOption(string option)
    {
        ArgumentNullException.ThrowIfNull(option);
        var text = option.Trim();
        var split = text.IndexOfAny(new[] { '=', ' ', '\t' });
        if (split <= 0 || split == text.Length - 1)
        {
            throw new ArgumentException($"SSH option '{option}' is not of the form Name=Value (for example ServerAliveInterval=30).", nameof(option));
        }

        var name = text[..split].Trim();
        var value = text[(split + 1)..].Trim().TrimStart('=').Trim();
        ValidateOption(name, value);
        return new KeyValuePair<string, string>(name, value);
    }

    public void Validate()
    {
        ValidateHostName(HostName, "HostName");
        if (Port is < 1 or > 65535)
        {
            throw new ArgumentException($"Port {Port} for host '{HostName}' is outside 1-65535.", nameof(Port));
        }

        if (UserName is not null && (UserName.Length == 0 || UserName.StartsWith('-') || UserName.Any(c => char.IsControl(c) || char.IsWhiteSpace(c) || c == '@')))
        {
            throw new ArgumentException($"User name '{UserName}' for host '{HostName}' is not a valid login name.", nameof(UserName));
        }

        if (KeyFilePath is not null && !File.Exists(KeyFilePath))
        {
            throw new ArgumentException($"Key file '{KeyFilePath}' for host '{HostName}' does not exist.", nameof(KeyFilePath));
        }

        if (JumpHost is not null)
        {
            ValidateHostName(JumpHost, "JumpHost");
            foreach (var hop in Transport == SessionTransport.SshNet ? new[] { JumpHost } : JumpHost.Split(','))
            {
                _ = ParseJumpHost(hop);
            }
        }

        if (MaxSessions is < 1 or > 1000)
        {
            throw new ArgumentException($"MaxSessions {MaxSessions} for host '{HostName}' is outside 1-1000.", nameof(MaxSessions));
        }

        if (KnownHostsPath is not null && ExtraOptions.Any(o => string.Equals(o.Key, "UserKnownHostsFile", StringComparison.OrdinalIgnoreCase)))
        {
            throw new ArgumentException($"Host '{HostName}' names its known_hosts file twice (-KnownHostsPath and -SshOption UserKnownHostsFile); give only -KnownHostsPath.", nameof(KnownHostsPath));
        }

        if (Transport == SessionTransport.OpenSsh)
        {
            if (Password is not null)
            {
                throw new ArgumentException(
                    $"Host '{HostName}': -Credential (password or keyboard-interactive authentication) needs -Transport SshNet. " +
                    "The OpenSSH transport runs ssh in BatchMode, which never sends a password; use a key (-KeyFilePath or ssh-agent) or -Transport SshNet.", "Credential");
            }

            if (KeyPassphrase is not null)
            {
                throw new ArgumentException(
                    $"Host '{HostName}': -KeyPassphrase needs -Transport SshNet. With the OpenSSH transport, load the encrypted key into ssh-agent (ssh-add) instead.", nameof(KeyPassphrase));
            }
        }
        else if (ExtraOptions.Count > 0)
        {
            throw new ArgumentException(
                $"Host '{HostName}': -SshOption ({string.Join(", ", ExtraOptions.Select(o => o.Key))}) configures the OpenSSH client and does not apply to -Transport SshNet. " +
                "Use -KnownHostsPath for the known_hosts file.", "SshOption");
        }

        if (ConnectTimeoutSeconds is < 1 or > 3600)
        {
            throw new ArgumentException($"ConnectTimeoutSeconds {ConnectTimeoutSeconds} for host '{HostName}' is outside 1-3600.", nameof(ConnectTimeoutSeconds));
        }

        foreach (var (name, value) in ExtraOptions)
        {
            ValidateOption(name, value);
        }
    }

    /// <summary>Splits an ssh -J destination, [user@]host[:port] (an IPv6 address in brackets), into its parts.</summary>
    /// <exception cref="ArgumentException">The port is not a number from 1 to 65535, or the host is empty.</exception>
    public static (string? User, string Host, int Port) ParseJumpHost(string jumpHost)
    {
        ArgumentNullException.ThrowIfNull(jumpHost);
        if (jumpHost.Contains(','))
        {
            throw new ArgumentException($"JumpHost '{jumpHost}' names several jump hosts; the SshNet transport goes through one (the OpenSsh transport takes a chain).", nameof(jumpHost));
        }

        var at = jumpHost.LastIndexOf('@');
        var user = at > 0 ? jumpHost[..at] : null;
        var rest = jumpHost[(at + 1)..];
        string host;
        string? portText = null;
        if (rest.StartsWith('['))
        {
            var close = rest.IndexOf(']');
            host = close > 1 ? rest[1..close] : string.Empty;
            if (close > 0 && close + 1 < rest.Length)
            {
                portText = rest[(close + 1)..].StartsWith(':') ? rest[(close + 2)..] : "x";
            }
        }
        else
        {
            var colon = rest.IndexOf(':');
            host = colon < 0 ? rest : rest[..colon];
            portText = colon < 0 ? null : rest[(colon + 1)..];
        }

        var port = 22;
        if (host.Length == 0 || (portText is not null && (!int.TryParse(portText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out port) || port is < 1 or > 65535)))
        {
            throw new ArgumentException($"JumpHost '{jumpHost}' is not of the form [user@]host[:port].", nameof(jumpHost));
        }

        return (user, host, port);
    }

    private static void ValidateOption(string name, string value)
    {
        if (name.Length == 0 || !name.All(char.IsAsciiLetterOrDigit))
        {
            throw new ArgumentException($"SSH option name '{name}' is not a valid ssh_config keyword.", nameof(name));
        }

        if (ManagedOptions.TryGetValue(name, out var why))
        {
            throw new ArgumentException($"SSH option '{name}' cannot be set with -SshOption: {why}.", nameof(name));
        }

        if (value.Any(char.IsControl))
        {
            throw new ArgumentException($"The value of SSH option '{name}' contains a control character.", nameof(value));
        }
    }

    private static void ValidateHostName(string host, string parameter)
    {
        if (string.IsNullOrWhiteSpace(host))
        {
            throw new ArgumentException($"{parameter} is empty.", parameter);
        }

        if (host.StartsWith('-') || host.Any(c => char.IsControl(c) || char.IsWhiteSpace(c)))
        {
            throw new ArgumentException($"{parameter} '{host}' is not a valid host name (it starts with '-' or contains white space or control characters).", parameter);
        }
    }
}
