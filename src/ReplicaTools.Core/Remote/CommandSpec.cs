namespace ReplicaTools.Core.Remote;

/// <summary>A command to run on a host: an argument list (never a shell string) plus how to run it.</summary>
public sealed class CommandSpec
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(5);

    public CommandSpec(IEnumerable<string> arguments)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        Arguments = arguments.ToArray();
        if (Arguments.Count == 0)
        {
            throw new ArgumentException("A command needs at least the program name.", nameof(arguments));
        }

        for (var i = 0; i < Arguments.Count; i++)
        {
            if (Arguments[i] is null)
            {
                throw new ArgumentException($"Argument {i} of the command is null.", nameof(arguments));
            }
        }

        if (string.IsNullOrEmpty(Arguments[0]))
        {
            throw new ArgumentException("The program name (the first argument) is empty.", nameof(arguments));
        }
    }

    public CommandSpec(params string[] arguments)
        : this((IEnumerable<string>)arguments)
    {
    }

    public IReadOnlyList<string> Arguments { get; }

    /// <summary>How long the command may run before it is killed (locally and on the remote side).</summary>
    public TimeSpan Timeout { get; init; } = DefaultTimeout;

    /// <summary>Bytes written to the command's standard input, then closed. Secrets travel here, never in arguments.</summary>
    public byte[]? StandardInput { get; init; }

    /// <summary>Exit codes that count as success. Default: only 0.</summary>
    public IReadOnlyCollection<int> SuccessExitCodes { get; init; } = new[] { 0 };

    /// <summary>When false, a failing exit code is returned in the result rather than thrown.</summary>
    public bool ThrowOnFailure { get; init; } = true;

    /// <summary>
    /// Keep the command's standard input open (after <see cref="StandardInput"/>, if any) until it exits, instead of closing
    /// it at once: its end-of-file then means the controlling process or connection is gone (see <see cref="ControllerGuard"/>).
    /// </summary>
    public bool KeepStandardInputOpen { get; init; }

    /// <summary>
    /// Called with each line of standard output while the command runs (split at LF or CR, as progress meters print),
    /// for progress. With a callback set, only the last 256 KiB of output are kept in the result.
    /// </summary>
    public Action<string>? OnOutputLine { get; init; }

    /// <summary>This command with a callback for its output lines.</summary>
    public CommandSpec WithOutputLines(Action<string> onOutputLine) => new(Arguments)
    {
        Timeout = Timeout,
        StandardInput = StandardInput,
        SuccessExitCodes = SuccessExitCodes,
        ThrowOnFailure = ThrowOnFailure,
        KeepStandardInputOpen = KeepStandardInputOpen,
        OnOutputLine = onOutputLine,
    };

    /// <summary>This command with <paramref name="input"/> on its standard input (for plans whose input is decided when they run).</summary>
    public CommandSpec WithStandardInput(byte[] input) => new(Arguments)
    {
        Timeout = Timeout,
        StandardInput = input,
        SuccessExitCodes = SuccessExitCodes,
        ThrowOnFailure = ThrowOnFailure,
        OnOutputLine = OnOutputLine,
    };

    /// <summary>The command line as a shell would see it: for -WhatIf, verbose output and error messages.</summary>
    public string CommandLine => PosixShell.Join(Arguments);

    public override string ToString() => CommandLine;
}
