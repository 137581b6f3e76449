using System.Globalization;

namespace ReplicaTools.TestLab;

/// <summary>
/// A second libvirtd, next to the machine's own, for domains that must exist under a non-default URI only. It runs in a
/// private mount namespace with empty tmpfs state directories (/run/libvirt, /var/lib/libvirt, /var/cache/libvirt) and a
/// copy of /etc/libvirt without domains or networks, and listens on a socket in its own directory:
/// <c>qemu+unix:///system?socket=DIR/run/libvirt-sock</c>. QEMU's output goes to files (stdio_handler = "file"), so it needs
/// no virtlogd. Dispose destroys what runs in it and stops it.
/// </summary>
public sealed class PrivateLibvirtd : IAsyncDisposable
{
    private PrivateLibvirtd(string directory)
    {
        Directory = directory;
    }

    public string Directory { get; }

    public string Uri => $"qemu+unix:///system?socket={Directory}/run/libvirt-sock";

    public int ProcessId { get; private set; }

    public static async Task<PrivateLibvirtd> StartAsync()
    {
        Tool.Require("libvirtd", "virsh", "unshare", "qemu-system-x86_64");
        var directory = Path.Combine("/tmp", $"rtlvd-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}");
        var daemon = new PrivateLibvirtd(directory);
        System.IO.Directory.CreateDirectory(Path.Combine(directory, "run"));
        File.SetUnixFileMode(directory, (UnixFileMode)0b111_101_101);
        Tool.Run("cp", "-a", "/etc/libvirt", Path.Combine(directory, "etc"));
        Tool.Run("rm", "-rf", "--", Path.Combine(directory, "etc", "qemu"));
        System.IO.Directory.CreateDirectory(Path.Combine(directory, "etc", "qemu"));
        File.AppendAllText(Path.Combine(directory, "etc", "qemu.conf"), "\nstdio_handler = \"file\"\n");
        var config = Path.Combine(directory, "libvirtd.conf");
        File.WriteAllText(config, $"unix_sock_dir = \"{directory}/run\"\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n");
        var pidFile = Path.Combine(directory, "libvirtd.pid");
        var script = "mount -t tmpfs tmpfs /run/libvirt && mount -t tmpfs tmpfs /var/lib/libvirt && mount -t tmpfs tmpfs /var/cache/libvirt " +
                     "&& mount --bind \"$1/etc\" /etc/libvirt && mkdir -p /var/lib/libvirt/qemu /var/lib/libvirt/images " +
                     "&& exec libvirtd -d -f \"$1/libvirtd.conf\" -p \"$1/libvirtd.pid\"";
        try
        {
            Tool.Run("unshare", new[] { "-m", "--propagation", "private", "sh", "-c", script, "sh", directory }, TimeSpan.FromSeconds(60));
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (Tool.TryRun("virsh", new[] { "-c", daemon.Uri, "version" }, TimeSpan.FromSeconds(30)).ExitCode != 0)
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new InvalidOperationException($"The private libvirtd in {directory} did not answer on {daemon.Uri} within 60 s.");
                }

                await Task.Delay(200);
            }

            daemon.ProcessId = int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture);
        }
        catch
        {
            await daemon.DisposeAsync();
            throw;
        }

        return daemon;
    }

    public async ValueTask DisposeAsync()
    {
        if (ProcessId == 0 && File.Exists(Path.Combine(Directory, "libvirtd.pid")))
        {
            ProcessId = int.Parse(File.ReadAllText(Path.Combine(Directory, "libvirtd.pid")).Trim(), CultureInfo.InvariantCulture);
        }

        if (ProcessId > 0)
        {
            // Its QEMUs outlive the daemon: stop them first.
            var names = Tool.TryRun("virsh", new[] { "-c", Uri, "list", "--name" }, TimeSpan.FromSeconds(30)).StandardOutput;
            foreach (var name in names.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                Tool.TryRun("virsh", new[] { "-c", Uri, "destroy", name }, TimeSpan.FromMinutes(1));
            }

            Tool.TryRun("kill", new[] { "-TERM", ProcessId.ToString(CultureInfo.InvariantCulture) });
            for (var i = 0; i < 100 && System.IO.Directory.Exists($"/proc/{ProcessId}"); i++)
            {
                await Task.Delay(50);
            }
        }

        Tool.TryRun("rm", new[] { "-rf", "--", Directory });
    }
}
