using System.Diagnostics;
using System.Text;

namespace ReplicaTools.Core.Remote;

/// <summary>Runs a started command to completion: feeds stdin, collects output, enforces timeout and cancellation.</summary>
internal static class CommandRunner
{
    public static async Task<CommandResult> RunAsync(string hostName, CommandSpec command, Func<Task<IHostProcess>> start, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        OperationContext.Reporter.Verbose($"[{hostName}] {CommandFailedException.Shorten(command.CommandLine)}");
        var startTime = DateTimeOffset.Now;
        var stopwatch = Stopwatch.StartNew();

        await using var process = await start().ConfigureAwait(false);
        var stdoutTask = command.OnOutputLine is null ? ReadAllAsync(process.StandardOutput) : ReadLinesAsync(process.StandardOutput, command.OnOutputLine);
        var stdinTask = FeedAsync(process.StandardInput, command.StandardInput, close: !command.KeepStandardInputOpen);

        using var timeout = new CancellationTokenSource(command.Timeout);
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
                throw new OperationCanceledException($"On host '{hostName}', the command '{CommandFailedException.Shorten(command.CommandLine)}' was cancelled and killed.", cancellationToken);
            }

            throw new CommandTimeoutException(hostName, command.CommandLine, command.Timeout);
        }

        await stdinTask.ConfigureAwait(false);
        string stdout;
        try
        {
            stdout = await stdoutTask.WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // A daemonised child holds the output open; the command itself has ended.
            stdout = string.Empty;
        }

        var result = new CommandResult(hostName, command.Arguments, exitCode, stdout, process.StandardError, startTime, stopwatch.Elapsed);

        if (!command.SuccessExitCodes.Contains(exitCode))
        {
            if (exitCode == 127 && (result.StandardError.Contains("not found", StringComparison.Ordinal) || result.StandardError.Contains("No such file or directory", StringComparison.Ordinal)))
            {
                throw new ProgramNotFoundException(hostName, command.Arguments[0], result.StandardError);
            }

            if (command.ThrowOnFailure)
            {
                throw new CommandFailedException(result);
            }
        }

        return result;
    }

    private static async Task<string> ReadAllAsync(Stream stream)
    {
        using var buffer = new MemoryStream();
        try
        {
            await stream.CopyToAsync(buffer).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            // Killed; keep what arrived.
        }

        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private const int MaxKeptStreamedOutput = 256 * 1024;

    /// <summary>Hands each output line to <paramref name="onLine"/> as it arrives; keeps the tail of the output.</summary>
    private static async Task<string> ReadLinesAsync(Stream stream, Action<string> onLine)
    {
        var decoder = Encoding.UTF8.GetDecoder();
        var bytes = new byte[16384];
        var chars = new char[Encoding.UTF8.GetMaxCharCount(bytes.Length)];
        var output = new StringBuilder();
        var line = new StringBuilder();
        try
        {
            int read;
            while ((read = await stream.ReadAsync(bytes).ConfigureAwait(false)) > 0)
            {
                var count = decoder.GetChars(bytes, 0, read, chars, 0);
                output.Append(chars, 0, count);
                if (output.Length > MaxKeptStreamedOutput)
                {
                    output.Remove(0, output.Length - MaxKeptStreamedOutput);
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
        return output.ToString();
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

    private static async Task FeedAsync(Stream stdin, byte[]? input, bool close)
    {
        try
        {
            if (input is { Length: > 0 })
            {
                await stdin.WriteAsync(input).ConfigureAwait(false);
                await stdin.FlushAsync().ConfigureAwait(false);
            }

            // Kept open, it closes when the process object is disposed, or when this process dies.
            if (close)
            {
                stdin.Close();
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            // The command exited without reading all its input; its exit code tells the story.
        }
    }
}
