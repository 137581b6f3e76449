using System.Globalization;
using System.Text.Json;
using ReplicaTools.Core.Bench;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.TestLab;

/// <summary>A target of the throughput lab: what the module is given, and how a user would load it by hand.</summary>
public sealed record ThroughputLabTarget(string Name, ThroughputTargetSpec Spec, string ImagePath);

/// <summary>
/// The seed's four ways to reach a disk, on loopback: a file read and written directly on the load host, the same kind of
/// file exported by nbd-server and by qemu-nbd (started through the module's NbdExportManager on a second lab host) and as
/// an iSCSI LUN of a lab tgtd on a third address. Every image is a fully allocated zero-filled raw file of
/// <see cref="ImageSize"/> bytes, so reads hit real blocks and the module's data check lets the first writes through.
/// The load is generated over SSH on the first lab host.
/// </summary>
public sealed class ThroughputLab : IAsyncDisposable
{
    private readonly List<NbdExport> exports = new();
    private TgtLab? tgt;

    private ThroughputLab(SshLab lab, string root, long imageSize)
    {
        Lab = lab;
        Root = root;
        ImageSize = imageSize;
        LoadHost = lab[0].CreateHost();
        ServerHost = lab[1].CreateHost();
        Exports = new NbdExportManager(ServerHost, Path.Combine(root, "nbd-state"));
    }

    public SshLab Lab { get; }

    public string Root { get; }

    public long ImageSize { get; }

    /// <summary>Where the load is generated (lab host 127.0.0.2, over SSH).</summary>
    public SshHost LoadHost { get; }

    /// <summary>Where the NBD servers run (lab host 127.0.0.3).</summary>
    public SshHost ServerHost { get; }

    public NbdExportManager Exports { get; }

    public IReadOnlyList<ThroughputLabTarget> Targets { get; private set; } = Array.Empty<ThroughputLabTarget>();

    /// <param name="iscsi">Also start a tgtd with a LUN (the fourth target).</param>
    public static async Task<ThroughputLab> StartAsync(SshLab lab, long imageSize = 256L << 20, bool iscsi = true)
    {
        Tool.Require("fio", "qemu-img", "qemu-io", "qemu-nbd", "nbd-server", "nbdinfo", "tgtd", "tgtadm");
        var root = Path.Combine(lab.Root, $"throughput-{Guid.NewGuid().ToString("N")[..6]}");
        Directory.CreateDirectory(root);
        var throughput = new ThroughputLab(lab, root, imageSize);
        try
        {
            await Task.WhenAll(throughput.LoadHost.ConnectAsync(), throughput.ServerHost.ConnectAsync());
            var targets = new List<ThroughputLabTarget>();
            var direct = throughput.NewImage("direct.raw");
            targets.Add(new ThroughputLabTarget("direct", new ThroughputTargetSpec(direct), direct));
            foreach (var server in new[] { NbdServerKind.NbdServer, NbdServerKind.QemuNbd })
            {
                var label = server == NbdServerKind.NbdServer ? "nbd-server" : "qemu-nbd";
                var image = throughput.NewImage($"{label}.raw");
                // nbd-server 3.24 counts maxconnections over the export's lifetime, not concurrently: allow the most.
                var export = await throughput.Exports.NewAsync(new NbdExportRequest { Name = label, Path = image, Server = server, ListenAddress = lab[1].Address, MaxConnections = server == NbdServerKind.QemuNbd ? 1024 : null });
                throughput.exports.Add(export);
                targets.Add(new ThroughputLabTarget(label, new ThroughputTargetSpec(export.Uri) { Server = label }, image));
            }

            if (iscsi)
            {
                throughput.tgt = await TgtLab.StartAsync(lab[2].Address);
                var lun = throughput.NewImage("tgt.raw");
                var iqn = TgtLab.NewIqn("throughput");
                throughput.tgt.CreateTarget(iqn, lun);
                targets.Add(new ThroughputLabTarget("tgt", new ThroughputTargetSpec(throughput.tgt.Uri(iqn)) { Server = "tgt" }, lun));
            }

            throughput.Targets = targets;
            return throughput;
        }
        catch
        {
            await throughput.DisposeAsync();
            throw;
        }
    }

    /// <summary>A fully allocated, zero-filled raw image in the lab directory.</summary>
    public string NewImage(string name)
    {
        var path = Path.Combine(Root, name);
        Tool.Run("qemu-img", "create", "-q", "-f", "raw", "-o", "preallocation=full", path, ImageSize.ToString(CultureInfo.InvariantCulture));
        return path;
    }

    /// <summary>
    /// The command a user would type for the same measurement, written independently of the module: fio with JSON output
    /// (libaio and direct=1 for files, the nbd engine for NBD URIs), or qemu-img bench with <paramref name="count"/> requests.
    /// </summary>
    public static CommandSpec ByHand(string location, long blockSize, ThroughputOperation operation, int durationSeconds, long count)
    {
        var size = blockSize.ToString(CultureInfo.InvariantCulture);
        var rw = operation == ThroughputOperation.Read ? "read" : "write";
        if (location.StartsWith("iscsi://", StringComparison.Ordinal))
        {
            var bench = new List<string> { "qemu-img", "bench", "-f", "raw", "-c", count.ToString(CultureInfo.InvariantCulture), "-d", "1", "-s", size, "-S", size };
            if (operation == ThroughputOperation.Write)
            {
                bench.AddRange(new[] { "-w", "--pattern=90" });
            }

            bench.Add(location);
            return new CommandSpec(bench) { Timeout = TimeSpan.FromMinutes(10) };
        }

        var fio = new List<string> { "fio", "--name=byhand", $"--rw={rw}", $"--bs={size}", "--iodepth=1", "--time_based", $"--runtime={durationSeconds}", "--output-format=json" };
        fio.AddRange(location.StartsWith("nbd://", StringComparison.Ordinal)
            ? new[] { "--ioengine=nbd", $"--uri={location}" }
            : new[] { "--ioengine=libaio", "--direct=1", $"--filename={location}" });
        return new CommandSpec(fio) { Timeout = TimeSpan.FromSeconds(durationSeconds + 120) };
    }

    /// <summary>MB/s of a by-hand run: fio's bw_bytes, or qemu-img bench's bytes over its "Run completed in" time.</summary>
    public static double MBpsOf(CommandResult result, long blockSize, ThroughputOperation operation, long count)
    {
        var output = result.StandardOutput;
        if (result.Arguments[0] == "qemu-img")
        {
            var marker = output.IndexOf("Run completed in ", StringComparison.Ordinal);
            var seconds = double.Parse(output[(marker + 17)..].Split(' ')[0], CultureInfo.InvariantCulture);
            return count * blockSize / seconds / 1e6;
        }

        using var json = JsonDocument.Parse(output[output.IndexOf('{', StringComparison.Ordinal)..]);
        return json.RootElement.GetProperty("jobs")[0].GetProperty(operation == ThroughputOperation.Read ? "read" : "write").GetProperty("bw_bytes").GetInt64() / 1e6;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var export in exports)
        {
            try
            {
                await Exports.RemoveAsync(export, TimeSpan.FromSeconds(3));
            }
            catch (Core.ReplicaException)
            {
                if (export.ProcessId is { } pid)
                {
                    Tool.TryRun("kill", new[] { "-KILL", pid.ToString(CultureInfo.InvariantCulture) });
                }
            }
        }

        if (tgt is not null)
        {
            await tgt.DisposeAsync();
        }

        await LoadHost.DisconnectAsync();
        await ServerHost.DisconnectAsync();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
