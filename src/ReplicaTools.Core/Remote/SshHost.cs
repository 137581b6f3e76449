using System.Globalization;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// A host reached through the OpenSSH client. One ControlMaster per host object carries every command
/// (ControlPersist keeps it for a while), with BatchMode and strict host key checking.
/// </summary>
/// <remarks>
/// Each command runs on the host as
/// <c>exec setsid -w sh -c 'printf "\036rt-pid:%s\n" "$$" &gt;&amp;2; exec "$@"' rt timeout -k 5 T ARGV...</c>:
/// it gets its own process group whose id is reported on stderr before the command starts, so cancelling can
/// kill the whole group on the host; the <c>timeout</c> guard ends it even if the connection is lost.
/// </remarks>
public sealed class SshHost : IReplicaHost
{
    private const string WrapperScript = "printf '\\036rt-pid:%s\\n' \"$$\" >&2; exec \"$@\"";
    private const string KillScript =
        "p=$1; kill -TERM \"-$p\" 2>/dev/null || exit 0; i=0; " +
        "while [ $i -lt 25 ]; do kill -0 \"-$p\" 2>/dev/null || exit 0; sleep 0.2; i=$((i+1)); done; " +
        "kill -KILL \"-$p\" 2>/dev/null; exit 0";

    private static readonly TimeSpan RemoteTimeoutMargin = TimeSpan.FromSeconds(5);
    private readonly SemaphoreSlim masterLock = new(1, 1);

    public SshHost(SshConnectionOptions options, string? controlDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options;
        if (options.Multiplex)
        {
            var directory = controlDirectory ?? ControlDirectory.Get();
            ControlPath = Path.Combine(directory, Guid.NewGuid().ToString("N")[..12]);
        }
    }

    public SshConnectionOptions Options { get; }

    public string Name => Options.EffectiveName;

    public bool IsLocal => false;

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
        var remoteTimeout = command.Timeout == Timeout.InfiniteTimeSpan ? (TimeSpan?)null : command.Timeout + RemoteTimeoutMargin;
        return await CommandRunner.RunAsync(Name, command, () => StartCoreAsync(command, remoteTimeout, cancellationToken), cancellationToken).ConfigureAwait(false);
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

    /// <summary>The line the remote login shell runs: the wrapper plus the quoted argument list.</summary>
    public static string BuildRemoteCommandLine(IReadOnlyList<string> arguments, TimeSpan? remoteTimeout)
    {
        var words = new List<string> { "exec", "setsid", "-w", "sh", "-c", WrapperScript, "rt" };
        if (remoteTimeout is { } timeout)
        {
            words.AddRange(new[] { "timeout", "-k", "5", Math.Ceiling(timeout.TotalSeconds).ToString(CultureInfo.InvariantCulture) });
        }

        words.AddRange(arguments);
        var line = PosixShell.Join(words);
        var bytes = System.Text.Encoding.UTF8.GetByteCount(line);
        if (bytes >= PosixShell.MaxCommandLineBytes)
        {
            throw new ArgumentException($"The command line is {bytes} bytes after quoting; a remote command line is limited to {PosixShell.MaxCommandLineBytes} bytes. Pass large data on standard input instead.", nameof(arguments));
        }

        return line;
    }

    public override string ToString() => Name;

    private async Task<IHostProcess> StartCoreAsync(CommandSpec command, TimeSpan? remoteTimeout, CancellationToken cancellationToken)
    {
        var sshArguments = BuildSshArguments(command, remoteTimeout);
        if (ControlPath is not null && !IsMasterRunning)
        {
            await ConnectAsync(cancellationToken).ConfigureAwait(false);
        }

        return SpawnedProcess.Start(Name, command.Arguments, Options.SshExecutable, sshArguments, scanForPidMarker: true,
            killRemote: KillRemoteGroupAsync,
            interpretExit: (code, stderr, started) => code == 255 && !started ? throw ClassifyTransportFailure(stderr) : code);
    }

    private async Task KillRemoteGroupAsync(int processGroup)
    {
        var kill = new CommandSpec("sh", "-c", KillScript, "rt", processGroup.ToString(CultureInfo.InvariantCulture))
        {
            Timeout = TimeSpan.FromSeconds(15),
            ThrowOnFailure = false,
        };
        await RunAsync(kill, CancellationToken.None).ConfigureAwait(false);
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

        if (Options.KeyFilePath is not null)
        {
            arguments.AddRange(new[] { "-i", Options.KeyFilePath, "-o", "IdentitiesOnly=yes" });
        }

        if (Options.JumpHost is not null)
        {
            arguments.AddRange(new[] { "-J", Options.JumpHost });
        }

        if (ControlPath is not null)
        {
            arguments.AddRange(new[] { "-o", $"ControlPath={ControlPath}" });
        }

        return arguments;
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
            return new HostKeyVerificationException(Name, keyChanged: true, detail);
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
