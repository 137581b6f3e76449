using System.ComponentModel;
using System.Diagnostics;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// A local child process (the command itself, or the ssh client carrying it) with raw stdin/stdout streams and
/// captured stderr. For SSH commands it also picks the remote process id out of stderr (see <see cref="SshHost"/>).
/// </summary>
internal sealed class SpawnedProcess : IHostProcess
{
    private readonly Process process;
    private readonly StderrCapture stderr;
    private readonly Task stderrPump;
    private readonly Func<int, Task>? killRemote;
    private readonly Func<int, string, bool, int>? interpretExit;
    private int killed;

    private SpawnedProcess(string hostName, IReadOnlyList<string> arguments, Process process, bool scanForPidMarker, Func<int, Task>? killRemote, Func<int, string, bool, int>? interpretExit)
    {
        HostName = hostName;
        Arguments = arguments;
        this.process = process;
        this.killRemote = killRemote;
        this.interpretExit = interpretExit;
        stderr = new StderrCapture(scanForPidMarker, process.Id);
        stderrPump = Task.Run(PumpStandardErrorAsync);
    }

    public string HostName { get; }

    public IReadOnlyList<string> Arguments { get; }

    public Stream StandardInput => process.StandardInput.BaseStream;

    public Stream StandardOutput => process.StandardOutput.BaseStream;

    public string StandardError => stderr.Text;

    public bool HasExited => process.HasExited;

    /// <summary>True once the command is known to have started on the host (the remote wrapper reported its pid).</summary>
    public bool Started => stderr.Started;

    /// <param name="interpretExit">Given (exit code, stderr, started), returns the command's exit code or throws a transport error.</param>
    public static SpawnedProcess Start(string hostName, IReadOnlyList<string> logicalArguments, string fileName, IEnumerable<string> processArguments,
        bool scanForPidMarker = false, Func<int, Task>? killRemote = null, Func<int, string, bool, int>? interpretExit = null)
    {
        var startInfo = new ProcessStartInfo(fileName)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            CreateNoWindow = true,
        };
        foreach (var argument in processArguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        var process = new Process { StartInfo = startInfo };
        try
        {
            process.Start();
        }
        catch (Win32Exception ex)
        {
            process.Dispose();
            throw new ProgramNotFoundException(hostName, fileName, ex.Message);
        }

        return new SpawnedProcess(hostName, logicalArguments, process, scanForPidMarker, killRemote, interpretExit);
    }

    public async Task<int> WaitForExitAsync(CancellationToken cancellationToken = default)
    {
        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);

        // A daemonising child (ssh -f) may hold stderr open after the parent exits: do not wait for EOF forever.
        await Task.WhenAny(stderrPump, Task.Delay(TimeSpan.FromSeconds(2), CancellationToken.None)).ConfigureAwait(false);
        var exitCode = process.ExitCode;
        return interpretExit is null ? exitCode : interpretExit(exitCode, StandardError, Started);
    }

    public async Task KillAsync()
    {
        if (Interlocked.Exchange(ref killed, 1) == 1)
        {
            return;
        }

        if (killRemote is not null && stderr.Started && !process.HasExited)
        {
            try
            {
                await killRemote(stderr.ProcessGroup).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ReplicaException or IOException or InvalidOperationException)
            {
                OperationContext.Reporter.Warning($"Could not kill the command on host '{HostName}' (remote pid {stderr.ProcessGroup}): {ex.Message}");
            }
        }

        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
            // Exited in the meantime.
        }

        try
        {
            await process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            OperationContext.Reporter.Warning($"The local process for host '{HostName}' did not exit 10 s after it was killed.");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!process.HasExited)
        {
            await KillAsync().ConfigureAwait(false);
        }

        process.Dispose();
    }

    private async Task PumpStandardErrorAsync()
    {
        var stream = process.StandardError.BaseStream;
        var buffer = new byte[8192];
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer).ConfigureAwait(false)) > 0)
            {
                stderr.Write(buffer.AsSpan(0, read));
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            // The process went away; what was read is kept.
        }
        finally
        {
            stderr.Complete();
        }
    }
}

/// <summary>The program to run does not exist on the host.</summary>
public sealed class ProgramNotFoundException : ReplicaException
{
    public ProgramNotFoundException(string hostName, string program, string detail)
        : base("ProgramNotFound", ReplicaErrorCategory.NotInstalled, $"On host '{hostName}', the program '{program}' was not found ({detail.Trim()}).", hostName, program)
    {
        Program = program;
        RecommendedAction = $"Install the package that provides '{program}' on '{hostName}' (see the README's host requirements).";
    }

    public string Program { get; }
}
