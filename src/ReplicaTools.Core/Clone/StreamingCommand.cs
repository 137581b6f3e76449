using System.Globalization;
using System.Text;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// Runs a long command on a host while reading its standard output line by line (progress), with a timeout that
/// also holds on the host (the command runs under timeout(1)), and kills it on cancellation.
/// </summary>
internal static class StreamingCommand
{
    public static async Task<CommandResult> RunAsync(IReplicaHost host, IReadOnlyList<string> arguments, TimeSpan timeout, Action<string> onLine,
        byte[]? standardInput, CancellationToken cancellationToken)
    {
        var seconds = Math.Max(1, (long)Math.Ceiling(timeout.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        var guarded = new List<string> { "timeout", "-k", "10", seconds };
        guarded.AddRange(arguments);
        var spec = new CommandSpec(guarded);
        OperationContext.Reporter.Verbose($"[{host.Name}] {spec.CommandLine}");
        var started = DateTimeOffset.Now;
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        await using var process = await host.StartAsync(spec, cancellationToken).ConfigureAwait(false);
        var output = new StringBuilder();
        var reader = Task.Run(async () =>
        {
            var buffer = new byte[4096];
            var line = new StringBuilder();
            try
            {
                int read;
                while ((read = await process.StandardOutput.ReadAsync(buffer, CancellationToken.None).ConfigureAwait(false)) > 0)
                {
                    foreach (var c in Encoding.UTF8.GetString(buffer, 0, read))
                    {
                        if (c is '\n' or '\r')
                        {
                            if (line.Length > 0)
                            {
                                var text = line.ToString();
                                lock (output)
                                {
                                    output.AppendLine(text);
                                }

                                onLine(text);
                                line.Clear();
                            }
                        }
                        else
                        {
                            line.Append(c);
                        }
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException)
            {
            }

            if (line.Length > 0)
            {
                lock (output)
                {
                    output.AppendLine(line.ToString());
                }

                onLine(line.ToString());
            }
        }, CancellationToken.None);

        try
        {
            if (standardInput is { Length: > 0 })
            {
                await process.StandardInput.WriteAsync(standardInput, cancellationToken).ConfigureAwait(false);
            }

            process.StandardInput.Close();
        }
        catch (IOException)
        {
            // Exited early; the exit code tells.
        }

        int exitCode;
        try
        {
            exitCode = await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            await process.KillAsync().ConfigureAwait(false);
            throw;
        }

        await Task.WhenAny(reader, Task.Delay(TimeSpan.FromSeconds(5), CancellationToken.None)).ConfigureAwait(false);
        string stdout;
        lock (output)
        {
            stdout = output.ToString();
        }

        var result = new CommandResult(host.Name, spec.Arguments, exitCode, stdout, process.StandardError, started, stopwatch.Elapsed);
        if (exitCode == 124)
        {
            throw new CommandTimeoutException(host.Name, spec.CommandLine, timeout);
        }

        if (exitCode == 127 && result.StandardError.Contains("No such file", StringComparison.Ordinal))
        {
            throw new ProgramNotFoundException(host.Name, arguments[0], result.StandardError);
        }

        return result;
    }
}
