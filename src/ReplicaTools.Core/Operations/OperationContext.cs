namespace ReplicaTools.Core;

/// <summary>Progress of a long operation, as PowerShell's Write-Progress wants it.</summary>
public sealed record OperationProgress(string Activity, string Status, int PercentComplete = -1, int SecondsRemaining = -1, int ActivityId = 1, bool Completed = false);

/// <summary>Where the core reports what it does; the cmdlet layer turns these into Write-Verbose/Warning/Progress.</summary>
public interface IOperationReporter
{
    void Verbose(string message);

    void Warning(string message);

    void Progress(OperationProgress progress);
}

/// <summary>
/// The reporter of the operation running on this logical call chain. Ambient (AsyncLocal) so that deep layers,
/// such as the command runner logging every command line, need not thread it through every signature.
/// </summary>
public static class OperationContext
{
    private static readonly AsyncLocal<IOperationReporter?> CurrentReporter = new();

    public static IOperationReporter Reporter => CurrentReporter.Value ?? NullReporter.Instance;

    public static IDisposable Use(IOperationReporter reporter)
    {
        var previous = CurrentReporter.Value;
        CurrentReporter.Value = reporter;
        return new Restore(previous);
    }

    private sealed class Restore(IOperationReporter? previous) : IDisposable
    {
        public void Dispose() => CurrentReporter.Value = previous;
    }

    private sealed class NullReporter : IOperationReporter
    {
        public static readonly NullReporter Instance = new();

        public void Verbose(string message)
        {
        }

        public void Warning(string message)
        {
        }

        public void Progress(OperationProgress progress)
        {
        }
    }
}
