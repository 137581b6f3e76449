using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using ReplicaTools.Core;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Remote;

[Collection(LabCollection.Name)]
public sealed class SshHostTests : IAsyncLifetime
{
    private readonly SshLab lab;
    private readonly SshHost host;
    private readonly string scratch;

    public SshHostTests(LabFixture fixture)
    {
        lab = fixture.Lab;
        host = lab[0].CreateHost();
        scratch = Path.Combine(lab.Root, "t-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(scratch);
    }

    public Task InitializeAsync() => host.ConnectAsync();

    public async Task DisposeAsync() => await host.DisconnectAsync();

    public static IEnumerable<object[]> Corpus => HostileStrings.Indexes;

    [Theory]
    [MemberData(nameof(Corpus))]
    public async Task HostileString_ArrivesAsOneByteIdenticalArgument_AndIsNeverExecuted(int index)
    {
        var marker = Path.Combine(scratch, "pwned");
        var value = HostileStrings.All(marker)[index];

        var result = await host.RunAsync(new CommandSpec("sh", "-c", PosixShellTests.EchoArgsScript, "sh", value));

        var lines = result.StandardOutput.Split('\n', 2);
        Assert.Equal("1", lines[0]);
        Assert.Equal(HostileStrings.Hex(value), lines[1]);
        var check = await host.RunAsync(new CommandSpec("test", "-e", marker) { ThrowOnFailure = false });
        Assert.Equal(1, check.ExitCode);
    }

    [Fact]
    public async Task Result_CarriesHostArgvExitCodeOutputAndDuration()
    {
        var result = await host.RunAsync(new CommandSpec("sh", "-c", "printf out; printf err >&2; exit 3") { ThrowOnFailure = false });

        Assert.Equal("host2", result.HostName);
        Assert.Equal(new[] { "sh", "-c", "printf out; printf err >&2; exit 3" }, result.Arguments);
        Assert.Equal(3, result.ExitCode);
        Assert.Equal("out", result.StandardOutput);
        Assert.Equal("err", result.StandardError);
        Assert.True(result.Duration > TimeSpan.Zero);
    }

    [Fact]
    public async Task NonZeroExit_ThrowsWithHostCommandAndStderr()
    {
        var error = await Assert.ThrowsAsync<CommandFailedException>(() =>
            host.RunAsync(new CommandSpec("sh", "-c", "echo 'disk full on /srv' >&2; exit 4")));

        Assert.Equal(4, error.ExitCode);
        Assert.Equal("host2", error.HostName);
        Assert.Contains("host2", error.Message);
        Assert.Contains("disk full on /srv", error.Message);
        Assert.Contains("exit code 4", error.Message);
        Assert.Equal("CommandFailed", error.ErrorId);
    }

    [Fact]
    public async Task ExitCode255FromTheCommandItself_IsNotMistakenForAnSshFailure()
    {
        var result = await host.RunAsync(new CommandSpec("sh", "-c", "exit 255") { ThrowOnFailure = false });
        Assert.Equal(255, result.ExitCode);
    }

    [Fact]
    public async Task MissingProgram_IsReportedAsNotInstalledOnThatHost()
    {
        var error = await Assert.ThrowsAsync<ProgramNotFoundException>(() => host.RunAsync(new CommandSpec("no-such-tool-xyz", "--version")));
        Assert.Equal("no-such-tool-xyz", error.Program);
        Assert.Contains("host2", error.Message);
        Assert.Equal(ReplicaErrorCategory.NotInstalled, error.Category);
    }

    [Fact]
    public async Task StandardInput_AndBinaryOutput_AreByteExact()
    {
        var input = RandomNumberGenerator.GetBytes(3 * 1024 * 1024 + 17);
        var result = await host.RunAsync(new CommandSpec("sha256sum") { StandardInput = input });
        Assert.StartsWith(Convert.ToHexString(SHA256.HashData(input)).ToLowerInvariant(), result.StandardOutput);
    }

    [Fact]
    public async Task Timeout_KillsTheRemoteProcessGroup()
    {
        var pidFile = Path.Combine(scratch, "timeout.pid");
        var stopwatch = Stopwatch.StartNew();

        var error = await Assert.ThrowsAsync<CommandTimeoutException>(() => host.RunAsync(
            new CommandSpec("sh", "-c", "sleep 300 & echo $! > \"$1\"; wait", "sh", pidFile) { Timeout = TimeSpan.FromSeconds(2) }));

        Assert.Contains("host2", error.Message);
        Assert.InRange(stopwatch.Elapsed.TotalSeconds, 1.9, 15);
        Assert.Equal("gone", await RemoteProcessStateAsync(pidFile));
    }

    [Fact]
    public async Task Cancellation_KillsTheRemoteProcess_NotOnlyTheLocalSsh()
    {
        var pidFile = Path.Combine(scratch, "cancel.pid");
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(1.5));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => host.RunAsync(
            new CommandSpec("sh", "-c", "echo $$ > \"$1\"; exec sleep 300", "sh", pidFile), cancel.Token));

        Assert.Equal("gone", await RemoteProcessStateAsync(pidFile));
    }

    [Fact]
    public async Task StreamingProcess_CanBeWrittenAndReadWhileItRuns_AndKilled()
    {
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
        Assert.Equal("gone", await RemoteProcessStateAsync(pidFile));
    }

    [Fact]
    public async Task StreamingProcess_EndsWhenItsInputCloses()
    {
        await using var process = await host.StartAsync(new CommandSpec("wc", "-c"));
        await process.StandardInput.WriteAsync(new byte[12345]);
        process.StandardInput.Close();
        var output = await new StreamReader(process.StandardOutput).ReadToEndAsync();
        Assert.Equal(0, await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal("12345", output.Trim());
    }

    [Fact]
    public async Task Commands_ShareOneMasterConnection()
    {
        Assert.True(host.IsMasterRunning);
        var check = Tool.TryRun("ssh", new[] { "-o", $"ControlPath={host.ControlPath}", "-O", "check", "--", lab[0].Address });
        Assert.Equal(0, check.ExitCode);

        // Each command through the master is a new channel on one TCP connection: sshd sees one client port.
        var ports = new HashSet<string>();
        for (var i = 0; i < 3; i++)
        {
            var result = await host.RunAsync(new CommandSpec("sh", "-c", "echo \"$SSH_CLIENT\""));
            ports.Add(result.StandardOutput.Split(' ')[1]);
        }

        Assert.Single(ports);
        await host.DisconnectAsync();
        Assert.False(File.Exists(host.ControlPath));
    }

    [Fact]
    public async Task KilledMaster_IsReplacedByTheNextCommand_NotBypassed()
    {
        var firstPid = MasterPid();
        Tool.Run("kill", "-9", firstPid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        await Task.Delay(200);
        Assert.True(File.Exists(host.ControlPath), "a killed master leaves its socket file behind");
        Assert.False(host.IsMasterRunning);

        var result = await host.RunAsync(new CommandSpec("echo", "still here"));

        Assert.Equal("still here\n", result.StandardOutput);
        Assert.True(host.IsMasterRunning);
        Assert.NotEqual(firstPid, MasterPid());
    }

    private int MasterPid()
    {
        // "Master running (pid=1234)" on stderr.
        var check = Tool.TryRun("ssh", new[] { "-o", $"ControlPath={host.ControlPath}", "-O", "check", "--", lab[0].Address });
        var match = System.Text.RegularExpressions.Regex.Match(check.StandardError, @"pid=(\d+)");
        Assert.True(match.Success, check.StandardError);
        return int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task UnknownHostKey_IsRefusedByDefault_WithAClearMessage_AndNothingRuns()
    {
        var stranger = await lab.StartDaemonAsync("stranger", "127.0.0.2");
        var emptyKnownHosts = Path.Combine(scratch, "known_hosts_empty");
        File.WriteAllText(emptyKnownHosts, "");
        var marker = Path.Combine(scratch, "ran");
        var sshHost = stranger.CreateHost(knownHostsFile: emptyKnownHosts);

        var error = await Assert.ThrowsAsync<HostKeyVerificationException>(() => sshHost.RunAsync(new CommandSpec("touch", marker)));

        Assert.Equal("HostKeyUnknown", error.ErrorId);
        Assert.Equal(ReplicaErrorCategory.SecurityError, error.Category);
        Assert.Contains("stranger", error.Message);
        Assert.Contains("-AcceptNewHostKey", error.Message);
        Assert.False(File.Exists(marker));
        Assert.Equal("", File.ReadAllText(emptyKnownHosts));
        SshLab.Stop(stranger);
    }

    [Fact]
    public async Task AcceptNewHostKey_TrustsAFirstSeenKey_AndRecordsIt()
    {
        var stranger = await lab.StartDaemonAsync("newcomer", "127.0.0.3");
        var knownHosts = Path.Combine(scratch, "known_hosts_new");
        File.WriteAllText(knownHosts, "");
        var sshHost = stranger.CreateHost(knownHostsFile: knownHosts, acceptNew: true);

        var result = await sshHost.RunAsync(new CommandSpec("echo", "hello"));

        Assert.Equal("hello\n", result.StandardOutput);
        Assert.Contains(stranger.HostPublicKey.Split(' ')[1], File.ReadAllText(knownHosts));
        await sshHost.DisconnectAsync();
        SshLab.Stop(stranger);
    }

    [Fact]
    public async Task ChangedHostKey_IsRefusedEvenWithAcceptNew()
    {
        var impostor = lab.NewHostKey("impostor");
        var knownHosts = Path.Combine(scratch, "known_hosts_changed");
        File.WriteAllText(knownHosts, $"[{lab[0].Address}]:{lab[0].Port} {impostor.PublicKey}\n");
        var sshHost = lab[0].CreateHost(knownHostsFile: knownHosts, acceptNew: true);

        var error = await Assert.ThrowsAsync<HostKeyVerificationException>(() => sshHost.RunAsync(new CommandSpec("true")));

        Assert.True(error.KeyChanged);
        Assert.Equal("HostKeyChanged", error.ErrorId);
        Assert.Contains("CHANGED", error.Message);
    }

    [Fact]
    public async Task WrongKey_FailsAuthentication_NamingTheHost()
    {
        var wrongKey = lab.NewHostKey("not-authorized");
        var options = lab[1].Options();
        var sshHost = new SshHost(new SshConnectionOptions
        {
            HostName = options.HostName,
            Port = options.Port,
            UserName = options.UserName,
            KeyFilePath = wrongKey.PrivateKey,
            ExtraOptions = options.ExtraOptions,
            DisplayName = "host3",
        }, lab.ControlDirectory);

        var error = await Assert.ThrowsAsync<SshAuthenticationException>(() => sshHost.ConnectAsync());
        Assert.Contains("host3", error.Message);
    }

    [Fact]
    public async Task RefusedPort_FailsFast_AsUnreachable_NamingTheHost()
    {
        var port = Ports.Free("127.0.0.4");
        var sshHost = new SshHost(new SshConnectionOptions { HostName = "127.0.0.4", Port = port, ConnectTimeoutSeconds = 3 }, lab.ControlDirectory);
        var stopwatch = Stopwatch.StartNew();

        var error = await Assert.ThrowsAsync<HostUnreachableException>(() => sshHost.RunAsync(new CommandSpec("true")));

        Assert.Contains($"127.0.0.4:{port}", error.Message);
        Assert.Equal("HostUnreachable", error.ErrorId);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(3), $"took {stopwatch.Elapsed}");
    }

    [Fact]
    public async Task SilentHost_FailsWithinTheConnectTimeout_NamingTheHost()
    {
        // Accepts TCP but never speaks SSH: only ConnectTimeout (which covers the banner exchange) ends the wait.
        using var silent = new TcpListener(IPAddress.Parse("127.0.0.5"), 0);
        silent.Start();
        var port = ((IPEndPoint)silent.LocalEndpoint).Port;
        var sshHost = new SshHost(new SshConnectionOptions { HostName = "127.0.0.5", Port = port, ConnectTimeoutSeconds = 2 }, lab.ControlDirectory);
        var stopwatch = Stopwatch.StartNew();

        var error = await Assert.ThrowsAsync<HostUnreachableException>(() => sshHost.ConnectAsync());

        Assert.Contains($"127.0.0.5:{port}", error.Message);
        Assert.InRange(stopwatch.Elapsed.TotalSeconds, 1.5, 2 + 3);
    }

    private async Task<string> RemoteProcessStateAsync(string pidFile)
    {
        var result = await host.RunAsync(new CommandSpec("sh", "-c", "kill -0 \"$(cat \"$1\")\" 2>/dev/null && echo alive || echo gone", "sh", pidFile));
        return result.StandardOutput.Trim();
    }
}
