using System.Net.Sockets;
using System.Security;
using System.Text;
using Renci.SshNet;
using SshNetCommon = Renci.SshNet.Common;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// A host reached through SSH.NET (Renci.SshNet) in this process: one SSH connection per host object carries every
/// command as a channel, so a command costs a channel round trip, not a handshake, on every platform.
/// </summary>
/// <remarks>
/// Commands have the OpenSSH transport's semantics: the same command line (<see cref="RemoteProcessGroup"/>, every word
/// quoted by <see cref="PosixShell.Quote"/>), so a timeout or cancel kills the process group on the host over a second
/// channel (sshd ignores channel signals for root sessions); at most <see cref="SshConnectionOptions.MaxSessions"/>
/// commands at once, more wait; a connection found dead is replaced before the next command.
/// Host keys are checked against OpenSSH's known_hosts (<see cref="KnownHosts"/>): unknown keys are refused unless
/// <see cref="SshConnectionOptions.AcceptNewHostKey"/>, changed ones always. A jump host is a first SSH.NET connection
/// whose forwarded local port the second one connects through.
/// </remarks>
public sealed class SshNetHost : ISshHost
{
    private static readonly TimeSpan ChannelRefusedLimit = TimeSpan.FromSeconds(60);
    private readonly SemaphoreSlim connectLock = new(1, 1);
    private readonly SemaphoreSlim channels;
    private Connection? connection;

    public SshNetHost(SshConnectionOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (options.Transport != SessionTransport.SshNet)
        {
            throw new ArgumentException($"Host '{options.EffectiveName}' is set up for the {options.Transport} transport, not SshNet.", nameof(options));
        }

        Options = options;
        channels = new SemaphoreSlim(options.MaxSessions, options.MaxSessions);
    }

    public SshConnectionOptions Options { get; }

    public string Name => Options.EffectiveName;

    public bool IsLocal => false;

    public SessionTransport Transport => SessionTransport.SshNet;

    public bool IsConnected => connection?.IsConnected == true;

    /// <summary>The known_hosts files keys are checked against: the user's (or <see cref="SshConnectionOptions.KnownHostsPath"/>) first, where new keys go, then the global one.</summary>
    public IReadOnlyList<string> KnownHostsFiles => new[] { Options.KnownHostsPath ?? KnownHosts.DefaultUserPath, KnownHosts.GlobalPath };

    public async Task ConnectAsync(CancellationToken cancellationToken = default) =>
        await EnsureConnectedAsync(null, cancellationToken).ConfigureAwait(false);

    public async Task DisconnectAsync()
    {
        await connectLock.WaitAsync().ConfigureAwait(false);
        try
        {
            connection?.Dispose();
            connection = null;
        }
        finally
        {
            connectLock.Release();
        }
    }

    public Task<CommandResult> RunAsync(CommandSpec command, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        return CommandRunner.RunAsync(Name, command, () => StartCoreAsync(command, RemoteProcessGroup.RemoteTimeout(command), true, cancellationToken), cancellationToken);
    }

    public Task<IHostProcess> StartAsync(CommandSpec command, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        return StartCoreAsync(command, null, true, cancellationToken);
    }

    public override string ToString() => Name;

    private async Task<IHostProcess> StartCoreAsync(CommandSpec command, TimeSpan? remoteTimeout, bool useChannelSlot, CancellationToken cancellationToken)
    {
        var line = RemoteProcessGroup.BuildCommandLine(command.Arguments, remoteTimeout);
        var slot = useChannelSlot ? await ChannelSlot.TakeAsync(channels, cancellationToken).ConfigureAwait(false) : null;
        try
        {
            IHostProcess process = await OpenCommandAsync(command.Arguments, line, cancellationToken).ConfigureAwait(false);
            return slot is null ? process : new ChannelSlotProcess(process, slot);
        }
        catch
        {
            slot?.Dispose();
            throw;
        }
    }

    private async Task<SshNetProcess> OpenCommandAsync(IReadOnlyList<string> arguments, string line, CancellationToken cancellationToken)
    {
        Connection? broken = null;
        var refusedSince = DateTime.UtcNow;
        var delay = TimeSpan.FromMilliseconds(20);
        while (true)
        {
            var current = await EnsureConnectedAsync(broken, cancellationToken).ConfigureAwait(false);
            try
            {
                return await SshNetProcess.StartAsync(Name, arguments, current.Client, line, KillRemoteGroupAsync).ConfigureAwait(false);
            }
            catch (SshNetCommon.SshException ex) when (ex.Message.StartsWith("Failed to open a channel", StringComparison.Ordinal))
            {
                // sshd refused the channel (its MaxSessions is below ours, or a kill holds one): wait for one to free.
                if (DateTime.UtcNow - refusedSince > ChannelRefusedLimit)
                {
                    throw new SshConnectionException(Name, $"the host refused new session channels for {ChannelRefusedLimit.TotalSeconds:0} s; check sshd's MaxSessions on it (this session runs up to {Options.MaxSessions} commands at once).");
                }

                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 500));
            }
            catch (Exception ex) when (IsConnectionFailure(ex))
            {
                if (broken is not null)
                {
                    throw new SshConnectionException(Name, $"could not start a command over a new connection: {ex.Message}");
                }

                // The connection died since its last use (killed, host rebooted): the command never started, so replace it once.
                OperationContext.Reporter.Verbose($"[{Name}] the SSH.NET connection died ({ex.Message}); opening a new one");
                broken = current;
            }
        }
    }

    /// <summary>Kills a command's process group on the host. Takes no channel slot: the kill must not wait behind the commands it ends.</summary>
    private async Task KillRemoteGroupAsync(int processGroup)
    {
        var kill = RemoteProcessGroup.KillCommand(processGroup);
        await CommandRunner.RunAsync(Name, kill, () => StartCoreAsync(kill, RemoteProcessGroup.RemoteTimeout(kill), false, CancellationToken.None), CancellationToken.None).ConfigureAwait(false);
    }

    private static bool IsConnectionFailure(Exception ex) =>
        ex is SshNetCommon.SshConnectionException or ObjectDisposedException or SocketException or IOException
        || (ex is InvalidOperationException && ex.Message.Contains("not connected", StringComparison.OrdinalIgnoreCase));

    private async Task<Connection> EnsureConnectedAsync(Connection? broken, CancellationToken cancellationToken)
    {
        var current = connection;
        if (current is not null && current != broken && current.IsConnected)
        {
            return current;
        }

        await connectLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            current = connection;
            if (current is not null && current != broken && current.IsConnected)
            {
                return current;
            }

            if (current is not null)
            {
                OperationContext.Reporter.Verbose($"[{Name}] the SSH.NET connection is down; opening a new one");
                connection = null;
                current.Dispose();
            }

            connection = await OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            return connection;
        }
        finally
        {
            connectLock.Release();
        }
    }

    private async Task<Connection> OpenConnectionAsync(CancellationToken cancellationToken)
    {
        var user = Options.UserName ?? Environment.UserName;
        var owned = new List<IDisposable>();
        SshClient? jump = null;
        ForwardedPortLocal? forward = null;
        SshClient? client = null;
        try
        {
            var address = Options.HostName;
            var port = Options.Port;
            if (Options.JumpHost is not null)
            {
                var (jumpUser, jumpHost, jumpPort) = SshConnectionOptions.ParseJumpHost(Options.JumpHost);
                var jumpName = $"jump host '{KnownHosts.HostName(jumpHost, jumpPort)}' (for '{Name}')";
                OperationContext.Reporter.Verbose($"[{Name}] opening SSH.NET connection to jump host {jumpUser ?? user}@{KnownHosts.HostName(jumpHost, jumpPort)}");
                jump = await ConnectClientAsync(jumpName, jumpHost, jumpPort, jumpHost, jumpPort, jumpUser ?? user, owned, cancellationToken).ConfigureAwait(false);

                // A forwarded port on 127.0.0.1 carries the second connection through the first (ssh -J does the same with -W).
                forward = new ForwardedPortLocal("127.0.0.1", 0, Options.HostName, (uint)Options.Port);
                jump.AddForwardedPort(forward);
                forward.Start();
                address = "127.0.0.1";
                port = (int)forward.BoundPort;
            }

            OperationContext.Reporter.Verbose($"[{Name}] opening SSH.NET connection to {user}@{KnownHosts.HostName(Options.HostName, Options.Port)}");
            client = await ConnectClientAsync(Name, Options.HostName, Options.Port, address, port, user, owned, cancellationToken).ConfigureAwait(false);
            return new Connection(client, jump, forward, owned);
        }
        catch
        {
            client?.Dispose();
            forward?.Dispose();
            jump?.Dispose();
            owned.ForEach(o => o.Dispose());
            throw;
        }
    }

    /// <summary>Connects and authenticates one client; host keys are checked for <paramref name="keyHost"/>:<paramref name="keyPort"/> even when connecting through a forwarded port.</summary>
    private async Task<SshClient> ConnectClientAsync(string who, string keyHost, int keyPort, string address, int port, string user, List<IDisposable> owned, CancellationToken cancellationToken)
    {
        var password = Options.Password is null ? null : SecureUtf8(Options.Password);
        try
        {
            var info = new ConnectionInfo(address, port, user, AuthenticationMethods(who, user, password, owned))
            {
                Timeout = TimeSpan.FromSeconds(Options.ConnectTimeoutSeconds),

                // Our own slots limit commands to MaxSessions; the spare ones are for kills, which must not wait behind them.
                MaxSessions = Options.MaxSessions + 4,

                // A refused channel is retried by OpenCommandAsync after a pause, not at once.
                RetryAttempts = 1,
            };
            PreferKnownHostKeyTypes(info, keyHost, keyPort);
            var client = new SshClient(info) { KeepAliveInterval = TimeSpan.FromSeconds(15) };
            var verifier = new HostKeyVerifier(this, who, keyHost, keyPort);
            client.HostKeyReceived += verifier.OnHostKeyReceived;
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            limit.CancelAfter(TimeSpan.FromSeconds(Options.ConnectTimeoutSeconds));
            try
            {
                await client.ConnectAsync(limit.Token).ConfigureAwait(false);
                return client;
            }
            catch (Exception ex)
            {
                client.Dispose();
                throw Classify(ex, who, address, port, verifier.Rejection, cancellationToken);
            }
        }
        finally
        {
            if (password is not null)
            {
                // The authentication methods are done with it (a reconnect makes a new copy).
                Array.Clear(password);
            }
        }
    }

    private Exception Classify(Exception ex, string who, string address, int port, Exception? rejection, CancellationToken cancellationToken)
    {
        if (rejection is not null)
        {
            return rejection;
        }

        if (ex is OperationCanceledException && cancellationToken.IsCancellationRequested)
        {
            return ex;
        }

        var where = $"{address}:{port}";
        return ex switch
        {
            OperationCanceledException or SshNetCommon.SshOperationTimeoutException =>
                new HostUnreachableException(who, $"no SSH connection to {where} within the connect timeout of {Options.ConnectTimeoutSeconds} s."),
            SocketException socket => new HostUnreachableException(who, $"{socket.Message} ({where})."),
            SshNetCommon.SshAuthenticationException auth => new SshAuthenticationException(who,
                $"{auth.Message} (user '{Options.UserName ?? Environment.UserName}'; tried {(Options.KeyFilePath is null ? string.Empty : "key file " + Options.KeyFilePath + ", ")}{(Options.Password is null ? "no password" : "the -Credential password")})."),
            SshNetCommon.SshConnectionException connection => new HostUnreachableException(who, $"{connection.Message} ({where})."),
            ReplicaException or ArgumentException => ex,
            _ => new SshConnectionException(who, $"{ex.Message} ({where})."),
        };
    }

    private AuthenticationMethod[] AuthenticationMethods(string who, string user, byte[]? password, List<IDisposable> owned)
    {
        var methods = new List<AuthenticationMethod>();
        var keys = new List<IPrivateKeySource>();
        if (Options.KeyFilePath is not null)
        {
            keys.Add(LoadKey(Options.KeyFilePath, Options.KeyPassphrase, required: true, owned)!);
        }
        else if (password is null)
        {
            // ssh's default identities, as far as they load without a passphrase (SSH.NET has no ssh-agent).
            foreach (var name in new[] { "id_ed25519", "id_ecdsa", "id_rsa" })
            {
                var path = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".ssh", name);
                if (File.Exists(path) && LoadKey(path, null, required: false, owned) is { } key)
                {
                    keys.Add(key);
                }
            }
        }

        if (keys.Count > 0)
        {
            methods.Add(Own(new PrivateKeyAuthenticationMethod(user, keys.ToArray()), owned));
        }

        if (password is not null)
        {
            methods.Add(Own(new PasswordAuthenticationMethod(user, password), owned));
            var interactive = Own(new KeyboardInteractiveAuthenticationMethod(user), owned);
            var secret = Options.Password!;
            interactive.AuthenticationPrompt += (_, e) =>
            {
                foreach (var prompt in e.Prompts)
                {
                    // Answer what sshd asks without echo (the password prompt); echoed prompts are not secrets we hold.
                    prompt.Response = prompt.IsEchoed ? string.Empty : SecretText.Reveal(secret);
                }
            };
            methods.Add(interactive);
        }

        if (methods.Count == 0)
        {
            throw new SshAuthenticationException(who,
                "there is nothing to authenticate with: pass -KeyFilePath (with -KeyPassphrase if it is encrypted) or -Credential. The SshNet transport does not use ssh-agent; ~/.ssh/id_ed25519, id_ecdsa and id_rsa are used when they have no passphrase.");
        }

        return methods.ToArray();
    }

    private PrivateKeyFile? LoadKey(string path, SecureString? passphrase, bool required, List<IDisposable> owned)
    {
        try
        {
            return Own(new PrivateKeyFile(path, passphrase is null ? null : SecretText.Reveal(passphrase)), owned);
        }
        catch (SshNetCommon.SshPassPhraseNullOrEmptyException)
        {
            if (!required)
            {
                OperationContext.Reporter.Verbose($"[{Name}] skipping {path}: it is encrypted and no -KeyFilePath/-KeyPassphrase was given");
                return null;
            }

            throw new ArgumentException($"Key file '{path}' for host '{Name}' is encrypted: pass its passphrase with -KeyPassphrase.", "KeyPassphrase");
        }
        catch (Exception ex) when (ex is SshNetCommon.SshException or NotSupportedException or IOException or UnauthorizedAccessException or FormatException or System.Security.Cryptography.CryptographicException or ArgumentException)
        {
            if (!required)
            {
                OperationContext.Reporter.Verbose($"[{Name}] skipping {path}: {ex.Message}");
                return null;
            }

            var hint = passphrase is null ? string.Empty : " If it is encrypted, check -KeyPassphrase.";
            throw new ArgumentException($"Key file '{path}' for host '{Name}' could not be read: {ex.Message}.{hint} Keys in OpenSSH format (ed25519, ecdsa, rsa) and PEM are supported.", "KeyFilePath", ex);
        }
    }

    /// <summary>Negotiates first the key types known_hosts holds for the host, as ssh does, so a host with several keys presents a known one.</summary>
    private void PreferKnownHostKeyTypes(ConnectionInfo info, string host, int port)
    {
        var known = KnownHosts.KeyTypesFor(KnownHostsFiles, host, port);
        var algorithms = info.HostKeyAlgorithms
            .Where(a => !a.Key.Contains("-cert-", StringComparison.Ordinal))
            .OrderBy(a => known.Any(k => AlgorithmFor(k, a.Key)) ? 0 : 1)
            .ToList();
        info.HostKeyAlgorithms.Clear();
        foreach (var (name, factory) in algorithms)
        {
            info.HostKeyAlgorithms.Add(name, factory);
        }

        static bool AlgorithmFor(string keyType, string algorithm) =>
            keyType == algorithm || (keyType == "ssh-rsa" && algorithm is "rsa-sha2-512" or "rsa-sha2-256");
    }

    private static T Own<T>(T item, List<IDisposable> owned)
        where T : IDisposable
    {
        owned.Add(item);
        return item;
    }

    private static byte[] SecureUtf8(SecureString secret) => Encoding.UTF8.GetBytes(SecretText.Reveal(secret));

    /// <summary>Decides on each key a host presents; a refusal is kept so the connect failure can report it.</summary>
    private sealed class HostKeyVerifier(SshNetHost host, string who, string keyHost, int keyPort)
    {
        public Exception? Rejection { get; private set; }

        public void OnHostKeyReceived(object? sender, SshNetCommon.HostKeyEventArgs e)
        {
            var key = e.HostKey;
            var presented = $"{KnownHosts.Fingerprint(key)} ({KnownHosts.KeyLabel(KnownHosts.KeyType(key))})";
            var name = KnownHosts.HostName(keyHost, keyPort);
            var check = KnownHosts.Check(host.KnownHostsFiles, keyHost, keyPort, key);
            switch (check.Status)
            {
                case HostKeyStatus.Known:
                    e.CanTrust = true;
                    return;
                case HostKeyStatus.Unknown when host.Options.AcceptNewHostKey:
                    var file = host.KnownHostsFiles[0];
                    try
                    {
                        KnownHosts.Append(file, keyHost, keyPort, key);
                    }
                    catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                    {
                        // ssh goes on without recording the key; a key that cannot be remembered is not trusted here.
                        Rejection = new HostKeyVerificationException(who, keyChanged: false, $"It presented {presented}, which -AcceptNewHostKey would trust, but it could not be recorded in {file}: {ex.Message}");
                        break;
                    }

                    OperationContext.Reporter.Warning($"Permanently added {name} ({presented}) to the list of known hosts ({file}).");
                    e.CanTrust = true;
                    return;
                case HostKeyStatus.Unknown:
                    var others = check.Entries.Count == 0 ? string.Empty
                        : $" known_hosts holds other key types for it: {string.Join(", ", check.Entries.Select(KnownHosts.Describe))}.";
                    Rejection = new HostKeyVerificationException(who, keyChanged: false,
                        $"It presented {presented}; no {KnownHosts.KeyLabel(KnownHosts.KeyType(key))} key is recorded for {name} in {string.Join(" or ", host.KnownHostsFiles)}.{others}");
                    break;
                case HostKeyStatus.Changed:
                    Rejection = new HostKeyVerificationException(who, keyChanged: true,
                        $"{name} now presents {presented}, but known_hosts records {string.Join(", ", check.Entries.Select(KnownHosts.Describe))}.");
                    break;
                default:
                    Rejection = new HostKeyVerificationException(who, keyChanged: true,
                        $"{name} presented {presented}, which is marked @revoked in {string.Join(", ", check.Entries.Select(KnownHosts.Describe))}.");
                    break;
            }

            e.CanTrust = false;
        }
    }

    /// <summary>One live SSH connection, with the jump connection and forwarded port it runs through, if any.</summary>
    private sealed class Connection(SshClient client, SshClient? jump, ForwardedPortLocal? forward, List<IDisposable> owned) : IDisposable
    {
        public SshClient Client { get; } = client;

        public bool IsConnected => Client.IsConnected && (jump?.IsConnected ?? true);

        public void Dispose()
        {
            try
            {
                Client.Dispose();
                forward?.Dispose();
                jump?.Dispose();
            }
            catch (Exception ex) when (ex is SshNetCommon.SshException or SocketException or ObjectDisposedException or InvalidOperationException)
            {
                // Tearing down a dead connection; nothing to save.
            }

            owned.ForEach(o => o.Dispose());
        }
    }
}
