using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Remote;

public sealed class PosixShellTests : IDisposable
{
    // Prints the argument count, then the first argument's bytes in hex, so nothing is lost in decoding.
    internal const string EchoArgsScript = "printf '%s\\n' \"$#\"; printf '%s' \"$1\" | od -An -tx1 -v | tr -d ' \\n'";

    private readonly string scratch = Directory.CreateTempSubdirectory("rt-quote-").FullName;

    private string Marker => Path.Combine(scratch, "pwned");

    [Theory]
    [InlineData("qemu-img", "qemu-img")]
    [InlineData("/srv/vdis/vm1.vdi", "/srv/vdis/vm1.vdi")]
    [InlineData("--output=json", "'--output=json'")]
    [InlineData("", "''")]
    [InlineData("it's", "'it'\\''s'")]
    [InlineData("a b", "'a b'")]
    [InlineData("if", "'if'")]
    [InlineData("~", "'~'")]
    public void Quote_KeepsPlainWordsReadable_AndQuotesEverythingElse(string argument, string expected) =>
        Assert.Equal(expected, PosixShell.Quote(argument));

    [Fact]
    public void Quote_RejectsNul()
    {
        var error = Assert.Throws<ArgumentException>(() => PosixShell.Quote("a\0b"));
        Assert.Contains("NUL", error.Message);
    }

    [Fact]
    public void Corpus_HasAtLeastFiftyStrings() => Assert.True(HostileStrings.Count >= 50, $"only {HostileStrings.Count} hostile strings");

    [Theory]
    [InlineData("sh")]
    [InlineData("bash")]
    [InlineData("dash")]
    public void EveryHostileString_ReachesARealShellAsOneByteIdenticalArgument(string shell)
    {
        foreach (var value in HostileStrings.All(Marker))
        {
            var line = PosixShell.Join(new[] { "sh", "-c", EchoArgsScript, "sh", value });
            var output = Tool.Run(shell, "-c", line);
            var lines = output.Split('\n', 2);
            Assert.Equal("1", lines[0]);
            Assert.Equal(HostileStrings.Hex(value), lines[1]);
        }

        Assert.False(File.Exists(Marker), "a hostile string was executed by the shell");
    }

    [Fact]
    public void RemoteCommandLine_OverTheLimit_IsRejectedWithTheSizes()
    {
        var huge = new string('\'', 40000);
        var error = Assert.Throws<ArgumentException>(() => SshHost.BuildRemoteCommandLine(new[] { "printf", "%s", huge }, null));
        Assert.Contains("131072", error.Message);
    }

    public void Dispose() => Directory.Delete(scratch, recursive: true);
}
