using System.Diagnostics;

namespace ReplicaTools.TestLab;

/// <summary>
/// An nbdkit server on a Unix socket in the caller's directory (no port to race for), e.g. a slow pattern disk:
/// <c>StartAsync(dir, "--filter=rate", "pattern", "size=1G", "rate=20M")</c>. Killed on Dispose, and with the test process.
/// </summary>
public sealed class NbdKitServer : IDisposable
{
    private readonly Process process;

    private NbdKitServer(Process process, string socketPath)
    {
        this.process = process;
        SocketPath = socketPath;
    }

    public string SocketPath { get; }

    public string Uri => $"nbd+unix:///?socket={SocketPath}";

    public int ProcessId => process.Id;

    public static async Task<NbdKitServer> StartAsync(string directory, params string[] pluginAndArguments)
    {
        Tool.Require("nbdkit");
        var socketPath = Path.Combine(directory, $"nbdkit-{Guid.NewGuid().ToString("N")[..8]}.sock");
        var startInfo = new ProcessStartInfo("nbdkit")
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (var argument in new[] { "-f", "--exit-with-parent", "-U", socketPath }.Concat(pluginAndArguments))
        {
            startInfo.ArgumentList.Add(argument);
        }

        var process = Process.Start(startInfo)!;
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        var server = new NbdKitServer(process, socketPath);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!File.Exists(socketPath))
        {
            if (process.HasExited || DateTime.UtcNow > deadline)
            {
                server.Dispose();
                throw new InvalidOperationException($"nbdkit {string.Join(' ', pluginAndArguments)} did not start (exit code {(process.HasExited ? process.ExitCode : -1)}).");
            }

            await Task.Delay(50);
        }

        return server;
    }

    public void Dispose()
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
        }

        process.Dispose();
        try
        {
            File.Delete(SocketPath);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Facts about local processes and ports, as the NBD tests check them.</summary>
public static class LocalProcesses
{
    /// <summary>True if <paramref name="pid"/> runs and is not a zombie (killed daemons stay zombies until PID 1 reaps them).</summary>
    public static bool IsAlive(int pid)
    {
        try
        {
            var status = File.ReadAllLines($"/proc/{pid}/status");
            var state = status.FirstOrDefault(l => l.StartsWith("State:", StringComparison.Ordinal));
            return state is not null && !state.Contains('Z');
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>The argument list of a process, or empty if it is gone.</summary>
    public static IReadOnlyList<string> CommandLine(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return Array.Empty<string>();
        }
    }

    /// <summary>Processes whose argument list contains <paramref name="argument"/> exactly (for unique paths this test created).</summary>
    public static IReadOnlyList<int> FindByArgument(string argument)
    {
        var found = new List<int>();
        foreach (var directory in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(directory), out var pid) && pid != Environment.ProcessId && CommandLine(pid).Contains(argument) && IsAlive(pid))
            {
                found.Add(pid);
            }
        }

        return found;
    }

    public static async Task<bool> WaitGoneAsync(int pid, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (IsAlive(pid))
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }

            await Task.Delay(50);
        }

        return true;
    }

    public static async Task<bool> IsPortOpenAsync(string address, int port)
    {
        using var client = new System.Net.Sockets.TcpClient();
        try
        {
            await client.ConnectAsync(System.Net.IPAddress.Parse(address), port).WaitAsync(TimeSpan.FromSeconds(5));
            return true;
        }
        catch (Exception ex) when (ex is System.Net.Sockets.SocketException or TimeoutException)
        {
            return false;
        }
    }
}
