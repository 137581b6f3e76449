using System.Globalization;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// A host reached through the OpenSSH client. One ControlMaster per host object carries every command
/// (ControlPersist keeps it for a while), with BatchMode and strict host key checking.
/// </summary>
/// <remarks>
/// Each command runs inside the host-side guard of <see cref="RemoteProcessGroup"/>, so cancelling kills its whole
/// process group on the host. At most <see cref="SshConnectionOptions.MaxSessions"/> commands run at once; more wait
/// for a free channel (ssh would otherwise bypass the master with a connection of its own).
/// </remarks>
public sealed class SshHost : ISshHost
{
    private readonly SemaphoreSlim masterLock = new(1, 1);
    private readonly SemaphoreSlim channels;

    public SshHost(SshConnectionOptions options, string? controlDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (options.Transport != SessionTransport.OpenSsh)
        {
            throw new ArgumentException($"Host '{options.EffectiveName}' is set up for the {options.Transport} transport, not OpenSsh.", nameof(options));
        }

        Options = options;
        channels = new SemaphoreSlim(options.MaxSessions, options.MaxSessions);
        if (options.Multiplex)
        {
            var directory = controlDirectory ?? ControlDirectory.Get();
            ControlPath = Path.Combine(directory, Guid.NewGuid().ToString("N")[..12]);
        }
    }

    public SshConnectionOptions Options { get; }

    public string Name => Options.EffectiveName;

    public bool IsLocal => false;

    public SessionTransport Transport => SessionTransport.OpenSsh;

    public bool IsConnected => ControlPath is null || IsMasterRunning;

    /// <summary>The known_hosts files ssh checks: -KnownHostsPath (or -SshOption UserKnownHostsFile, or ~/.ssh/known_hosts), then the global one.</summary>
    public IReadOnlyList<string> KnownHostsFiles => new[]
    {
        Options.KnownHostsPath
            ?? Options.ExtraOptions.Where(o => string.Equals(o.Key, "UserKnownHostsFile", StringComparison.OrdinalIgnoreCase)).Select(o => ExpandHome(o.Value.Split(' ')[0])).FirstOrDefault()
            ?? KnownHosts.DefaultUserPath,
        KnownHosts.GlobalPath,
    };

    private static string ExpandHome(string path) =>
        path.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), path[2..]) : path;

    /// <summary>The ControlMaster socket, or null when multiplexing is off.</summary>
    public string? ControlPath { get; }

    /// <summary>True when the shared connection's socket exists and its master answers (a killed master leaves the file behind).</summary>
    public bool IsMasterRunning => ControlPath is not null && File.Exists(ControlPath) && MasterAnswers(ControlPath);

    /// <summary>Opens the shared connection now (instead of on the first command), so connection errors surface here.</summary>
    public async Task ConnectAsync(CancellationToken cancellationToken = default)
    {
        if (ControlPath is null)
        {
            await RunAsync(new CommandSpec("true") { Timeout = TimeSpan.FromSeconds(Options.ConnectTimeoutSeconds + 30) }, cancellationToken).ConfigureAwait(false);
            return;
        }

        await masterLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (IsMasterRunning)
            {
                return;
            }

            if (File.Exists(ControlPath))
            {
                // A master that died (killed, host rebooted) leaves its socket; ssh -M would refuse to replace it.
                OperationContext.Reporter.Verbose($"[{Name}] the shared SSH connection died; opening a new one");
                TryDelete(ControlPath);
            }

            OperationContext.Reporter.Verbose($"[{Name}] opening shared SSH connection ({ControlPath})");
            var arguments = BaseArguments();
            arguments.AddRange(new[] { "-M", "-N", "-f", "-o", "ControlMaster=yes", "-o", $"ControlPersist={Options.ControlPersistSeconds}", "--", Options.HostName });
            await using var master = SpawnedProcess.Start(Name, new[] { "ssh", "-M", Options.HostName }, Options.SshExecutable, arguments,
                interpretExit: (code, stderr, _) => code == 0 ? 0 : throw ClassifyTransportFailure(stderr));
            master.StandardInput.Close();
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            limit.CancelAfter(TimeSpan.FromSeconds(Options.ConnectTimeoutSeconds + 30));
            try
            {
                await master.WaitForExitAsync(limit.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                await master.KillAsync().ConfigureAwait(false);
                throw new HostUnreachableException(Name, $"the SSH connection was not established within {Options.ConnectTimeoutSeconds + 30} s.");
            }
        }
        finally
        {
            masterLock.Release();
        }
    }

    /// <summary>Closes the shared connection (ssh -O exit).</summary>
    public async Task DisconnectAsync()
    {
        if (!IsMasterRunning)
        {
            return;
        }

        var arguments = new List<string> { "-o", $"ControlPath={ControlPath}", "-O", "exit", "--", Options.HostName };
        await using var exit = SpawnedProcess.Start(Name, new[] { "ssh", "-O", "exit" }, Options.SshExecutable, arguments);
        exit.StandardInput.Close();
        try
        {
            await exit.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            await exit.KillAsync().ConfigureAwait(false);
        }

        TryDelete(ControlPath!);
    }

    public async Task<CommandResult> RunAsync(CommandSpec command, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        return await CommandRunner.RunAsync(Name, command, () => StartCoreAsync(command, RemoteProcessGroup.RemoteTimeout(command), cancellationToken), cancellationToken).ConfigureAwait(false);
    }

    public Task<IHostProcess> StartAsync(CommandSpec command, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        return StartCoreAsync(command, null, cancellationToken);
    }

    /// <summary>The ssh arguments for running <paramref name="command"/> (for tests and -WhatIf detail).</summary>
    public IReadOnlyList<string> BuildSshArguments(CommandSpec command, TimeSpan? remoteTimeout)
    {
        var arguments = BaseArguments();
        arguments.AddRange(new[] { "-T", "-o", "ControlMaster=no", "--", Options.HostName, BuildRemoteCommandLine(command.Arguments, remoteTimeout) });
        return arguments;
    }

    /// <summary>The line the remote login shell runs: the wrapper plus the quoted argument list (see <see cref="RemoteProcessGroup"/>).</summary>
    public static string BuildRemoteCommandLine(IReadOnlyList<string> arguments, TimeSpan? remoteTimeout) =>
        RemoteProcessGroup.BuildCommandLine(arguments, remoteTimeout);

    public override string ToString() => Name;

    private async Task<IHostProcess> StartCoreAsync(CommandSpec command, TimeSpan? remoteTimeout, CancellationToken cancellationToken, bool useChannelSlot = true)
    {
        var sshArguments = BuildSshArguments(command, remoteTimeout);
        if (ControlPath is not null && !IsMasterRunning)
        {
            await ConnectAsync(cancellationToken).ConfigureAwait(false);
        }

        var slot = useChannelSlot ? await ChannelSlot.TakeAsync(channels, cancellationToken).ConfigureAwait(false) : null;
        try
        {
            var process = SpawnedProcess.Start(Name, command.Arguments, Options.SshExecutable, sshArguments, scanForPidMarker: true,
                killRemote: KillRemoteGroupAsync,
                interpretExit: (code, stderr, started) => code == 255 && !started ? throw ClassifyTransportFailure(stderr) : code);
            return slot is null ? process : new ChannelSlotProcess(process, slot);
        }
        catch
        {
            slot?.Dispose();
            throw;
        }
    }

    /// <summary>Kills a command's process group on the host. Takes no channel slot: the kill must not wait behind the commands it ends.</summary>
    private async Task KillRemoteGroupAsync(int processGroup)
    {
        var kill = RemoteProcessGroup.KillCommand(processGroup);
        await CommandRunner.RunAsync(Name, kill, () => StartCoreAsync(kill, RemoteProcessGroup.RemoteTimeout(kill), CancellationToken.None, useChannelSlot: false), CancellationToken.None).ConfigureAwait(false);
    }

    private List<string> BaseArguments()
    {
        var arguments = new List<string>();

        // ssh uses the first value it sees for an option: the caller's extra options go first, ours cannot collide (see ParseOption).
        foreach (var (name, value) in Options.ExtraOptions)
        {
            arguments.Add("-o");
            arguments.Add($"{name}={value}");
        }

        arguments.AddRange(new[]
        {
            "-o", "BatchMode=yes",
            "-o", Options.AcceptNewHostKey ? "StrictHostKeyChecking=accept-new" : "StrictHostKeyChecking=yes",
            "-o", $"ConnectTimeout={Options.ConnectTimeoutSeconds}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-p", Options.Port.ToString(CultureInfo.InvariantCulture),
        });
        if (Options.UserName is not null)
        {
            arguments.AddRange(new[] { "-l", Options.UserName });
        }

        if (Options.KnownHostsPath is not null)
        {
            arguments.AddRange(new[] { "-o", $"UserKnownHostsFile={Options.KnownHostsPath}" });
        }

        if (Options.KeyFilePath is not null)
        {
            arguments.AddRange(new[] { "-i", Options.KeyFilePath, "-o", "IdentitiesOnly=yes" });
        }

        if (Options.JumpHost is not null)
        {
            arguments.AddRange(new[] { "-o", "ProxyCommand=" + BuildJumpProxyCommand() });
        }

        if (ControlPath is not null)
        {
            arguments.AddRange(new[] { "-o", $"ControlPath={ControlPath}" });
        }

        return arguments;
    }

    /// <summary>
    /// What ssh -J would run, but with this session's checks: <c>ssh OPTIONS -W [%h]:%p -- JUMPHOST</c>, where the
    /// jump connection gets the same BatchMode, host key checking, known_hosts, key and extra options as the target
    /// (ssh -J passes none of them on). ssh runs the line with "exec" in the user's shell, so every word is quoted by
    /// PosixShell.Quote; ssh first expands %-tokens, so literal '%' is doubled.
    /// </summary>
    internal string BuildJumpProxyCommand()
    {
        // ssh -J a,b: the last hop is reached through the earlier ones, which the jump ssh gets as its own -J.
        var hops = Options.JumpHost!.Split(',');
        var (user, host, port) = SshConnectionOptions.ParseJumpHost(hops[^1]);
        var words = new List<string> { Options.SshExecutable };
        if (hops.Length > 1)
        {
            words.AddRange(new[] { "-J", string.Join(',', hops[..^1]) });
        }

        foreach (var (name, value) in Options.ExtraOptions)
        {
            words.AddRange(new[] { "-o", $"{name}={value}" });
        }

        words.AddRange(new[]
        {
            "-o", "BatchMode=yes",
            "-o", Options.AcceptNewHostKey ? "StrictHostKeyChecking=accept-new" : "StrictHostKeyChecking=yes",
            "-o", $"ConnectTimeout={Options.ConnectTimeoutSeconds}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "ControlMaster=no",
            "-o", "ControlPath=none",
            "-p", port.ToString(CultureInfo.InvariantCulture),
        });
        if (user is not null)
        {
            words.AddRange(new[] { "-l", user });
        }

        if (Options.KnownHostsPath is not null)
        {
            words.AddRange(new[] { "-o", $"UserKnownHostsFile={Options.KnownHostsPath}" });
        }

        if (Options.KeyFilePath is not null)
        {
            words.AddRange(new[] { "-i", Options.KeyFilePath, "-o", "IdentitiesOnly=yes" });
        }

        var quoted = words.Select(w => PosixShell.Quote(w).Replace("%", "%%", StringComparison.Ordinal));
        return string.Join(' ', quoted) + " -W '[%h]:%p' -- " + PosixShell.Quote(host).Replace("%", "%%", StringComparison.Ordinal);
    }

    /// <summary>Turns what ssh printed when it could not run a command into a specific error.</summary>
    internal Exception ClassifyTransportFailure(string stderr)
    {
        var detail = string.Join(' ', stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(line => !line.StartsWith("@@@", StringComparison.Ordinal) && !line.StartsWith("Warning: Permanently added", StringComparison.Ordinal)));
        if (detail.Length > 1500)
        {
            detail = detail[..1500] + "...";
        }

        if (stderr.Contains("REMOTE HOST IDENTIFICATION HAS CHANGED", StringComparison.Ordinal))
        {
            // ssh prints only the new key's fingerprint; name the recorded one too, as the SshNet transport does.
            var recorded = KnownHosts.EntriesFor(KnownHostsFiles, Options.HostName, Options.Port);
            var records = recorded.Count == 0 ? string.Empty : $" known_hosts records {string.Join(", ", recorded.Select(KnownHosts.Describe))}.";
            return new HostKeyVerificationException(Name, keyChanged: true, detail + records);
        }

        if (stderr.Contains("Host key verification failed", StringComparison.Ordinal) || stderr.Contains("host key is known", StringComparison.Ordinal))
        {
            return new HostKeyVerificationException(Name, keyChanged: false, detail);
        }

        if (stderr.Contains("Permission denied", StringComparison.Ordinal) || stderr.Contains("Too many authentication failures", StringComparison.Ordinal))
        {
            return new SshAuthenticationException(Name, detail);
        }

        string[] unreachable =
        {
            "Connection refused", "Connection timed out", "timed out", "No route to host", "Could not resolve hostname",
            "Network is unreachable", "Name or service not known", "Connection closed by", "Connection reset", "kex_exchange_identification",
        };
        if (unreachable.Any(marker => stderr.Contains(marker, StringComparison.OrdinalIgnoreCase)))
        {
            return new HostUnreachableException(Name, detail);
        }

        return new SshConnectionException(Name, detail.Length > 0 ? detail : "ssh exited with code 255 and printed nothing.");
    }

    private static bool MasterAnswers(string controlPath)
    {
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        try
        {
            socket.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(controlPath));
            return true;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return false;
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Where ControlMaster sockets live: a private (0700) directory per user.</summary>
internal static class ControlDirectory
{
    public static string Get()
    {
        var configured = Environment.GetEnvironmentVariable("REPLICATOOLS_CONTROL_DIR");
        var runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        var directory = !string.IsNullOrEmpty(configured) ? configured
            : !string.IsNullOrEmpty(runtime) && Directory.Exists(runtime) ? Path.Combine(runtime, "replicatools")
            : Path.Combine(Path.GetTempPath(), "replicatools-" + Environment.UserName);

        var info = new DirectoryInfo(directory);
        if (info.Exists && info.LinkTarget is not null)
        {
            throw new InvalidOperationException($"The SSH control directory '{directory}' is a symbolic link; refusing to use it. Remove it or set REPLICATOOLS_CONTROL_DIR.");
        }

        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(directory);
            return directory;
        }

        const UnixFileMode privateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        if (!info.Exists)
        {
            Directory.CreateDirectory(directory, privateMode);
        }
        else if (File.GetUnixFileMode(directory) != privateMode)
        {
            File.SetUnixFileMode(directory, privateMode);
        }

        return directory;
    }
}
