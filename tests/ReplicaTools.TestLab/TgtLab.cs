using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace ReplicaTools.TestLab;

/// <summary>
/// A tgtd of its own for tests: its own management channel (tgtd -C N, so the system's tgtd on control port 0 is never
/// touched), its iSCSI portal on one loopback address and a dynamic port, and its own conf.d directory with a
/// targets.conf that includes it (as /etc/tgt/targets.conf includes /etc/tgt/conf.d). Clients are the userspace
/// initiators: qemu-img/qemu-io with iscsi:// URLs, iscsi-inq, iscsi-ls (libiscsi). Dispose deletes every target and
/// shuts the daemon down (tgtd ignores SIGTERM: offline, delete the targets, delete the system).
/// </summary>
public sealed partial class TgtLab : IAsyncDisposable
{
    private Process? daemon;

    private TgtLab(string root, string address)
    {
        Root = root;
        Address = address;
        ConfigDirectory = Path.Combine(root, "conf.d");
        TargetsConf = Path.Combine(root, "targets.conf");
    }

    /// <summary>The lab's directory (backing files may go here).</summary>
    public string Root { get; }

    /// <summary>The portal's address.</summary>
    public string Address { get; }

    /// <summary>The portal's TCP port.</summary>
    public int Port { get; private set; }

    /// <summary>tgtd's management channel: pass it to tgtadm -C (and to the code under test).</summary>
    public int ControlPort { get; private set; }

    /// <summary>The conf.d directory targets.conf includes.</summary>
    public string ConfigDirectory { get; }

    /// <summary>What tgt-admin -e reads on <see cref="RestartAsync"/>: <c>include CONF_DIR/*.conf</c>.</summary>
    public string TargetsConf { get; }

    public int ProcessId => daemon?.Id ?? 0;

    /// <summary>Starts tgtd with its portal on <paramref name="address"/> (a loopback address) and a free port.</summary>
    public static async Task<TgtLab> StartAsync(string address = "127.0.0.2")
    {
        Tool.Require("tgtd", "tgtadm", "tgt-admin");
        var root = Path.Combine("/tmp", $"rttgt-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}");
        Directory.CreateDirectory(root);
        var lab = new TgtLab(root, address);
        Directory.CreateDirectory(lab.ConfigDirectory);
        File.WriteAllText(lab.TargetsConf, $"include {lab.ConfigDirectory}/*.conf\n");
        try
        {
            await lab.StartDaemonAsync(newPort: true);
            return lab;
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
    }

    /// <summary>An IQN unique to this run, e.g. <c>iqn.2024-10.org.replicatools.lab:stem-1a2b3c</c>.</summary>
    public static string NewIqn(string stem) => $"iqn.2024-10.org.replicatools.lab:{stem}-{Guid.NewGuid().ToString("N")[..6]}";

    /// <summary>The URL a userspace initiator reads LUN <paramref name="lun"/> of <paramref name="iqn"/> by.</summary>
    public string Uri(string iqn, int lun = 1) => $"iscsi://{Address}:{Port.ToString(CultureInfo.InvariantCulture)}/{iqn}/{lun.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>Lab setup without the code under test: a target serving <paramref name="backingStore"/> to every initiator (or only <paramref name="initiators"/>).</summary>
    public void CreateTarget(string iqn, string backingStore, int lun = 1, params string[] initiators)
    {
        var tid = (TargetIds().DefaultIfEmpty(0).Max() + 1).ToString(CultureInfo.InvariantCulture);
        Tgtadm("--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", tid, "-T", iqn);
        Tgtadm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", lun.ToString(CultureInfo.InvariantCulture), "-b", backingStore);
        if (initiators.Length == 0)
        {
            Tgtadm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL");
        }

        foreach (var initiator in initiators)
        {
            Tgtadm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", tid, "-Q", initiator);
        }
    }

    /// <summary>Runs tgtadm against this tgtd (-C is added).</summary>
    public string Tgtadm(params string[] arguments) =>
        Tool.Run("tgtadm", new[] { "-C", ControlPort.ToString(CultureInfo.InvariantCulture) }.Concat(arguments), TimeSpan.FromSeconds(60));

    /// <summary>The IQNs tgtd serves now.</summary>
    public IReadOnlyList<string> TargetNames() =>
        TargetLine().Matches(Tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target")).Select(m => m.Groups["iqn"].Value).ToArray();

    /// <summary>
    /// Stops tgtd (its targets die with it) and starts it again on the same control port and portal, then runs
    /// <c>tgt-admin -e -c targets.conf</c> as tgt's service does at start: targets come back only from their conf.d files.
    /// </summary>
    public async Task RestartAsync()
    {
        await StopDaemonAsync();
        await StartDaemonAsync(newPort: false);
        Tool.Run("tgt-admin", new[] { "-e", "-c", TargetsConf, "-C", ControlPort.ToString(CultureInfo.InvariantCulture) }, TimeSpan.FromSeconds(60));
    }

    public async ValueTask DisposeAsync()
    {
        await StopDaemonAsync();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private IEnumerable<int> TargetIds() =>
        TargetLine().Matches(Tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target")).Select(m => int.Parse(m.Groups["tid"].Value, CultureInfo.InvariantCulture));

    private async Task StartDaemonAsync(bool newPort)
    {
        for (var attempt = 1; ; attempt++)
        {
            if (newPort || attempt > 1)
            {
                Port = Ports.Free(Address);
                ControlPort = FreeControlPort();
            }

            var startInfo = new ProcessStartInfo("tgtd") { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var argument in new[] { "-f", "-C", ControlPort.ToString(CultureInfo.InvariantCulture), "--iscsi", $"portal={Address}:{Port.ToString(CultureInfo.InvariantCulture)}" })
            {
                startInfo.ArgumentList.Add(argument);
            }

            var process = Process.Start(startInfo)!;
            var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
            process.ErrorDataReceived += (_, e) => output.Enqueue(e.Data ?? string.Empty);
            process.OutputDataReceived += (_, e) => output.Enqueue(e.Data ?? string.Empty);
            process.BeginErrorReadLine();
            process.BeginOutputReadLine();
            if (await Ports.WaitListeningAsync(Address, Port, TimeSpan.FromSeconds(10), () => !process.HasExited) && await AnswersWithinAsync(process, TimeSpan.FromSeconds(10)))
            {
                daemon = process;
                return;
            }

            SshLab.Kill(process);
            RemoveControlSocket();
            if (attempt == 3)
            {
                throw new InvalidOperationException($"tgtd did not start with portal {Address}:{Port} and control port {ControlPort} after 3 attempts (exit code {(process.HasExited ? process.ExitCode : -1)}): {string.Join(" | ", output.TakeLast(10))}");
            }
        }
    }

    private async Task<bool> AnswersWithinAsync(Process process, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!Answers())
        {
            if (process.HasExited || DateTime.UtcNow > deadline)
            {
                return false;
            }

            await Task.Delay(100);
        }

        return true;
    }

    private bool Answers() => Tool.TryRun("tgtadm", new[] { "-C", ControlPort.ToString(CultureInfo.InvariantCulture), "--lld", "iscsi", "--op", "show", "--mode", "target" }, TimeSpan.FromSeconds(10)).ExitCode == 0;

    private async Task StopDaemonAsync()
    {
        if (daemon is not { } process)
        {
            return;
        }

        var port = ControlPort.ToString(CultureInfo.InvariantCulture);
        Tool.TryRun("tgtadm", new[] { "-C", port, "--op", "update", "--mode", "sys", "--name", "State", "-v", "offline" }, TimeSpan.FromSeconds(30));
        foreach (var tid in Answers() ? TargetIds().ToArray() : Array.Empty<int>())
        {
            Tool.TryRun("tgtadm", new[] { "-C", port, "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", tid.ToString(CultureInfo.InvariantCulture), "--force" }, TimeSpan.FromSeconds(30));
        }

        Tool.TryRun("tgtadm", new[] { "-C", port, "--op", "delete", "--mode", "system" }, TimeSpan.FromSeconds(30));
        for (var i = 0; i < 100 && !process.HasExited; i++)
        {
            await Task.Delay(50);
        }

        SshLab.Kill(process);
        daemon = null;
        RemoveControlSocket();
    }

    /// <summary>tgtd leaves its management socket and lock file behind.</summary>
    private void RemoveControlSocket()
    {
        var port = ControlPort.ToString(CultureInfo.InvariantCulture);
        foreach (var file in new[] { $"/var/run/tgtd/socket.{port}", $"/var/run/tgtd/socket.{port}.lock" })
        {
            File.Delete(file);
        }
    }

    /// <summary>A control port no tgtd uses (tgtd keeps its channel at /var/run/tgtd/socket.N).</summary>
    private static int FreeControlPort()
    {
        for (var i = 0; i < 100; i++)
        {
            var port = Random.Shared.Next(1000, 32768); // tgtd takes -C up to 32767
            if (!File.Exists($"/var/run/tgtd/socket.{port.ToString(CultureInfo.InvariantCulture)}") && !File.Exists($"/run/tgtd/socket.{port.ToString(CultureInfo.InvariantCulture)}"))
            {
                return port;
            }
        }

        throw new InvalidOperationException("No free tgtd control port found.");
    }

    [GeneratedRegex(@"^Target (?<tid>\d+): (?<iqn>\S+)$", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex TargetLine();
}
