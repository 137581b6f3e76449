using ReplicaTools.Core;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Tests.Remote;

public sealed class SessionRulesTests
{
    [Fact]
    public void NeitherSessionNorHostName_MeansTheLocalMachine()
    {
        var session = HostResolver.Resolve(null, null);
        Assert.Same(ReplicaSession.Local, session);
        Assert.True(session.Host.IsLocal);
        Assert.Same(ReplicaSession.Local, HostResolver.Resolve(null, ""));
    }

    [Fact]
    public async Task HostName_ReusesAnOpenSessionByNameOrHostName_PreferringExplicitOnes()
    {
        var name = "rules-" + Guid.NewGuid().ToString("N")[..6];
        var explicitSession = ReplicaSessionRegistry.Create(new SshConnectionOptions { HostName = "192.0.2.77" }, name);
        try
        {
            Assert.Same(explicitSession, HostResolver.Resolve(null, name));
            Assert.Same(explicitSession, HostResolver.Resolve(null, "192.0.2.77"));
        }
        finally
        {
            await ReplicaSessionRegistry.RemoveAsync(explicitSession);
        }
    }

    [Fact]
    public async Task HostName_WithoutASession_OpensAnImplicitOne_ThatLaterCallsReuse()
    {
        var host = "192.0.2." + Random.Shared.Next(100, 200);
        var first = HostResolver.Resolve(null, host);
        try
        {
            Assert.True(first.IsImplicit);
            Assert.Equal(host, first.HostName);
            Assert.Same(first, HostResolver.Resolve(null, host));
            Assert.Contains(first, ReplicaSessionRegistry.Sessions);
        }
        finally
        {
            await ReplicaSessionRegistry.RemoveAsync(first);
        }
    }

    [Fact]
    public async Task SessionAndADifferentHostName_IsAnError()
    {
        var session = ReplicaSessionRegistry.Create(new SshConnectionOptions { HostName = "192.0.2.5" }, "nfs-x");
        try
        {
            var error = Assert.Throws<ReplicaException>(() => HostResolver.Resolve(session, "192.0.2.6"));
            Assert.Equal("SessionHostMismatch", error.ErrorId);
            Assert.Same(session, HostResolver.Resolve(session, "nfs-x"));
            Assert.Same(session, HostResolver.Resolve(session, "192.0.2.5"));
        }
        finally
        {
            await ReplicaSessionRegistry.RemoveAsync(session);
        }
    }

    [Fact]
    public async Task ClosedSession_RefusesUse_WithAClearMessage()
    {
        var session = ReplicaSessionRegistry.Create(new SshConnectionOptions { HostName = "192.0.2.9" }, "gone");
        await ReplicaSessionRegistry.RemoveAsync(session);

        Assert.Equal(ReplicaSessionState.Closed, session.State);
        var error = Assert.Throws<ReplicaException>(() => session.Host);
        Assert.Equal("SessionClosed", error.ErrorId);
        Assert.Contains("New-ReplicaSession", error.Message);
        Assert.DoesNotContain(session, ReplicaSessionRegistry.Sessions);
    }

    [Theory]
    [InlineData("ServerAliveInterval=30", "ServerAliveInterval", "30")]
    [InlineData("UserKnownHostsFile /etc/known hosts", "UserKnownHostsFile", "/etc/known hosts")]
    [InlineData(" Compression = yes ", "Compression", "yes")]
    public void SshOption_ParsesAsSshDoes(string text, string name, string value) =>
        Assert.Equal(new KeyValuePair<string, string>(name, value), SshConnectionOptions.ParseOption(text));

    [Theory]
    [InlineData("StrictHostKeyChecking=no", "-AcceptNewHostKey")]
    [InlineData("controlpath=/tmp/x", "session")]
    [InlineData("Port=2222", "-Port")]
    [InlineData("ProxyJump=evil", "-JumpHost")]
    [InlineData("novalue", "Name=Value")]
    [InlineData("Bad-Name=1", "keyword")]
    [InlineData("LocalCommand=a\nb", "control character")]
    public void SshOption_RejectsWhatReplicaToolsManages_NamingTheParameterToUse(string text, string hint)
    {
        var error = Assert.Throws<ArgumentException>(() => SshConnectionOptions.ParseOption(text));
        Assert.Contains(hint, error.Message);
    }

    [Theory]
    [InlineData("-oProxyCommand=evil")]
    [InlineData("host name")]
    [InlineData("")]
    [InlineData("host\nname")]
    public void HostName_ThatSshWouldReadAsAnOption_OrIsMalformed_IsRejected(string host)
    {
        var error = Assert.Throws<ArgumentException>(() => new SshConnectionOptions { HostName = host }.Validate());
        Assert.Contains("HostName", error.Message);
    }

    [Fact]
    public void SshArguments_AreStrictAndNonInteractive_AndTheCommandIsOneQuotedWord()
    {
        var host = new SshHost(new SshConnectionOptions { HostName = "nfs1.example.net", Port = 2222, UserName = "replica", ExtraOptions = new[] { SshConnectionOptions.ParseOption("ServerAliveInterval=5") } }, Path.GetTempPath());
        var command = new CommandSpec("qemu-img", "info", "/srv/my disk.vdi");

        var arguments = host.BuildSshArguments(command, TimeSpan.FromSeconds(60));

        Assert.Equal(new[] { "-o", "ServerAliveInterval=5" }, arguments.Take(2));
        Assert.Contains("BatchMode=yes", arguments);
        Assert.Contains("StrictHostKeyChecking=yes", arguments);
        Assert.Contains("ControlMaster=no", arguments);
        Assert.Contains($"ControlPath={host.ControlPath}", arguments);
        Assert.Contains("-T", arguments);
        var separator = arguments.ToList().IndexOf("--");
        Assert.Equal("nfs1.example.net", arguments[separator + 1]);
        Assert.Equal(separator + 3, arguments.Count);
        Assert.EndsWith("rt timeout -k 5 60 qemu-img info '/srv/my disk.vdi'", arguments[^1]);
        Assert.StartsWith("exec setsid -w sh -c ", arguments[^1]);
    }
}
