using System.Diagnostics;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.TestLab;

/// <summary>One lab host: a real sshd on its own loopback address and a dynamic port.</summary>
public sealed class LabHost
{
    internal LabHost(string name, string address, int port, string hostPublicKey, SshLab lab)
    {
        Name = name;
        Address = address;
        Port = port;
        HostPublicKey = hostPublicKey;
        Lab = lab;
    }

    public string Name { get; }

    public string Address { get; }

    public int Port { get; }

    public string HostPublicKey { get; }

    public SshLab Lab { get; }

    /// <summary>This host's line for a known_hosts file.</summary>
    public string KnownHostsLine => $"[{Address}]:{Port} {HostPublicKey}";

    /// <summary>Writes a known_hosts file that trusts only this host, in the lab directory; returns its path.</summary>
    public string WriteKnownHosts()
    {
        var path = Path.Combine(Lab.Root, $"known_hosts_{Name}_{Port}");
        File.WriteAllText(path, KnownHostsLine + "\n");
        return path;
    }

    internal Process? Daemon { get; set; }

    /// <summary>Connection options that trust this lab host (its key is in the lab's known_hosts).</summary>
    public SshConnectionOptions Options(string? knownHostsFile = null, bool acceptNew = false, bool multiplex = true, int connectTimeoutSeconds = 10,
        SessionTransport transport = SessionTransport.OpenSsh, string? keyFilePath = null, string? jumpHost = null) => new()
    {
        Transport = transport,
        HostName = Address,
        Port = Port,
        UserName = Lab.UserName,
        KeyFilePath = keyFilePath ?? Lab.ClientKeyPath,
        JumpHost = jumpHost,
        KnownHostsPath = knownHostsFile ?? Lab.KnownHostsPath,
        AcceptNewHostKey = acceptNew,
        Multiplex = multiplex,
        ConnectTimeoutSeconds = connectTimeoutSeconds,
        DisplayName = Name,
        ExtraOptions = transport == SessionTransport.OpenSsh
            ? new[] { new KeyValuePair<string, string>("LogLevel", "ERROR") }
            : Array.Empty<KeyValuePair<string, string>>(),
    };

    /// <summary>A fresh OpenSSH host object (own ControlMaster under the lab's control directory).</summary>
    public SshHost CreateHost(string? knownHostsFile = null, bool acceptNew = false, bool multiplex = true, int connectTimeoutSeconds = 10) =>
        new(Options(knownHostsFile, acceptNew, multiplex, connectTimeoutSeconds), Lab.ControlDirectory);

    /// <summary>A fresh host object for either transport.</summary>
    public ISshHost CreateHost(SessionTransport transport, string? knownHostsFile = null, bool acceptNew = false, int connectTimeoutSeconds = 10) =>
        Lab.CreateHost(Options(knownHostsFile, acceptNew, connectTimeoutSeconds: connectTimeoutSeconds, transport: transport));

    public override string ToString() => $"{Name} ({Address}:{Port})";
}

/// <summary>
/// Real sshd instances on 127.0.0.2, 127.0.0.3 and 127.0.0.4 with generated host and client keys and a known_hosts
/// file. Everything lives in one temporary directory; <see cref="DisposeAsync"/> stops the daemons and removes it.
/// </summary>
public sealed class SshLab : IAsyncDisposable
{
    private readonly List<LabHost> hosts = new();

    private SshLab(string root)
    {
        Root = root;
        ControlDirectory = Path.Combine(root, "ctl");
        ClientKeyPath = Path.Combine(root, "client_key");
        KnownHostsPath = Path.Combine(root, "known_hosts");
        UserName = Environment.UserName;
    }

    public string Root { get; }

    public string ControlDirectory { get; }

    public string ClientKeyPath { get; }

    public string KnownHostsPath { get; }

    public string UserName { get; }

    /// <summary>
    /// HOME of the lab hosts' sessions: an empty directory, so the build machine's own shell start-up files (Debian's
    /// bash sources ~/.bashrc for every command sshd runs; here it runs `pyenv init`, about 0.1 s) are not part of every
    /// measured command. Commands still start in the user's real home directory (sshd changes to it).
    /// </summary>
    public string SessionHome => Path.Combine(Root, "home");

    public IReadOnlyList<LabHost> Hosts => hosts;

    public static async Task<SshLab> StartAsync(params string[] addresses)
    {
        Tool.Require("sshd", "ssh", "ssh-keygen", "setsid", "timeout");
        if (addresses.Length == 0)
        {
            addresses = new[] { "127.0.0.2", "127.0.0.3", "127.0.0.4" };
        }

        // Short root path: ControlMaster socket paths must fit in sun_path (108 bytes).
        var root = Path.Combine("/tmp", $"rtlab-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}");
        Directory.CreateDirectory(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var lab = new SshLab(root);
        try
        {
            Directory.CreateDirectory(lab.ControlDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            Tool.Run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "replicatools-lab-client", "-f", lab.ClientKeyPath);
            File.Copy(lab.ClientKeyPath + ".pub", Path.Combine(root, "authorized_keys"));
            Directory.CreateDirectory(lab.SessionHome);
            if (Environment.UserName == "root")
            {
                Directory.CreateDirectory("/run/sshd");
            }

            var knownHosts = new List<string>();
            for (var i = 0; i < addresses.Length; i++)
            {
                var host = await lab.StartDaemonAsync($"host{i + 2}", addresses[i]);
                lab.hosts.Add(host);
                knownHosts.Add(host.KnownHostsLine);
            }

            File.WriteAllLines(lab.KnownHostsPath, knownHosts);
            return lab;
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
    }

    public LabHost this[int index] => hosts[index];

    /// <summary>A host object for <paramref name="options"/> on its transport (OpenSSH masters under the lab's control directory).</summary>
    public ISshHost CreateHost(SshConnectionOptions options) =>
        options.Transport == SessionTransport.SshNet ? new SshNetHost(options) : new SshHost(options, ControlDirectory);

    /// <summary>Generates a new host key pair in the lab directory; returns (private key path, public key line).</summary>
    public (string PrivateKey, string PublicKey) NewHostKey(string name)
    {
        var path = Path.Combine(Root, name);
        Tool.Run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path);
        var parts = File.ReadAllText(path + ".pub").Trim().Split(' ');
        return (path, $"{parts[0]} {parts[1]}");
    }

    /// <summary>Starts an extra sshd (e.g. one whose key nobody knows); it is stopped with the lab.</summary>
    /// <param name="environment">More NAME=VALUE pairs for the sessions' environment (sshd SetEnv), e.g. a PATH without some tool.</param>
    /// <param name="maxSessions">sshd's MaxSessions: how many session channels one connection may have open.</param>
    /// <param name="extraOptions">More sshd -o options (they come first, so they win over the lab's).</param>
    /// <param name="wrap">A program and arguments sshd runs under, e.g. unshare with a mount namespace.</param>
    public async Task<LabHost> StartDaemonAsync(string name, string address, string? hostKeyName = null, string? environment = null, int maxSessions = 64,
        IEnumerable<string>? extraOptions = null, IReadOnlyList<string>? wrap = null)
    {
        var (hostKey, publicKey) = NewHostKey(hostKeyName ?? $"hostkey_{name}_{Guid.NewGuid().ToString("N")[..4]}");
        for (var attempt = 1; ; attempt++)
        {
            var port = Ports.Free(address);
            var startInfo = new ProcessStartInfo(wrap is null ? "/usr/sbin/sshd" : wrap[0])
            {
                UseShellExecute = false,
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            };
            foreach (var argument in (wrap is null ? Array.Empty<string>() : wrap.Skip(1).Append("/usr/sbin/sshd")).Append("-D").Append("-e"))
            {
                startInfo.ArgumentList.Add(argument);
            }

            foreach (var option in extraOptions ?? Array.Empty<string>())
            {
                startInfo.ArgumentList.Add("-o");
                startInfo.ArgumentList.Add(option);
            }

            foreach (var argument in new[]
                     {
                         "-f", "/dev/null",
                         "-o", $"ListenAddress={address}:{port}",
                         "-o", $"HostKey={hostKey}",
                         "-o", $"PidFile={Path.Combine(Root, name + ".pid")}",
                         "-o", "PermitRootLogin=prohibit-password",
                         "-o", $"AuthorizedKeysFile={Path.Combine(Root, "authorized_keys")}",
                         "-o", "StrictModes=no",
                         "-o", "PasswordAuthentication=no",
                         "-o", "KbdInteractiveAuthentication=no",
                         "-o", $"MaxSessions={maxSessions}",
                         "-o", "MaxStartups=64:30:128",
                         "-o", "LogLevel=ERROR",
                         "-o", $"SetEnv=HOME={SessionHome}{(environment is null ? string.Empty : " " + environment)}",
                     })
            {
                startInfo.ArgumentList.Add(argument);
            }

            var daemon = Process.Start(startInfo)!;
            daemon.BeginErrorReadLine();
            daemon.BeginOutputReadLine();
            if (await Ports.WaitListeningAsync(address, port, TimeSpan.FromSeconds(10), () => !daemon.HasExited))
            {
                var host = new LabHost(name, address, port, publicKey, this) { Daemon = daemon };
                extraDaemons.Add(daemon);
                return host;
            }

            Kill(daemon);
            if (attempt == 3)
            {
                throw new InvalidOperationException($"sshd did not start on {address} after 3 attempts (exit code {(daemon.HasExited ? daemon.ExitCode : -1)}).");
            }
        }
    }

    private readonly List<Process> extraDaemons = new();

    /// <summary>Adds an extra daemon's host key to the lab's known_hosts, so sessions to it connect without -AcceptNewHostKey.</summary>
    public void Trust(LabHost host) => File.AppendAllLines(KnownHostsPath, new[] { host.KnownHostsLine });

    /// <summary>
    /// Starts an sshd that accepts the lab user's <paramref name="password"/> (and no keys): by password authentication,
    /// or with <paramref name="keyboardInteractive"/> only by keyboard-interactive authentication (through PAM). The
    /// daemon runs in a mount namespace of its own where a copy of /etc/shadow with that password and a minimal PAM
    /// service are bind-mounted, so this machine's accounts are not touched. Needs root.
    /// </summary>
    public async Task<LabHost> StartPasswordDaemonAsync(string name, string address, string password, bool keyboardInteractive)
    {
        Tool.Require("unshare", "openssl");
        var hash = Tool.RunWithInput("openssl", password + "\n", "passwd", "-6", "-stdin").Trim();
        var shadow = Path.Combine(Root, $"shadow_{name}");
        var lines = File.ReadAllLines("/etc/shadow").Select(line =>
        {
            var fields = line.Split(':');
            return fields[0] == UserName ? string.Join(':', fields.Take(1).Append(hash).Concat(fields.Skip(2))) : line;
        });
        File.WriteAllLines(shadow, lines);
        File.SetUnixFileMode(shadow, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var pam = Path.Combine(Root, $"pam_{name}");
        File.WriteAllText(pam, "auth required pam_unix.so\naccount required pam_unix.so\nsession required pam_permit.so\n");
        var wrap = new[]
        {
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            "mount --bind \"$0\" /etc/shadow && mount --bind \"$1\" /etc/pam.d/sshd && shift && exec \"$@\"", shadow, pam,
        };
        var options = new[]
        {
            "PermitRootLogin=yes",
            $"PasswordAuthentication={(keyboardInteractive ? "no" : "yes")}",
            $"KbdInteractiveAuthentication={(keyboardInteractive ? "yes" : "no")}",
            $"UsePAM={(keyboardInteractive ? "yes" : "no")}",
            "PubkeyAuthentication=no",
        };
        return await StartDaemonAsync(name, address, extraOptions: options, wrap: wrap);
    }

    /// <summary>Stops one lab host's sshd (to test an unreachable host).</summary>
    public static void Stop(LabHost host)
    {
        if (host.Daemon is { } daemon)
        {
            Kill(daemon);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var daemon in extraDaemons)
        {
            Kill(daemon);
        }

        // Shared connections die with their sshd; remove their sockets and every lab file.
        await Task.Yield();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Kills a daemon this lab started (and its children) and waits for it.</summary>
    internal static void Kill(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
        }
    }
}
