using System.ComponentModel;
using System.Diagnostics;
using System.Text;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// A local child process (the command itself, or the ssh client carrying it) with raw stdin/stdout streams and
/// captured stderr. For SSH commands it also picks the remote process id out of stderr (see <see cref="SshHost"/>).
/// </summary>
internal sealed class SpawnedProcess : IHostProcess
{
    /// <summary>First byte of the line the remote wrapper prints before it runs the command: ASCII record separator.</summary>
    internal const string PidMarker = "\u001ert-pid:";

    private readonly Process process;
    private readonly MemoryStream stderr = new();
    private readonly object stderrLock = new();
    private readonly Task stderrPump;
    private readonly Func<int, Task>? killRemote;
    private readonly Func<int, string, bool, int>? interpretExit;
    private readonly TaskCompletionSource<int> remotePid = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int killed;

    private SpawnedProcess(string hostName, IReadOnlyList<string> arguments, Process process, bool scanForPidMarker, Func<int, Task>? killRemote, Func<int, string, bool, int>? interpretExit)
    {
        HostName = hostName;
        Arguments = arguments;
        this.process = process;
        this.killRemote = killRemote;
        this.interpretExit = interpretExit;
        if (!scanForPidMarker)
        {
            remotePid.TrySetResult(process.Id);
        }

        stderrPump = Task.Run(() => PumpStandardErrorAsync(scanForPidMarker));
    }

    public string HostName { get; }

    public IReadOnlyList<string> Arguments { get; }

    public Stream StandardInput => process.StandardInput.BaseStream;

    public Stream StandardOutput => process.StandardOutput.BaseStream;

    public string StandardError
    {
        get
        {
            lock (stderrLock)
            {
                return Encoding.UTF8.GetString(stderr.GetBuffer(), 0, (int)stderr.Length);
            }
        }
    }

    public bool HasExited => process.HasExited;

    /// <summary>True once the command is known to have started on the host (the remote wrapper reported its pid).</summary>
    public bool Started => remotePid.Task.IsCompletedSuccessfully;

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

        if (killRemote is not null && remotePid.Task.IsCompletedSuccessfully && !process.HasExited)
        {
            try
            {
                await killRemote(remotePid.Task.Result).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ReplicaException or IOException or InvalidOperationException)
            {
                OperationContext.Reporter.Warning($"Could not kill the command on host '{HostName}' (remote pid {remotePid.Task.Result}): {ex.Message}");
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

    private async Task PumpStandardErrorAsync(bool scanForPidMarker)
    {
        var stream = process.StandardError.BaseStream;
        var buffer = new byte[8192];
        var pending = new List<byte>();
        var scanning = scanForPidMarker;
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer).ConfigureAwait(false)) > 0)
            {
                if (!scanning)
                {
                    Append(buffer.AsSpan(0, read));
                    continue;
                }

                pending.AddRange(buffer.AsSpan(0, read).ToArray());
                scanning = ScanForMarker(pending);
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            // The process went away; what was read is kept.
        }
        finally
        {
            if (pending.Count > 0)
            {
                Append(pending.ToArray());
            }

            remotePid.TrySetCanceled();
        }
    }

    /// <summary>Moves complete lines from <paramref name="pending"/> to stderr until the marker line; returns whether to keep scanning.</summary>
    private bool ScanForMarker(List<byte> pending)
    {
        while (true)
        {
            var newline = pending.IndexOf((byte)'\n');
            if (newline < 0)
            {
                if (pending.Count > 65536)
                {
                    Append(pending.ToArray());
                    pending.Clear();
                }

                return true;
            }

            var line = pending.GetRange(0, newline).ToArray();
            pending.RemoveRange(0, newline + 1);
            var text = Encoding.UTF8.GetString(line);
            if (text.StartsWith(PidMarker, StringComparison.Ordinal) && int.TryParse(text.AsSpan(PidMarker.Length), out var pid))
            {
                remotePid.TrySetResult(pid);
                Append(pending.ToArray());
                pending.Clear();
                return false;
            }

            Append(line);
            Append("\n"u8);
        }
    }

    private void Append(ReadOnlySpan<byte> bytes)
    {
        lock (stderrLock)
        {
            stderr.Write(bytes);
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
