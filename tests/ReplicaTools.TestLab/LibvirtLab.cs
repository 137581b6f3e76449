using System.Security;
using System.Text;

namespace ReplicaTools.TestLab;

/// <summary>
/// libvirt for tests: uses a running libvirtd (qemu:///system) or starts virtlogd + libvirtd itself, and stops them
/// again only if it started them. Domains are TCG, paused, with no OS; images live in a 0755 directory so the
/// libvirt-qemu user can reach them. Every domain created here is destroyed and undefined on dispose.
/// </summary>
public sealed class LibvirtLab : IAsyncDisposable
{
    public const string Uri = "qemu:///system";
    private readonly List<string> domains = new();
    private bool startedDaemons;
    private PrivateLibvirtd? privateDaemon;

    private LibvirtLab(string directory)
    {
        Directory = directory;
    }

    /// <summary>A directory for images that libvirt's QEMU can reach.</summary>
    public string Directory { get; }

    /// <summary>The libvirt connection URI of this lab's domains: <see cref="Uri"/>, or a private daemon's (<see cref="StartPrivateAsync"/>).</summary>
    public string ConnectionUri => privateDaemon?.Uri ?? Uri;

    /// <summary>
    /// A lab on a libvirtd of its own (<see cref="PrivateLibvirtd"/>): its domains exist only under <see cref="ConnectionUri"/>,
    /// a non-default URI, so code that loses the URI on the way fails to find them.
    /// </summary>
    public static async Task<LibvirtLab> StartPrivateAsync()
    {
        var lab = await StartAsync();
        try
        {
            lab.privateDaemon = await PrivateLibvirtd.StartAsync();
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }

        return lab;
    }

    public static async Task<LibvirtLab> StartAsync()
    {
        Tool.Require("virsh", "libvirtd", "virtlogd", "qemu-system-x86_64");
        var directory = Path.Combine("/tmp", $"rtvirt-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}");
        System.IO.Directory.CreateDirectory(directory);
        File.SetUnixFileMode(directory, (UnixFileMode)0b111_101_101);
        var lab = new LibvirtLab(directory);
        if (!IsUp())
        {
            Tool.TryRun("virtlogd", new[] { "-d" });
            Tool.TryRun("libvirtd", new[] { "-d" });
            lab.startedDaemons = true;
            var deadline = DateTime.UtcNow.AddSeconds(90);
            while (!IsUp())
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new InvalidOperationException("libvirtd did not answer within 90 s (see /var/log/libvirt/libvirtd.log).");
                }

                await Task.Delay(200);
            }
        }

        return lab;
    }

    public static bool IsUp() => Tool.TryRun("virsh", new[] { "-c", Uri, "version" }, TimeSpan.FromSeconds(60)).ExitCode == 0;

    public string UniqueName(string stem) => $"rt-{stem}-{Guid.NewGuid().ToString("N")[..6]}";

    /// <summary>Domains created from now on get ACPI, which PCI hot-plug (virsh attach-device --live of a virtio disk) needs on the pc machine.</summary>
    public bool PciHotplug { get; set; }

    /// <summary>Creates a paused domain with virtio disks vda, vdb, ... (persistent when asked; else transient).</summary>
    public string CreateDomain(string name, bool persistent, params (string Path, string Format)[] disks)
    {
        var xml = new StringBuilder();
        xml.Append($"<domain type='qemu'><name>{SecurityElement.Escape(name)}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>");
        xml.Append($"<os><type arch='x86_64' machine='pc'>hvm</type></os>{(PciHotplug ? "<features><acpi/></features>" : string.Empty)}<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>");
        for (var i = 0; i < disks.Length; i++)
        {
            xml.Append($"<disk type='file' device='disk'><driver name='qemu' type='{disks[i].Format}'/><source file='{SecurityElement.Escape(disks[i].Path)}'/>");
            xml.Append($"<target dev='vd{(char)('a' + i)}' bus='virtio'/></disk>");
        }

        xml.Append("<controller type='usb' model='none'/><memballoon model='none'/></devices></domain>");
        var file = Path.Combine(Directory, name + ".xml");
        File.WriteAllText(file, xml.ToString());
        domains.Add(name);
        if (persistent)
        {
            Virsh("define", file);
            Virsh("start", name, "--paused");
        }
        else
        {
            Virsh("create", file, "--paused");
        }

        return name;
    }

    /// <summary>A guest-like write to disk <paramref name="index"/> (0 = vda) through the device's block backend.</summary>
    public void Write(string domain, byte pattern, long offset, long length, int index = 0)
    {
        var output = Virsh("qemu-monitor-command", domain, "--hmp",
            $"qemu-io -d /machine/peripheral/virtio-disk{index}/virtio-backend \"write -P 0x{pattern:x2} {offset} {length}\"");
        if (!string.IsNullOrWhiteSpace(output))
        {
            throw new InvalidOperationException($"qemu-io write on {domain} failed: {output.Trim()}");
        }
    }

    public string Virsh(params string[] arguments) => Tool.Run("virsh", new[] { "-q", "-c", ConnectionUri }.Concat(arguments), TimeSpan.FromMinutes(2));

    public void Destroy(string domain)
    {
        Tool.TryRun("virsh", new[] { "-c", ConnectionUri, "domjobabort", domain });
        Tool.TryRun("virsh", new[] { "-c", ConnectionUri, "destroy", domain }, TimeSpan.FromMinutes(1));
        Tool.TryRun("virsh", new[] { "-c", ConnectionUri, "undefine", domain, "--checkpoints-metadata", "--snapshots-metadata" });
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var domain in domains)
        {
            Destroy(domain);
        }

        if (privateDaemon is not null)
        {
            await privateDaemon.DisposeAsync();
        }

        if (startedDaemons)
        {
            foreach (var pidFile in new[] { "/run/libvirtd.pid", "/run/virtlogd.pid" })
            {
                if (File.Exists(pidFile) && int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid))
                {
                    Tool.TryRun("kill", new[] { "-TERM", pid.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    for (var i = 0; i < 100 && System.IO.Directory.Exists($"/proc/{pid}"); i++)
                    {
                        await Task.Delay(50);
                    }
                }
            }
        }

        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
