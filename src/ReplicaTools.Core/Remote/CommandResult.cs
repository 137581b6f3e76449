namespace ReplicaTools.Core.Remote;

/// <summary>What a finished command did, on which host.</summary>
public sealed class CommandResult
{
    public CommandResult(string hostName, IReadOnlyList<string> arguments, int exitCode, string standardOutput, string standardError, DateTimeOffset startTime, TimeSpan duration)
    {
        HostName = hostName;
        Arguments = arguments;
        ExitCode = exitCode;
        StandardOutput = standardOutput;
        StandardError = standardError;
        StartTime = startTime;
        Duration = duration;
    }

    public string HostName { get; }

    public IReadOnlyList<string> Arguments { get; }

    public string CommandLine => PosixShell.Join(Arguments);

    public int ExitCode { get; }

    public string StandardOutput { get; }

    public string StandardError { get; }

    public DateTimeOffset StartTime { get; }

    public TimeSpan Duration { get; }

    public bool Succeeded => ExitCode == 0;

    public override string ToString() => $"[{HostName}] {CommandLine} -> {ExitCode}";
}
