using System.Diagnostics;
using System.Text;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Nbd;

/// <summary>
/// Runs a long command through <see cref="IReplicaHost.StartAsync"/> and hands each line of its standard output
/// (split at LF or CR, as progress meters print) to a callback while it runs. Same failure semantics as
/// <see cref="IReplicaHost.RunAsync"/>: cancellation and timeout kill it on its host, a failing exit code throws.
/// </summary>
internal static class StreamingCommand
{
    private const int MaxKeptOutput = 256 * 1024;

    public static async Task<CommandResult> RunAsync(IReplicaHost host, CommandSpec command, Action<string> onLine, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        OperationContext.Reporter.Verbose($"[{host.Name}] {CommandFailedException.Shorten(command.CommandLine)}");
        var startTime = DateTimeOffset.Now;
        var stopwatch = Stopwatch.StartNew();

        await using var process = await host.StartAsync(command, cancellationToken).ConfigureAwait(false);
        var output = new StringBuilder();
        var reader = Task.Run(() => PumpLinesAsync(process.StandardOutput, output, onLine), CancellationToken.None);
        try
        {
            if (command.StandardInput is { Length: > 0 } input)
            {
                await process.StandardInput.WriteAsync(input, cancellationToken).ConfigureAwait(false);
            }

            process.StandardInput.Close();
        }
        catch (IOException)
        {
            // The command exited without reading its input; its exit code tells the story.
        }

        using var timeout = command.Timeout == System.Threading.Timeout.InfiniteTimeSpan ? new CancellationTokenSource() : new CancellationTokenSource(command.Timeout);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        int exitCode;
        try
        {
            exitCode = await process.WaitForExitAsync(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            await process.KillAsync().ConfigureAwait(false);
            if (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException($"On host '{host.Name}', the command '{CommandFailedException.Shorten(command.CommandLine)}' was cancelled and killed.", cancellationToken);
            }

            throw new CommandTimeoutException(host.Name, command.CommandLine, command.Timeout);
        }

        try
        {
            await reader.WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // A daemonised child holds the output open; what arrived is enough.
        }

        string stdout;
        lock (output)
        {
            stdout = output.ToString();
        }

        var result = new CommandResult(host.Name, command.Arguments, exitCode, stdout, process.StandardError, startTime, stopwatch.Elapsed);
        if (!command.SuccessExitCodes.Contains(exitCode))
        {
            if (exitCode == 127 && (result.StandardError.Contains("not found", StringComparison.Ordinal) || result.StandardError.Contains("No such file or directory", StringComparison.Ordinal)))
            {
                throw new ProgramNotFoundException(host.Name, command.Arguments[0], result.StandardError);
            }

            if (command.ThrowOnFailure)
            {
                throw new CommandFailedException(result);
            }
        }

        return result;
    }

    private static async Task PumpLinesAsync(Stream stream, StringBuilder output, Action<string> onLine)
    {
        var decoder = Encoding.UTF8.GetDecoder();
        var bytes = new byte[16384];
        var chars = new char[Encoding.UTF8.GetMaxCharCount(bytes.Length)];
        var line = new StringBuilder();
        try
        {
            int read;
            while ((read = await stream.ReadAsync(bytes).ConfigureAwait(false)) > 0)
            {
                var count = decoder.GetChars(bytes, 0, read, chars, 0);
                lock (output)
                {
                    output.Append(chars, 0, count);
                    if (output.Length > MaxKeptOutput)
                    {
                        output.Remove(0, output.Length - MaxKeptOutput);
                    }
                }

                for (var i = 0; i < count; i++)
                {
                    if (chars[i] is '\n' or '\r')
                    {
                        Deliver(line, onLine);
                    }
                    else
                    {
                        line.Append(chars[i]);
                    }
                }
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            // Killed; what arrived was delivered.
        }

        Deliver(line, onLine);
    }

    private static void Deliver(StringBuilder line, Action<string> onLine)
    {
        if (line.Length == 0)
        {
            return;
        }

        var text = line.ToString();
        line.Clear();
        try
        {
            onLine(text);
        }
        catch (Exception ex) when (ex is FormatException or OverflowException or ArgumentException)
        {
            OperationContext.Reporter.Verbose($"Could not interpret the output line '{text}': {ex.Message}");
        }
    }
}
