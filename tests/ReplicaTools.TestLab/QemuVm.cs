using System.Text.Json.Nodes;
using ReplicaTools.Core.Qemu;

namespace ReplicaTools.TestLab;

/// <summary>A disk to attach to a lab VM: a local path or an nfs://server/export/file URL.</summary>
public sealed record LabDisk(string DeviceId, string Source, string Format);

/// <summary>
/// A bare QEMU "VM" for tests: i440fx machine, TCG, paused before start (-S, costs no CPU; block jobs and I/O
/// still work), virtio-blk disks with qdev ids, a QMP socket. Guest writes are injected with HMP qemu-io.
/// </summary>
public sealed class QemuVm : IAsyncDisposable
{
    private QemuVm(string name, string directory)
    {
        Name = name;
        Directory = directory;
    }

    public string Name { get; }

    public string Directory { get; }

    public string SocketPath => Path.Combine(Directory, Name + ".qmp");

    /// <summary>A second, independent QMP monitor for the test itself (guest writes, fault injection), so that the code
    /// under test can hold <see cref="SocketPath"/> (QEMU serves one client per monitor) while the test acts.</summary>
    public string TestSocketPath => Path.Combine(Directory, Name + ".test.qmp");

    /// <summary>A third QMP monitor that nothing else uses: for a listener that holds its monitor for good (the quorum event recorder).</summary>
    public string EventSocketPath => Path.Combine(Directory, Name + ".events.qmp");

    /// <summary>The monitor the test uses: the test monitor when QEMU has one (not a QEMU started elsewhere and attached).</summary>
    private string TestMonitor => File.Exists(TestSocketPath) ? TestSocketPath : SocketPath;

    public string PidFile => Path.Combine(Directory, Name + ".pid");

    public int ProcessId { get; private set; }

    /// <summary>The node name the fixture gives a device's disk ("drive-" + device id).</summary>
    public static string NodeName(string deviceId) => "drive-" + deviceId;

    public static async Task<QemuVm> StartAsync(string directory, string name, params LabDisk[] disks)
    {
        Tool.Require("qemu-system-x86_64");
        System.IO.Directory.CreateDirectory(directory);
        var vm = new QemuVm(name, directory);
        var arguments = new List<string>
        {
            "-name", name, "-machine", "pc,accel=tcg", "-S", "-m", "16", "-nodefaults", "-display", "none",
            "-qmp", $"unix:{vm.SocketPath},server=on,wait=off", "-qmp", $"unix:{vm.TestSocketPath},server=on,wait=off",
            "-qmp", $"unix:{vm.EventSocketPath},server=on,wait=off",
            "-daemonize", "-pidfile", vm.PidFile,
        };
        foreach (var disk in disks)
        {
            arguments.Add("-blockdev");
            arguments.Add(BlockdevJson(disk));
            arguments.Add("-device");
            arguments.Add($"virtio-blk-pci,drive={NodeName(disk.DeviceId)},id={disk.DeviceId}");
        }

        Tool.Run("qemu-system-x86_64", arguments, TimeSpan.FromSeconds(60));
        vm.ProcessId = int.Parse(File.ReadAllText(vm.PidFile).Trim());
        return vm;
    }

    /// <summary>
    /// A storage-only QEMU, as operators run one for block jobs: <c>-machine none</c> (no buses, no devices) and each disk
    /// as a <c>-drive if=none</c> block backend named by its device id. QEMU creates no QOM /objects container until the
    /// first -object, which is what such a QEMU looks like to the code under test.
    /// </summary>
    public static async Task<QemuVm> StartStorageOnlyAsync(string directory, string name, params LabDisk[] disks)
    {
        Tool.Require("qemu-system-x86_64");
        System.IO.Directory.CreateDirectory(directory);
        var vm = new QemuVm(name, directory);
        var arguments = new List<string>
        {
            "-name", name, "-machine", "none", "-nodefaults", "-display", "none",
            "-qmp", $"unix:{vm.SocketPath},server=on,wait=off", "-qmp", $"unix:{vm.TestSocketPath},server=on,wait=off",
            "-daemonize", "-pidfile", vm.PidFile,
        };
        foreach (var disk in disks)
        {
            arguments.Add("-drive");
            arguments.Add($"if=none,id={disk.DeviceId},node-name={NodeName(disk.DeviceId)},format={disk.Format},file={disk.Source.Replace(",", ",,", StringComparison.Ordinal)}");
        }

        Tool.Run("qemu-system-x86_64", arguments, TimeSpan.FromSeconds(60));
        vm.ProcessId = int.Parse(File.ReadAllText(vm.PidFile).Trim());
        return vm;
    }

    /// <summary>A write through a block backend or node by name (storage-only QEMUs have no device to write through).</summary>
    public Task WriteNodeAsync(string nodeOrBackend, byte pattern, long offset, long length) =>
        HmpAsync($"qemu-io {nodeOrBackend} \"write -P 0x{pattern:x2} {offset} {length}\"");

    /// <summary>Takes charge of a QEMU started elsewhere (its socket is DIRECTORY/NAME.qmp), so the test cleans it up.</summary>
    public static QemuVm Attach(string directory, string name, int processId) => new(name, directory) { ProcessId = processId };

    /// <summary>-blockdev JSON for a format node over a file or nfs:// protocol node.</summary>
    public static string BlockdevJson(LabDisk disk)
    {
        JsonObject file;
        if (disk.Source.StartsWith("nfs://", StringComparison.Ordinal))
        {
            var uri = new Uri(disk.Source);
            file = new JsonObject
            {
                ["driver"] = "nfs",
                ["server"] = new JsonObject { ["type"] = "inet", ["host"] = uri.Host },
                ["path"] = Uri.UnescapeDataString(uri.AbsolutePath),
            };
        }
        else
        {
            file = new JsonObject { ["driver"] = "file", ["filename"] = disk.Source };
        }

        file["node-name"] = NodeName(disk.DeviceId) + "-file";
        return new JsonObject { ["driver"] = disk.Format, ["node-name"] = NodeName(disk.DeviceId), ["file"] = file }.ToJsonString();
    }

    /// <summary>A guest-like write through the device's own block backend (follows pivots).</summary>
    public Task WriteAsync(string deviceId, byte pattern, long offset, long length) =>
        HmpAsync($"qemu-io -d {deviceId}/virtio-backend \"write -P 0x{pattern:x2} {offset} {length}\"");

    /// <summary>Runs an HMP command; HMP reports failures as text in a successful reply, so any output is an error.</summary>
    public async Task HmpAsync(string commandLine)
    {
        var reply = await QmpAsync("human-monitor-command", new JsonObject { ["command-line"] = commandLine });
        var text = reply.GetString();
        if (!string.IsNullOrWhiteSpace(text))
        {
            throw new InvalidOperationException($"HMP '{commandLine}' on {Name} failed: {text.Trim()}");
        }
    }

    /// <summary>Runs a QMP command on the test monitor and returns its reply.</summary>
    public async Task<System.Text.Json.JsonElement> QmpAsync(string command, JsonObject? arguments = null)
    {
        await using var qmp = await QmpClient.ConnectLocalAsync(TestMonitor);
        return await qmp.ExecuteAsync(command, arguments);
    }

    public bool IsRunning => System.IO.Directory.Exists($"/proc/{ProcessId}") && !File.ReadAllText($"/proc/{ProcessId}/stat").Split(' ')[2].Equals("Z", StringComparison.Ordinal);

    /// <summary>Kills QEMU at once (a crash, as far as the disk is concerned).</summary>
    public void Kill()
    {
        if (IsRunning)
        {
            Tool.TryRun("kill", new[] { "-9", ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (ProcessId == 0 || !IsRunning)
        {
            return;
        }

        // A clean quit stores persistent bitmaps; a hung NFS target can block it, hence the kill after 5 s.
        try
        {
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await using var qmp = await QmpClient.ConnectLocalAsync(TestMonitor, limit.Token);
            await qmp.ExecuteAsync("quit", cancellationToken: limit.Token);
        }
        catch (Exception)
        {
            // Already gone, busy or hung: the kill below settles it.
        }

        for (var i = 0; i < 50 && IsRunning; i++)
        {
            await Task.Delay(100);
        }

        Kill();
    }
}
