using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using ReplicaTools.Core;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Remote;

/// <summary>
/// The command semantics every session transport must have, run against both (OpenSSH ControlMaster and SSH.NET)
/// on the lab's real sshd hosts.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class TransportTests
{
    private readonly SshLab lab;
    private readonly string scratch;

    public TransportTests(LabFixture fixture)
    {
        lab = fixture.Lab;
        scratch = Path.Combine(lab.Root, "tt-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(scratch);
    }

    public static IEnumerable<object[]> Transports => Enum.GetValues<SessionTransport>().Select(t => new object[] { t });

    public static IEnumerable<object[]> CorpusOverTransports =>
        from transport in Enum.GetValues<SessionTransport>()
        from index in HostileStrings.Indexes
        select new object[] { transport, index[0] };

    [Theory]
    [MemberData(nameof(CorpusOverTransports))]
    public async Task HostileString_ArrivesAsOneByteIdenticalArgument_AndIsNeverExecuted(SessionTransport transport, int index)
    {
        var marker = Path.Combine(scratch, "pwned");
        var value = HostileStrings.All(marker)[index];
        await using var host = await ConnectAsync(transport);

        var result = await host.RunAsync(new CommandSpec("sh", "-c", PosixShellTests.EchoArgsScript, "sh", value));

        var lines = result.StandardOutput.Split('\n', 2);
        Assert.Equal("1", lines[0]);
        Assert.Equal(HostileStrings.Hex(value), lines[1]);
        Assert.False(File.Exists(marker), "a hostile argument was executed on the host");
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Result_CarriesHostArgvExitCodeAndBothOutputs(SessionTransport transport)
    {
        await using var host = await ConnectAsync(transport);

        var result = await host.RunAsync(new CommandSpec("sh", "-c", "printf out; printf err >&2; exit 3") { ThrowOnFailure = false });

        Assert.Equal("host2", result.HostName);
        Assert.Equal(new[] { "sh", "-c", "printf out; printf err >&2; exit 3" }, result.Arguments);
        Assert.Equal(3, result.ExitCode);
        Assert.Equal("out", result.StandardOutput);
        Assert.Equal("err", result.StandardError);
        Assert.Equal(255, (await host.RunAsync(new CommandSpec("sh", "-c", "exit 255") { ThrowOnFailure = false })).ExitCode);
        var failed = await Assert.ThrowsAsync<CommandFailedException>(() => host.RunAsync(new CommandSpec("sh", "-c", "echo 'disk full on /srv' >&2; exit 4")));
        Assert.Equal(4, failed.ExitCode);
        Assert.Contains("host2", failed.Message);
        Assert.Contains("disk full on /srv", failed.Message);
        var missing = await Assert.ThrowsAsync<ProgramNotFoundException>(() => host.RunAsync(new CommandSpec("no-such-tool-xyz", "--version")));
        Assert.Equal(ReplicaErrorCategory.NotInstalled, missing.Category);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task StandardInput_AndBinaryOutput_AreByteExact(SessionTransport transport)
    {
        await using var host = await ConnectAsync(transport);
        var input = RandomNumberGenerator.GetBytes(3 * 1024 * 1024 + 17);

        var digest = await host.RunAsync(new CommandSpec("sha256sum") { StandardInput = input });
        var large = await host.RunAsync(new CommandSpec("sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' a; printf end"));

        Assert.StartsWith(Convert.ToHexString(SHA256.HashData(input)).ToLowerInvariant(), digest.StandardOutput);
        Assert.Equal(new string('a', 1000000) + "end", large.StandardOutput);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task OutputLines_AreStreamedWhileTheCommandRuns(SessionTransport transport)
    {
        await using var host = await ConnectAsync(transport);
        var seen = new List<(string Line, TimeSpan At)>();
        var clock = Stopwatch.StartNew();

        await host.RunAsync(new CommandSpec("sh", "-c", "echo first; sleep 1; echo second").WithOutputLines(line =>
        {
            lock (seen)
            {
                seen.Add((line, clock.Elapsed));
            }
        }));

        Assert.Equal(new[] { "first", "second" }, seen.Select(s => s.Line));
        Assert.True(seen[1].At - seen[0].At > TimeSpan.FromSeconds(0.5), "the first line arrived only when the command ended");
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task StreamingProcess_CanBeWrittenAndReadWhileItRuns_AndKilledOnTheHost(SessionTransport transport)
    {
        await using var host = await ConnectAsync(transport);
        var pidFile = Path.Combine(scratch, "stream.pid");
        await using var process = await host.StartAsync(new CommandSpec("sh", "-c", "echo $$ > \"$1\"; exec cat", "sh", pidFile));
        var reader = new StreamReader(process.StandardOutput);
        var writer = new StreamWriter(process.StandardInput) { AutoFlush = true };

        await writer.WriteLineAsync("{\"execute\": \"query-status\"}");
        Assert.Equal("{\"execute\": \"query-status\"}", await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        await writer.WriteLineAsync("second line");
        Assert.Equal("second line", await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.False(process.HasExited);

        await process.KillAsync();
        Assert.Equal("gone", await RemoteProcessStateAsync(host, pidFile));
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task StreamingProcess_EndsWhenItsInputCloses(SessionTransport transport)
    {
        await using var host = await ConnectAsync(transport);
        await using var process = await host.StartAsync(new CommandSpec("wc", "-c"));
        await process.StandardInput.WriteAsync(new byte[12345]);
        process.StandardInput.Close();
        var output = await new StreamReader(process.StandardOutput).ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal("12345", output.Trim());
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Timeout_KillsTheRemoteProcessGroup_CheckedOnTheHost(SessionTransport transport)
    {
        await using var host = await ConnectAsync(transport);
        var pidFile = Path.Combine(scratch, "timeout.pid");
        var stopwatch = Stopwatch.StartNew();

        // A background child in the same group: only a group kill on the host ends it (the lab logs in as root, where channel signals do nothing).
        var error = await Assert.ThrowsAsync<CommandTimeoutException>(() => host.RunAsync(
            new CommandSpec("sh", "-c", "sleep 300 & echo $! > \"$1\"; wait", "sh", pidFile) { Timeout = TimeSpan.FromSeconds(2) }));

        Assert.Contains("host2", error.Message);
        Assert.InRange(stopwatch.Elapsed.TotalSeconds, 1.9, 15);
        Assert.Equal("gone", await RemoteProcessStateAsync(host, pidFile));
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Cancellation_KillsTheRemoteProcess_CheckedOnTheHost(SessionTransport transport)
    {
        await using var host = await ConnectAsync(transport);
        var pidFile = Path.Combine(scratch, "cancel.pid");
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(1.5));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => host.RunAsync(
            new CommandSpec("sh", "-c", "echo $$ > \"$1\"; exec sleep 300", "sh", pidFile), cancel.Token));

        Assert.Equal("gone", await RemoteProcessStateAsync(host, pidFile));
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task UnknownHostKey_IsRefusedByDefault_AndNothingRuns(SessionTransport transport)
    {
        var stranger = await lab.StartDaemonAsync("stranger", "127.0.0.2");
        var emptyKnownHosts = Path.Combine(scratch, "known_hosts_empty");
        File.WriteAllText(emptyKnownHosts, "");
        var marker = Path.Combine(scratch, "ran");
        await using var host = new Disconnecting(lab.CreateHost(stranger.Options(emptyKnownHosts, transport: transport)));

        var error = await Assert.ThrowsAsync<HostKeyVerificationException>(() => host.RunAsync(new CommandSpec("touch", marker)));

        Assert.Equal("HostKeyUnknown", error.ErrorId);
        Assert.Equal(ReplicaErrorCategory.SecurityError, error.Category);
        Assert.Contains("stranger", error.Message);
        Assert.Contains("-AcceptNewHostKey", error.Message);
        Assert.False(File.Exists(marker));
        Assert.Equal("", File.ReadAllText(emptyKnownHosts));
        SshLab.Stop(stranger);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task AcceptNewHostKey_RecordsTheKeyInOpenSshFormat_SoThatSshAcceptsIt(SessionTransport transport)
    {
        var newcomer = await lab.StartDaemonAsync("newcomer", "127.0.0.3");
        var knownHosts = Path.Combine(scratch, "known_hosts_new");
        File.WriteAllText(knownHosts, "# no keys yet\n");
        await using (var host = new Disconnecting(lab.CreateHost(newcomer.Options(knownHosts, acceptNew: true, transport: transport))))
        {
            Assert.Equal("hello\n", (await host.RunAsync(new CommandSpec("echo", "hello"))).StandardOutput);
        }

        // ssh-keygen -F finds it whether it was written plain or hashed (ssh_config HashKnownHosts).
        var recorded = Tool.Run("ssh-keygen", "-F", $"[{newcomer.Address}]:{newcomer.Port}", "-f", knownHosts);
        Assert.Contains(newcomer.HostPublicKey, recorded);

        // The OpenSSH client itself, strict, trusts what was recorded.
        var ssh = Tool.TryRun("ssh", new[]
        {
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", $"UserKnownHostsFile={knownHosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-i", lab.ClientKeyPath, "-p", newcomer.Port.ToString(CultureInfo.InvariantCulture), "-l", lab.UserName, newcomer.Address, "echo", "ssh-ok",
        });
        Assert.True(ssh.ExitCode == 0, ssh.StandardError);
        Assert.Equal("ssh-ok\n", ssh.StandardOutput);
        SshLab.Stop(newcomer);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task ChangedHostKey_IsRefusedEvenWithAcceptNew_NamingTheHostAndBothFingerprints(SessionTransport transport)
    {
        var impostor = lab.NewHostKey("impostor-" + transport);
        var knownHosts = Path.Combine(scratch, "known_hosts_changed");
        File.WriteAllText(knownHosts, $"[{lab[0].Address}]:{lab[0].Port} {impostor.PublicKey}\n");
        await using var host = new Disconnecting(lab.CreateHost(lab[0].Options(knownHosts, acceptNew: true, transport: transport)));

        var error = await Assert.ThrowsAsync<HostKeyVerificationException>(() => host.RunAsync(new CommandSpec("true")));

        Assert.True(error.KeyChanged);
        Assert.Equal("HostKeyChanged", error.ErrorId);
        Assert.Contains("host2", error.Message);
        Assert.Contains(SshKeygenFingerprint(impostor.PrivateKey + ".pub"), error.Message);
        Assert.Contains(SshKeygenFingerprint(lab[0].HostPublicKey), error.Message);
        Assert.Equal($"[{lab[0].Address}]:{lab[0].Port} {impostor.PublicKey}\n", File.ReadAllText(knownHosts));
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task HashedEntry_AmongSeveralKeysForTheHost_IsTrusted(SessionTransport transport)
    {
        // A host with an ed25519 and an ecdsa key, of which known_hosts records only the ecdsa one, hashed (ssh-keygen -H).
        var ecdsa = Path.Combine(scratch, "hostkey_ecdsa");
        Tool.Run("ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", ecdsa);
        var twoKeys = await lab.StartDaemonAsync("twokeys", "127.0.0.4", extraOptions: new[] { $"HostKey={ecdsa}" });
        var knownHosts = Path.Combine(scratch, "known_hosts_hashed");
        var ecdsaKey = string.Join(' ', File.ReadAllText(ecdsa + ".pub").Split(' ')[..2]);
        var name = $"[{twoKeys.Address}]:{twoKeys.Port}";
        File.WriteAllLines(knownHosts, new[]
        {
            $"other.example.net {twoKeys.HostPublicKey}",
            $"{name} {ecdsaKey}",

            // Matches every host but this one: a matcher that ignored '!' would see a changed ed25519 key.
            $"*,!{name} {lab.NewHostKey("negated-" + transport).PublicKey}",
        });
        Tool.Run("ssh-keygen", "-q", "-H", "-f", knownHosts);
        Assert.DoesNotContain(File.ReadAllLines(knownHosts), line => line.StartsWith(name, StringComparison.Ordinal));
        await using var host = new Disconnecting(lab.CreateHost(twoKeys.Options(knownHosts, transport: transport)));

        Assert.Equal("in\n", (await host.RunAsync(new CommandSpec("echo", "in"))).StandardOutput);
        SshLab.Stop(twoKeys);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task RefusedPort_FailsFast_AsUnreachable_NamingHostAndPort(SessionTransport transport)
    {
        var port = Ports.Free("127.0.0.4");
        await using var host = new Disconnecting(lab.CreateHost(new SshConnectionOptions { Transport = transport, HostName = "127.0.0.4", Port = port, ConnectTimeoutSeconds = 3, KeyFilePath = lab.ClientKeyPath }));
        var stopwatch = Stopwatch.StartNew();

        var error = await Assert.ThrowsAsync<HostUnreachableException>(() => host.RunAsync(new CommandSpec("true")));

        Assert.Contains($"127.0.0.4:{port}", error.Message);
        Assert.Equal("HostUnreachable", error.ErrorId);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(3), $"took {stopwatch.Elapsed}");
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task SilentHost_FailsWithinTheConnectTimeout_NamingTheHost(SessionTransport transport)
    {
        // Accepts TCP but never speaks SSH: only the connect timeout (which covers the banner exchange) ends the wait.
        using var silent = new TcpListener(IPAddress.Parse("127.0.0.5"), 0);
        silent.Start();
        var port = ((IPEndPoint)silent.LocalEndpoint).Port;
        await using var host = new Disconnecting(lab.CreateHost(new SshConnectionOptions { Transport = transport, HostName = "127.0.0.5", Port = port, ConnectTimeoutSeconds = 2, KeyFilePath = lab.ClientKeyPath }));
        var stopwatch = Stopwatch.StartNew();

        var error = await Assert.ThrowsAsync<HostUnreachableException>(() => host.ConnectAsync());

        Assert.Contains($"127.0.0.5:{port}", error.Message);
        Assert.InRange(stopwatch.Elapsed.TotalSeconds, 1.5, 2 + 3);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task JumpHost_CarriesTheConnection_ThroughTheJumpHostsSshd(SessionTransport transport)
    {
        await using var host = new Disconnecting(lab.CreateHost(lab[1].Options(transport: transport, jumpHost: $"{lab.UserName}@{lab[0].Address}:{lab[0].Port}")));

        var result = await host.RunAsync(new CommandSpec("sh", "-c", "echo \"$SSH_CLIENT\""));

        // The target sees a TCP connection whose client end belongs to the jump host's sshd, not to this process or an ssh client.
        var clientPort = result.StandardOutput.Split(' ')[1];
        var owner = Tool.Run("ss", "-tnpH", "state", "established", $"( sport = :{clientPort} )");
        Assert.Contains("\"sshd", owner);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task KilledConnection_IsReplacedByTheNextCommand(SessionTransport transport)
    {
        await using var host = await ConnectAsync(transport);
        var before = await host.RunAsync(new CommandSpec("sh", "-c", FindConnectionSshd));
        var (sshdPid, clientPort) = (before.StandardOutput.Split(' ')[0], before.StandardOutput.Split(' ')[1].Trim());

        // Kill the host's end of the connection, as a reboot or a network cut would.
        Tool.Run("kill", "-9", sshdPid);
        var deadline = Stopwatch.StartNew();
        while (host.IsConnected && deadline.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(50);
        }

        Assert.False(host.IsConnected, "the transport did not notice that its connection died");
        var after = await host.RunAsync(new CommandSpec("sh", "-c", FindConnectionSshd));

        Assert.True(host.IsConnected);
        Assert.NotEqual(clientPort, after.StandardOutput.Split(' ')[1].Trim());
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task MoreConcurrentCommandsThanMaxSessions_WaitForAFreeChannel_OverOneConnection(SessionTransport transport)
    {
        var limited = await lab.StartDaemonAsync("maxsessions10", "127.0.0.3", maxSessions: 10);
        await using var host = new Disconnecting(lab.CreateHost(limited.Options(limited.WriteKnownHosts(), transport: transport)));
        await host.ConnectAsync();
        var running = Path.Combine(scratch, "running");
        Directory.CreateDirectory(running);

        // Each command counts the commands running beside it on the host.
        var results = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => host.RunAsync(new CommandSpec("sh", "-c",
            "touch \"$1/$2\"; sleep 0.4; n=$(ls \"$1\" | wc -l); rm \"$1/$2\"; echo \"$n ${SSH_CLIENT}\"", "sh", running, i.ToString(CultureInfo.InvariantCulture)))));

        Assert.All(results, r => Assert.Equal(0, r.ExitCode));
        Assert.All(results, r => Assert.InRange(int.Parse(r.StandardOutput.Split(' ')[0], CultureInfo.InvariantCulture), 1, 10));
        Assert.Single(results.Select(r => r.StandardOutput.Split(' ')[2]).Distinct());
        SshLab.Stop(limited);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task WrongKey_FailsAuthentication_NamingTheHost(SessionTransport transport)
    {
        var wrongKey = lab.NewHostKey("not-authorized-" + transport);
        await using var host = new Disconnecting(lab.CreateHost(lab[1].Options(transport: transport, keyFilePath: wrongKey.PrivateKey)));

        var error = await Assert.ThrowsAsync<SshAuthenticationException>(() => host.ConnectAsync());

        Assert.Contains("host3", error.Message);
        Assert.Equal(ReplicaErrorCategory.AuthenticationError, error.Category);
    }

    /// <summary>Prints the pid of the sshd process serving this command's connection (its nearest sshd ancestor), and the client port.</summary>
    private const string FindConnectionSshd =
        "p=$$; while [ \"$p\" -gt 1 ]; do case \"$(cat /proc/$p/comm)\" in sshd*) echo \"$p $(echo $SSH_CLIENT | cut -d' ' -f2)\"; exit 0;; esac; " +
        "p=$(cut -d' ' -f4 /proc/$p/stat); done; exit 1";

    private static string SshKeygenFingerprint(string publicKeyOrFile)
    {
        var file = publicKeyOrFile;
        if (!File.Exists(file))
        {
            file = Path.GetTempFileName();
            File.WriteAllText(file, publicKeyOrFile + "\n");
        }

        // "256 SHA256:abc... comment (ED25519)"
        return Regex.Match(Tool.Run("ssh-keygen", "-l", "-f", file), @"SHA256:\S+").Value;
    }

    private async Task<Disconnecting> ConnectAsync(SessionTransport transport)
    {
        var host = new Disconnecting(lab[0].CreateHost(transport));
        await host.ConnectAsync();
        return host;
    }

    private static async Task<string> RemoteProcessStateAsync(IReplicaHost host, string pidFile)
    {
        var result = await host.RunAsync(new CommandSpec("sh", "-c", "kill -0 \"$(cat \"$1\")\" 2>/dev/null && echo alive || echo gone", "sh", pidFile));
        return result.StandardOutput.Trim();
    }

    /// <summary>A host object that closes its connection when the test ends, pass or fail.</summary>
    private sealed class Disconnecting(ISshHost inner) : ISshHost, IAsyncDisposable
    {
        public string Name => inner.Name;

        public bool IsLocal => false;

        public SshConnectionOptions Options => inner.Options;

        public SessionTransport Transport => inner.Transport;

        public bool IsConnected => inner.IsConnected;

        public Task ConnectAsync(CancellationToken cancellationToken = default) => inner.ConnectAsync(cancellationToken);

        public Task DisconnectAsync() => inner.DisconnectAsync();

        public Task<CommandResult> RunAsync(CommandSpec command, CancellationToken cancellationToken = default) => inner.RunAsync(command, cancellationToken);

        public Task<IHostProcess> StartAsync(CommandSpec command, CancellationToken cancellationToken = default) => inner.StartAsync(command, cancellationToken);

        public async ValueTask DisposeAsync() => await inner.DisconnectAsync();
    }
}
