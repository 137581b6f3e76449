using System.Security.Cryptography;
using System.Text;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Remote;

/// <summary>known_hosts as OpenSSH reads it, checked against ssh-keygen's own answers where it has one.</summary>
public sealed class KnownHostsTests : IDisposable
{
    private readonly string directory = Directory.CreateTempSubdirectory("rt-kh-").FullName;

    public void Dispose() => Directory.Delete(directory, recursive: true);

    [Fact]
    public void HashedEntry_MatchesOnlyItsHostAndPort()
    {
        var (key, line) = NewKey("ed25519");
        var file = Write($"[192.0.2.5]:2222 {line}");
        Tool.Run("ssh-keygen", "-q", "-H", "-f", file);
        Assert.StartsWith("|1|", File.ReadAllText(file));

        Assert.Equal(HostKeyStatus.Known, KnownHosts.Check(new[] { file }, "192.0.2.5", 2222, key).Status);
        Assert.Equal(HostKeyStatus.Unknown, KnownHosts.Check(new[] { file }, "192.0.2.5", 22, key).Status);
        Assert.Equal(HostKeyStatus.Unknown, KnownHosts.Check(new[] { file }, "192.0.2.6", 2222, key).Status);
    }

    [Fact]
    public void Patterns_WildcardsNegationAndCase_MatchAsInSsh()
    {
        var (key, line) = NewKey("ed25519");
        var file = Write($"*.Example.NET,!bastion.example.net,nfs? {line}");

        Assert.Equal(HostKeyStatus.Known, KnownHosts.Check(new[] { file }, "kvm1.example.net", 22, key).Status);
        Assert.Equal(HostKeyStatus.Known, KnownHosts.Check(new[] { file }, "nfs1", 22, key).Status);
        Assert.Equal(HostKeyStatus.Unknown, KnownHosts.Check(new[] { file }, "bastion.example.net", 22, key).Status);
        Assert.Equal(HostKeyStatus.Unknown, KnownHosts.Check(new[] { file }, "nfs10", 22, key).Status);
    }

    [Fact]
    public void SeveralKeysPerHost_AnyRecordedOneIsKnown_AnotherOfARecordedTypeIsChanged()
    {
        var (ed25519, edLine) = NewKey("ed25519");
        var (ecdsa, ecLine) = NewKey("ecdsa");
        var (other, _) = NewKey("ed25519");
        var (rsa, _) = NewKey("rsa");
        var file = Write("# comment", "", $"nfs1 {ecLine}", $"nfs1,nfs2 {edLine}");

        Assert.Equal(HostKeyStatus.Known, KnownHosts.Check(new[] { file }, "nfs1", 22, ecdsa).Status);
        Assert.Equal(HostKeyStatus.Known, KnownHosts.Check(new[] { file }, "nfs1", 22, ed25519).Status);
        var changed = KnownHosts.Check(new[] { file }, "nfs1", 22, other);
        Assert.Equal(HostKeyStatus.Changed, changed.Status);
        Assert.Equal(4, Assert.Single(changed.Entries).Line);
        Assert.Equal(HostKeyStatus.Unknown, KnownHosts.Check(new[] { file }, "nfs1", 22, rsa).Status);
        Assert.Equal(new[] { "ecdsa-sha2-nistp256", "ssh-ed25519" }, KnownHosts.KeyTypesFor(new[] { file }, "nfs1", 22));
    }

    [Fact]
    public void RevokedKey_IsRevoked_AndCertAuthorityLinesAreSkipped()
    {
        var (key, line) = NewKey("ed25519");
        var file = Write($"@cert-authority * {line}", $"@revoked * {line}");

        Assert.Equal(HostKeyStatus.Revoked, KnownHosts.Check(new[] { file }, "nfs1", 22, key).Status);
        Assert.Equal(HostKeyStatus.Unknown, KnownHosts.Check(new[] { file }, "nfs1", 22, NewKey("ed25519").Key).Status);
    }

    [Fact]
    public void Append_WritesWhatSshKeygenFinds_AfterAFileWithoutTrailingNewline()
    {
        var (key, line) = NewKey("ecdsa");
        var file = Path.Combine(directory, "sub", "known_hosts");
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        File.WriteAllText(file, "# last line without newline");

        KnownHosts.Append(file, "192.0.2.9", 2200, key);
        KnownHosts.Append(Path.Combine(directory, "new", "known_hosts"), "192.0.2.9", 22, key);

        Assert.Equal(new[] { "# last line without newline", $"[192.0.2.9]:2200 {line}" }, File.ReadAllLines(file));
        Assert.Contains(line, Tool.Run("ssh-keygen", "-F", "[192.0.2.9]:2200", "-f", file));
        Assert.Equal($"192.0.2.9 {line}\n", File.ReadAllText(Path.Combine(directory, "new", "known_hosts")));
    }

    [Fact]
    public void Fingerprint_IsWhatSshKeygenPrints()
    {
        var (key, _) = NewKey("rsa");
        var printed = Tool.Run("ssh-keygen", "-l", "-f", Path.Combine(directory, "rsa.pub"));
        Assert.Contains(KnownHosts.Fingerprint(key) + " ", printed);
        Assert.EndsWith("(RSA)", printed.Trim());
        Assert.Equal("RSA", KnownHosts.KeyLabel(KnownHosts.KeyType(key)));
        Assert.Equal("SHA256:" + Convert.ToBase64String(SHA256.HashData(key)).TrimEnd('='), KnownHosts.Fingerprint(key));
    }

    private (byte[] Key, string Line) NewKey(string type)
    {
        var path = Path.Combine(directory, type);
        if (File.Exists(path))
        {
            path += "-" + Guid.NewGuid().ToString("N")[..6];
        }

        Tool.Run("ssh-keygen", "-q", "-t", type, "-N", "", "-f", path);
        var fields = File.ReadAllText(path + ".pub").Split(' ');
        return (Convert.FromBase64String(fields[1]), $"{fields[0]} {fields[1]}");
    }

    private string Write(params string[] lines)
    {
        var path = Path.Combine(directory, "known_hosts_" + Guid.NewGuid().ToString("N")[..6]);
        File.WriteAllText(path, string.Join('\n', lines) + "\n", Encoding.ASCII);
        return path;
    }
}
