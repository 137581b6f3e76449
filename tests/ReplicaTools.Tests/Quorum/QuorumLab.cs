using System.Text.Json.Nodes;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Quorum;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Quorum;

/// <summary>
/// Shared pieces of the quorum lab tests: a bare QEMU without disks (three QMP monitors: the module's, the test's, and
/// one for the event recorder), a private state directory for event files, and reads through the quorum node over
/// QEMU's own NBD server (started and stopped around each read: QEMU has one NBD server, and Test-QuorumDisk needs it).
/// </summary>
public sealed class QuorumLab : IAsyncDisposable
{
    public const long MiB = 1024 * 1024;

    private QuorumLab(string directory, QemuVm vm)
    {
        Directory = directory;
        Vm = vm;
    }

    public string Directory { get; }

    public QemuVm Vm { get; }

    public string StateDirectory => Path.Combine(Directory, "state");

    public VirtualMachine Machine => VirtualMachine.Open(ReplicaSession.Local, null, Vm.SocketPath);

    public QuorumDiskManager Manager => new(Machine) { StateDirectory = StateDirectory, ProbeTimeout = TimeSpan.FromSeconds(5) };

    public static async Task<QuorumLab> StartAsync(string prefix)
    {
        var directory = Path.Combine("/tmp", $"{prefix}-{Guid.NewGuid().ToString("N")[..8]}");
        System.IO.Directory.CreateDirectory(directory);
        var vm = await QemuVm.StartAsync(directory, "vm");
        return new QuorumLab(directory, vm);
    }

    public static QuorumDiskRequest Request(IEnumerable<string> replicas, int threshold = 2, long? size = 64 * MiB) => new()
    {
        Replicas = replicas.Select(r => new QuorumReplicaInput(r)).ToArray(),
        VoteThreshold = threshold,
        Size = size,
        ProbeTimeout = TimeSpan.FromSeconds(5),
    };

    /// <summary>Reads a range through the quorum node (as the guest would) and checks it holds <paramref name="pattern"/>: (read succeeded, pattern matched, qemu-io's output).</summary>
    public async Task<(bool Read, bool Matches, string Output)> ReadThroughQuorumAsync(string quorumNode, byte pattern, long offset, long length)
    {
        var url = await ExportQuorumAsync(quorumNode);
        try
        {
            return Read(url, pattern, offset, length, TimeSpan.FromSeconds(60));
        }
        finally
        {
            await UnexportQuorumAsync();
        }
    }

    /// <summary>Exports the quorum node read-only over QEMU's NBD server (test monitor); returns its URL.</summary>
    public async Task<string> ExportQuorumAsync(string quorumNode)
    {
        var socket = Path.Combine(Directory, "test-nbd.sock");
        await Vm.QmpAsync("nbd-server-start", new JsonObject { ["addr"] = new JsonObject { ["type"] = "unix", ["data"] = new JsonObject { ["path"] = socket } } });
        await Vm.QmpAsync("block-export-add", new JsonObject { ["type"] = "nbd", ["id"] = "test-read", ["node-name"] = quorumNode, ["name"] = "q", ["writable"] = false });
        return $"nbd+unix:///q?socket={socket}";
    }

    public async Task UnexportQuorumAsync()
    {
        try
        {
            await Vm.QmpAsync("block-export-del", new JsonObject { ["id"] = "test-read", ["mode"] = "hard" });
        }
        catch (Exception)
        {
            // Not added.
        }

        await Vm.QmpAsync("nbd-server-stop");
    }

    /// <summary>qemu-io read with pattern check, killed after <paramref name="timeout"/>: (read succeeded, pattern matched, output).</summary>
    public static (bool Read, bool Matches, string Output) Read(string url, byte pattern, long offset, long length, TimeSpan timeout)
    {
        var seconds = ((int)timeout.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var (code, stdout, stderr) = Tool.TryRun("timeout", new[] { "-s", "KILL", seconds, "qemu-io", "-r", "-f", "raw", "-c", $"read -P 0x{pattern:x2} {offset} {length}", url }, timeout + TimeSpan.FromSeconds(30));
        var output = (stdout + stderr).Trim() + (code == 137 ? $" (killed after {seconds} s)" : string.Empty);
        var failed = code != 0 || output.Contains("read failed", StringComparison.Ordinal);
        return (!failed, !failed && !output.Contains("Pattern verification failed", StringComparison.Ordinal), output);
    }

    /// <summary>Overwrites bytes of an image file on disk, behind QEMU's back (the corruption the quorum is for).</summary>
    public static void Corrupt(string path, long offset, byte[] bytes)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        file.Seek(offset, SeekOrigin.Begin);
        file.Write(bytes);
        file.Flush(flushToDisk: true);
    }

    /// <summary>Reads until <paramref name="done"/> holds or 10 s passed (QEMU throttles quorum events to one per second per node).</summary>
    public static async Task<T> WaitForAsync<T>(Func<Task<T>> read, Func<T, bool> done)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            var value = await read();
            if (done(value) || DateTime.UtcNow > deadline)
            {
                return value;
            }

            await Task.Delay(250);
        }
    }

    /// <summary>The named block nodes of the VM (to show that a refused request attached nothing).</summary>
    public async Task<IReadOnlySet<string>> NodeNamesAsync() => QuorumGraph.Parse(await Vm.QmpAsync("x-debug-query-block-graph")).NodeNames;

    public async ValueTask DisposeAsync()
    {
        await Vm.DisposeAsync();
        // The recorder ends when QEMU closes its monitor; give it a moment before the directory goes.
        await Task.Delay(200);
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
