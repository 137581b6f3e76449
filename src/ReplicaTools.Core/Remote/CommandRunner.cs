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
        var stdoutTask = ReadAllAsync(process.StandardOutput);
        var stdinTask = FeedAsync(process.StandardInput, command.StandardInput);

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
        var stdout = await stdoutTask.WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
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

    private static async Task FeedAsync(Stream stdin, byte[]? input)
    {
        try
        {
            if (input is { Length: > 0 })
            {
                await stdin.WriteAsync(input).ConfigureAwait(false);
            }

            stdin.Close();
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            // The command exited without reading all its input; its exit code tells the story.
        }
    }
}
