using System.Security;
using ReplicaTools.Core;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Remote;

/// <summary>What only the SshNet transport takes: passwords (-Credential) and encrypted keys (-KeyPassphrase).</summary>
[Collection(LabCollection.Name)]
public sealed class SshNetAuthenticationTests
{
    private const string Password = "c0rrect horse 'battery' $taple";
    private const string Passphrase = "key pass; $(not run)";
    private readonly SshLab lab;

    public SshNetAuthenticationTests(LabFixture fixture) => lab = fixture.Lab;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Password_LogsIn_ByPasswordOrKeyboardInteractive(bool keyboardInteractive)
    {
        var daemon = await lab.StartPasswordDaemonAsync($"pw{(keyboardInteractive ? "ki" : "pa")}", "127.0.0.3", Password, keyboardInteractive);
        var host = new SshNetHost(PasswordOptions(daemon, Password));
        try
        {
            var result = await host.RunAsync(new CommandSpec("sh", "-c", "echo \"$USER\""));
            Assert.Equal(lab.UserName + "\n", result.StandardOutput);
        }
        finally
        {
            await host.DisconnectAsync();
            SshLab.Stop(daemon);
        }
    }

    [Fact]
    public async Task WrongPassword_FailsAuthentication_WithoutTheSecretInTheMessage()
    {
        var daemon = await lab.StartPasswordDaemonAsync("pwwrong", "127.0.0.3", Password, keyboardInteractive: false);
        var messages = new RecordingReporter();
        try
        {
            using (OperationContext.Use(messages))
            {
                var error = await Assert.ThrowsAsync<SshAuthenticationException>(() => new SshNetHost(PasswordOptions(daemon, "not " + Password)).ConnectAsync());
                Assert.Contains("pwwrong", error.Message);
                Assert.DoesNotContain("horse", error.Message);
                Assert.DoesNotContain("horse", error.ToString());
            }

            Assert.NotEmpty(messages.All);
            Assert.DoesNotContain(messages.All, m => m.Contains("horse", StringComparison.Ordinal));
        }
        finally
        {
            SshLab.Stop(daemon);
        }
    }

    [Fact]
    public void Password_WithTheOpenSshTransport_IsAClearError()
    {
        var error = Assert.Throws<ArgumentException>(() => new SshConnectionOptions { Transport = SessionTransport.OpenSsh, HostName = "nfs1.example.net", Password = Secure(Password) }.Validate());
        Assert.Contains("-Credential", error.Message);
        Assert.Contains("-Transport SshNet", error.Message);
        Assert.DoesNotContain("horse", error.Message);

        var passphrase = Assert.Throws<ArgumentException>(() => new SshConnectionOptions { Transport = SessionTransport.OpenSsh, HostName = "nfs1.example.net", KeyPassphrase = Secure(Passphrase) }.Validate());
        Assert.Contains("ssh-agent", passphrase.Message);
    }

    [Theory]
    [InlineData("ed25519")]
    [InlineData("ecdsa")]
    [InlineData("rsa")]
    public async Task EncryptedOpenSshKey_LogsIn_WithItsPassphrase(string type)
    {
        var key = NewEncryptedKey(type);
        var host = new SshNetHost(KeyOptions(key, Secure(Passphrase)));
        try
        {
            Assert.Equal("in\n", (await host.RunAsync(new CommandSpec("echo", "in"))).StandardOutput);
            Assert.StartsWith("-----BEGIN OPENSSH PRIVATE KEY-----", File.ReadAllText(key));
        }
        finally
        {
            await host.DisconnectAsync();
        }
    }

    [Fact]
    public async Task EncryptedKey_WithoutOrWithAWrongPassphrase_IsAClearErrorNamingTheParameter()
    {
        var key = NewEncryptedKey("ed25519");

        var missing = await Assert.ThrowsAsync<ArgumentException>(() => new SshNetHost(KeyOptions(key, null)).ConnectAsync());
        var wrong = await Assert.ThrowsAsync<ArgumentException>(() => new SshNetHost(KeyOptions(key, Secure("wrong " + Passphrase))).ConnectAsync());

        Assert.Contains("-KeyPassphrase", missing.Message);
        Assert.Contains(key, missing.Message);
        Assert.Contains("-KeyPassphrase", wrong.Message);
        Assert.DoesNotContain("not run", wrong.Message);
    }

    private string NewEncryptedKey(string type)
    {
        var path = Path.Combine(lab.Root, $"enc_{type}_{Guid.NewGuid().ToString("N")[..6]}");
        var arguments = new List<string> { "-q", "-t", type, "-N", Passphrase, "-C", "encrypted", "-f", path };
        if (type == "rsa")
        {
            arguments.InsertRange(0, new[] { "-b", "3072" });
        }

        Tool.Run("ssh-keygen", arguments);
        File.AppendAllText(Path.Combine(lab.Root, "authorized_keys"), File.ReadAllText(path + ".pub"));
        return path;
    }

    private SshConnectionOptions KeyOptions(string key, SecureString? passphrase)
    {
        var options = lab[0].Options(transport: SessionTransport.SshNet);
        return new SshConnectionOptions
        {
            Transport = SessionTransport.SshNet,
            HostName = options.HostName,
            Port = options.Port,
            UserName = options.UserName,
            KnownHostsPath = options.KnownHostsPath,
            KeyFilePath = key,
            KeyPassphrase = passphrase,
            DisplayName = "host2",
        };
    }

    private SshConnectionOptions PasswordOptions(LabHost daemon, string password) => new()
    {
        Transport = SessionTransport.SshNet,
        HostName = daemon.Address,
        Port = daemon.Port,
        UserName = lab.UserName,
        Password = Secure(password),
        KnownHostsPath = daemon.WriteKnownHosts(),
        DisplayName = daemon.Name,
    };

    private static SecureString Secure(string text)
    {
        var secure = new SecureString();
        foreach (var c in text)
        {
            secure.AppendChar(c);
        }

        secure.MakeReadOnly();
        return secure;
    }

    private sealed class RecordingReporter : IOperationReporter
    {
        private readonly List<string> messages = new();

        public IReadOnlyList<string> All
        {
            get
            {
                lock (messages)
                {
                    return messages.ToList();
                }
            }
        }

        public void Verbose(string message) => Add(message);

        public void Warning(string message) => Add(message);

        public void Progress(OperationProgress progress) => Add(progress.Status);

        private void Add(string message)
        {
            lock (messages)
            {
                messages.Add(message);
            }
        }
    }
}
