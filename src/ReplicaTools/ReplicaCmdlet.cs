using System.Collections.Concurrent;
using System.Management.Automation;
using ReplicaTools.Core;

namespace ReplicaTools;

/// <summary>
/// Base of every ReplicaTools cmdlet. Core operations are async and report from worker threads; PowerShell only
/// accepts Write-* calls on the pipeline thread, so <see cref="Run{T}"/> runs the operation in the background and
/// pumps its verbose, warning and progress messages here. Ctrl+C cancels the operation (and its remote commands).
/// </summary>
public abstract class ReplicaCmdlet : PSCmdlet
{
    private readonly CancellationTokenSource stopping = new();

    protected CancellationToken StopToken => stopping.Token;

    protected override void StopProcessing() => stopping.Cancel();

    /// <summary>Runs a core operation, pumping its messages; core errors become ErrorRecords (terminating, by default).</summary>
    protected T Run<T>(Func<CancellationToken, Task<T>> operation)
    {
        using var messages = new BlockingCollection<Action>();
        var reporter = new PumpReporter(messages, this);
        Task<T> task;
        using (OperationContext.Use(reporter))
        {
            task = Task.Run(() => operation(stopping.Token));
        }

        task.ContinueWith(_ => messages.CompleteAdding(), TaskScheduler.Default);
        foreach (var message in messages.GetConsumingEnumerable())
        {
            message();
        }

        try
        {
            return task.GetAwaiter().GetResult();
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            throw new PipelineStoppedException();
        }
    }

    protected void Run(Func<CancellationToken, Task> operation) => Run<bool>(async token =>
    {
        await operation(token).ConfigureAwait(false);
        return true;
    });

    /// <summary>Runs an operation for one input item; a core failure is written as a non-terminating error and null returned.</summary>
    protected T? TryRun<T>(Func<CancellationToken, Task<T>> operation, object? target = null)
        where T : class
    {
        try
        {
            return Run(operation);
        }
        catch (Exception ex) when (IsReportable(ex))
        {
            WriteError(ToErrorRecord(ex, target));
            return null;
        }
    }

    protected bool TryRun(Func<CancellationToken, Task> operation, object? target = null) =>
        TryRun<object>(async token =>
        {
            await operation(token).ConfigureAwait(false);
            return true;
        }, target) is not null;

    /// <summary>
    /// Checks a mandatory parameter that can be bound from a piped object's property. Such parameters carry no
    /// null-rejecting validation attributes: PowerShell would then fail the binding with a parameter-validation error
    /// about a property the user never set. The check lives here instead, with the module's own error; false (and a
    /// non-terminating MissingArgument error) when the value is null, an empty string or an empty array.
    /// </summary>
    protected bool HasArgument(object? value, string parameterName)
    {
        var empty = value switch
        {
            null => true,
            string text => text.Length == 0,
            Array array => array.Length == 0 || array.Cast<object?>().All(item => item is null or string { Length: 0 }),
            _ => false,
        };
        if (empty)
        {
            WriteError(new ErrorRecord(
                new ArgumentException($"-{parameterName} is empty. Pass -{parameterName}, or pipe an object whose {parameterName} property is set.", parameterName),
                "MissingArgument",
                ErrorCategory.InvalidArgument,
                null));
        }

        return !empty;
    }

    /// <summary>An optional parameter bound from a piped object: an empty string means not given.</summary>
    protected static string? Given(string? value) => string.IsNullOrEmpty(value) ? null : value;

    protected void ThrowTerminating(Exception ex, object? target = null) => ThrowTerminatingError(ToErrorRecord(ex, target));

    /// <summary>Writes a report (-ReportPath) to a local file; a path that cannot be written is a non-terminating ReportNotWritten error.</summary>
    protected void WriteReport(string reportPath, string content)
    {
        var path = GetUnresolvedProviderPathFromPSPath(reportPath);
        try
        {
            File.WriteAllText(path, content);
            WriteVerbose($"Report written to {path}.");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            WriteError(new ErrorRecord(ex, "ReportNotWritten", ErrorCategory.WriteError, path));
        }
    }

    protected static bool IsReportable(Exception ex) => ex is ReplicaException or ArgumentException or InvalidOperationException or IOException or TimeoutException or KeyNotFoundException;

    protected static ErrorRecord ToErrorRecord(Exception ex, object? target = null)
    {
        if (ex is ReplicaException replica)
        {
            var record = new ErrorRecord(ex, replica.ErrorId, MapCategory(replica.Category), replica.Target ?? target);
            if (replica.RecommendedAction is not null)
            {
                record.ErrorDetails = new ErrorDetails(ex.Message) { RecommendedAction = replica.RecommendedAction };
            }

            return record;
        }

        var (id, category) = ex switch
        {
            ArgumentException => ("InvalidArgument", ErrorCategory.InvalidArgument),
            KeyNotFoundException => ("NotFound", ErrorCategory.ObjectNotFound),
            TimeoutException => ("Timeout", ErrorCategory.OperationTimeout),
            IOException => ("IOError", ErrorCategory.ReadError),
            _ => ("InvalidOperation", ErrorCategory.InvalidOperation),
        };
        return new ErrorRecord(ex, id, category, target);
    }

    internal static ErrorCategory MapCategory(ReplicaErrorCategory category) =>
        Enum.TryParse<ErrorCategory>(category.ToString(), out var mapped) ? mapped : ErrorCategory.NotSpecified;

    private sealed class PumpReporter(BlockingCollection<Action> messages, Cmdlet cmdlet) : IOperationReporter
    {
        public void Verbose(string message) => Post(cmdlet => cmdlet.WriteVerbose(message));

        public void Warning(string message) => Post(cmdlet => cmdlet.WriteWarning(message));

        public void Progress(OperationProgress progress) => Post(cmdlet =>
        {
            var record = new ProgressRecord(progress.ActivityId, progress.Activity, string.IsNullOrEmpty(progress.Status) ? "Working" : progress.Status)
            {
                PercentComplete = Math.Clamp(progress.PercentComplete, -1, 100),
                SecondsRemaining = progress.SecondsRemaining,
                RecordType = progress.Completed ? ProgressRecordType.Completed : ProgressRecordType.Processing,
            };
            cmdlet.WriteProgress(record);
        });

        private void Post(Action<Cmdlet> write)
        {
            try
            {
                messages.Add(() => write(cmdlet));
            }
            catch (InvalidOperationException)
            {
                // The operation finished; a straggling message has nowhere to go.
            }
        }
    }
}
