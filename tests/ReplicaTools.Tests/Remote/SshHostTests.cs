using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Remote;

/// <summary>What only the OpenSSH transport has: the ControlMaster. Everything both transports do is in <see cref="TransportTests"/>.</summary>
[Collection(LabCollection.Name)]
public sealed class SshHostTests : IAsyncLifetime
{
    private readonly SshLab lab;
    private readonly SshHost host;

    public SshHostTests(LabFixture fixture)
    {
        lab = fixture.Lab;
        host = lab[0].CreateHost();
    }

    public Task InitializeAsync() => host.ConnectAsync();

    public async Task DisposeAsync() => await host.DisconnectAsync();

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
}
