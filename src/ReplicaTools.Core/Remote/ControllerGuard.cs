namespace ReplicaTools.Core.Remote;

/// <summary>
/// The host-side guard of long-running remote children (copiers, exports): the command runs under a small POSIX sh
/// wrapper on its host that watches the command's standard input, which the controller keeps open and never writes.
/// End-of-file there means the controller is gone (the PowerShell process exited or was killed, or the SSH connection
/// dropped): the guard then ends the child (SIGTERM, SIGKILL 5 s later). Without it, a child that does not happen to
/// write to its dead connection keeps running after its controller, e.g. a copier still writing a destination that a
/// retry is about to write too.
/// </summary>
/// <remarks>
/// With a lock path, the guard and the child hold a shared flock(2) on LOCK.children for as long as either lives;
/// <see cref="RemoteLock"/> releases LOCK only once that is free, so a lock is never free while a child of its run
/// still runs. The child's standard input is /dev/null; its output and exit code are the guard's.
/// </remarks>
public static class ControllerGuard
{
    /// <summary>The guard: <c>sh -c SCRIPT rt-guard LOCKPATH-OR-EMPTY COMMAND ARGS...</c>.</summary>
    public const string Script =
        "l=$1; shift; " +
        "if [ -n \"$l\" ]; then exec 8>>\"$l.children\" && flock -s 8 || exit 75; fi; " +
        "exec 3<&0; " +
        "\"$@\" 0</dev/null 3<&- & c=$!; " +
        "{ while read -r _; do :; done; kill -TERM \"$c\" 2>/dev/null; sleep 5; kill -KILL \"$c\" 2>/dev/null; } 0<&3 >/dev/null 2>&1 8>&- & w=$!; " +
        "exec 3<&-; " +
        "wait \"$c\"; s=$?; kill \"$w\" 2>/dev/null; exit \"$s\"";

    /// <summary>The suffix of the file whose shared lock a guarded child of a locked run holds.</summary>
    public const string ChildrenSuffix = ".children";

    /// <summary>
    /// <paramref name="command"/> under the guard, with standard input kept open by the runner. With
    /// <paramref name="lockPath"/> (a <see cref="RemoteLock"/> on the same host), the child counts as that lock's run.
    /// </summary>
    public static CommandSpec Wrap(CommandSpec command, string? lockPath = null)
    {
        ArgumentNullException.ThrowIfNull(command);
        if (command.StandardInput is not null)
        {
            throw new ArgumentException("A guarded command cannot take standard input: the guard reads it to notice its controller's end.", nameof(command));
        }

        return new CommandSpec(new[] { "sh", "-c", Script, "rt-guard", lockPath ?? string.Empty }.Concat(command.Arguments))
        {
            Timeout = command.Timeout,
            SuccessExitCodes = command.SuccessExitCodes,
            ThrowOnFailure = command.ThrowOnFailure,
            OnOutputLine = command.OnOutputLine,
            KeepStandardInputOpen = true,
        };
    }

    /// <summary>The command a guarded spec runs (for messages and tests): its arguments after the guard's.</summary>
    public static IReadOnlyList<string> Unwrap(CommandSpec command) =>
        IsGuarded(command) ? command.Arguments.Skip(5).ToArray() : command.Arguments;

    public static bool IsGuarded(CommandSpec command) =>
        command.Arguments.Count > 5 && command.Arguments[0] == "sh" && command.Arguments[2] == Script;
}
