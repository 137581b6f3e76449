using System.Globalization;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// The host-side guard every SSH transport wraps commands in, so that a timeout or a cancel ends the whole command on
/// the host, whatever the transport and whoever the login user is (sshd ignores channel signals for root sessions).
/// </summary>
/// <remarks>
/// Each command runs on the host as
/// <c>exec setsid -w sh -c 'printf "\036rt-pid:%s\n" "$$" &gt;&amp;2; exec "$@"' rt timeout -k 5 T ARGV...</c>:
/// it gets its own process group whose id is reported on stderr before the command starts, so cancelling can kill
/// the whole group on the host (<see cref="KillCommand"/>, over another channel); the <c>timeout</c> guard ends it
/// even if the connection is lost. Needs setsid (util-linux) and timeout (coreutils) on the host.
/// </remarks>
internal static class RemoteProcessGroup
{
    /// <summary>How much longer than the command's own timeout the host-side guard waits, so the local timeout reports first.</summary>
    public static readonly TimeSpan RemoteTimeoutMargin = TimeSpan.FromSeconds(5);

    private const string WrapperScript = "printf '\\036rt-pid:%s\\n' \"$$\" >&2; exec \"$@\"";

    // TERM the group, wait up to 5 s for it to go, then KILL what is left.
    private const string KillScript =
        "p=$1; kill -TERM \"-$p\" 2>/dev/null || exit 0; i=0; " +
        "while [ $i -lt 25 ]; do kill -0 \"-$p\" 2>/dev/null || exit 0; sleep 0.2; i=$((i+1)); done; " +
        "kill -KILL \"-$p\" 2>/dev/null; exit 0";

    /// <summary>The host-side guard's timeout for a command: its own timeout plus a margin, or none for an infinite one.</summary>
    public static TimeSpan? RemoteTimeout(CommandSpec command) =>
        command.Timeout == Timeout.InfiniteTimeSpan ? null : command.Timeout + RemoteTimeoutMargin;

    /// <summary>The line the remote login shell runs: the wrapper plus the argument list, every word quoted by <see cref="PosixShell.Quote"/>.</summary>
    /// <exception cref="ArgumentException">The quoted line reaches <see cref="PosixShell.MaxCommandLineBytes"/>.</exception>
    public static string BuildCommandLine(IReadOnlyList<string> arguments, TimeSpan? remoteTimeout)
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

    /// <summary>The command that ends process group <paramref name="processGroup"/> on the host: TERM, then KILL after 5 s.</summary>
    public static CommandSpec KillCommand(int processGroup) =>
        new("sh", "-c", KillScript, "rt", processGroup.ToString(CultureInfo.InvariantCulture))
        {
            Timeout = TimeSpan.FromSeconds(15),
            ThrowOnFailure = false,
        };
}
