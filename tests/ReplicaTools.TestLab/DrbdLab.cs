using System.Globalization;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.TestLab;

/// <summary>
/// The seed scenario's two storage hosts, mirror-a (127.0.0.2) and mirror-b (127.0.0.3): sshd daemons of the given
/// <see cref="SshLab"/>, each in its own UTS namespace named after the host, so the real drbdadm on each picks its own
/// <c>on</c> section. Each host gets a backing disk (a loop device over a sparse file) and its own directories for the
/// DRBD resource files, NBD export state and tgt conf.d files (the lab hosts share one filesystem). The DRBD kernel
/// module is the <see cref="SimulatedDrbdKernel"/>; /dev/drbdN on both hosts is one stand-in loop device over the data
/// area of mirror-a's backing file (what /dev/drbdN on mirror-a exposes: the disk minus DRBD's internal metadata).
/// </summary>
public sealed class DrbdLab : IAsyncDisposable
{
    private readonly List<string> loopDevices = new();
    private readonly List<ReplicaSession> sessions = new();
    private readonly Dictionary<string, DrbdHostLayout> layouts = new(StringComparer.Ordinal);

    private DrbdLab(SshLab ssh, string root)
    {
        Ssh = ssh;
        Root = root;
        Kernel = new SimulatedDrbdKernel((_, _) => StandIn);
        Environment = new DrbdEnvironment(Kernel, host => layouts.TryGetValue(host.Name, out var layout) ? layout : new DrbdHostLayout(Path.Combine(Root, "unknown-host")));
    }

    public SshLab Ssh { get; }

    public string Root { get; }

    public LabHost MirrorA { get; private set; } = null!;

    public LabHost MirrorB { get; private set; } = null!;

    /// <summary>Sessions to mirror-a and mirror-b (ControlMaster, trusted host keys).</summary>
    public ReplicaSession SessionA { get; private set; } = null!;

    public ReplicaSession SessionB { get; private set; } = null!;

    /// <summary>The backing disks: loop devices over <see cref="DiskFileA"/> and <see cref="DiskFileB"/>.</summary>
    public string DiskA { get; private set; } = string.Empty;

    public string DiskB { get; private set; } = string.Empty;

    public string DiskFileA => Path.Combine(Root, "mirror-a.disk");

    public string DiskFileB => Path.Combine(Root, "mirror-b.disk");

    public long DiskBytes { get; private set; }

    /// <summary>The stand-in for /dev/drbdN on both hosts.</summary>
    public string StandIn { get; private set; } = string.Empty;

    public SimulatedDrbdKernel Kernel { get; }

    public DrbdEnvironment Environment { get; }

    public TgtLab? TgtA { get; private set; }

    public TgtLab? TgtB { get; private set; }

    /// <param name="diskBytes">Size of each backing disk.</param>
    /// <param name="withTgt">Start a tgtd for each host (portal on its address), for iSCSI exports.</param>
    public static async Task<DrbdLab> StartAsync(SshLab ssh, long diskBytes = 64L << 20, bool withTgt = false)
    {
        Tool.Require("drbdadm", "drbdmeta", "losetup", "unshare", "blockdev");
        var root = Path.Combine("/tmp", $"rtdrbd-{System.Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}");
        Directory.CreateDirectory(root);
        var lab = new DrbdLab(ssh, root) { DiskBytes = diskBytes };
        try
        {
            lab.MirrorA = await ssh.StartDaemonAsync("mirror-a", "127.0.0.2", wrap: InOwnUtsNamespace("mirror-a"));
            lab.MirrorB = await ssh.StartDaemonAsync("mirror-b", "127.0.0.3", wrap: InOwnUtsNamespace("mirror-b"));
            ssh.Trust(lab.MirrorA);
            ssh.Trust(lab.MirrorB);
            lab.DiskA = lab.Attach(lab.DiskFileA, diskBytes);
            lab.DiskB = lab.Attach(lab.DiskFileB, diskBytes);
            lab.StandIn = lab.Attach(lab.DiskFileA, null, DrbdMetadata.UsableBytes(diskBytes));
            if (withTgt)
            {
                lab.TgtA = await TgtLab.StartAsync(lab.MirrorA.Address);
                lab.TgtB = await TgtLab.StartAsync(lab.MirrorB.Address);
            }

            lab.SessionA = lab.Connect(lab.MirrorA, lab.TgtA);
            lab.SessionB = lab.Connect(lab.MirrorB, lab.TgtB);
            return lab;
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// What an sshd of the lab runs under (SshLab's wrap) to be a host of its own name: a UTS namespace (unshare --uts)
    /// whose host name is <paramref name="kernelHostName"/>, so commands there see it as uname -n. unshare and sh exec
    /// into sshd, which keeps the pid.
    /// </summary>
    public static string[] InOwnUtsNamespace(string kernelHostName) =>
        new[] { "unshare", "--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\"", kernelHostName };

    /// <summary>The layout of a host (its resource file directory, NBD state directory, tgt conf.d and control port).</summary>
    public DrbdHostLayout Layout(ReplicaSession session) => layouts[session.Host.Name];

    /// <summary>One more backing disk on the lab (a loop device over a new sparse file).</summary>
    public string NewDisk(string name, long bytes) => Attach(Path.Combine(Root, name), bytes);

    /// <summary>Stops a host's sshd: it can no longer be reached (its simulated kernel is powered off too).</summary>
    public void Kill(LabHost host)
    {
        SshLab.Stop(host);
        Kernel.PowerOff(host.Name);
    }

    public async ValueTask DisposeAsync()
    {
        // The hosts share this machine: exports are stopped locally, even those of a host whose sshd a test killed.
        foreach (var layout in layouts.Values)
        {
            var manager = new Core.Nbd.NbdExportManager(LocalHost.Instance, layout.NbdStateDirectory);
            foreach (var export in await SafeListAsync(manager))
            {
                try
                {
                    await manager.RemoveAsync(export, TimeSpan.FromSeconds(3));
                }
                catch (Core.ReplicaException)
                {
                }
            }
        }

        foreach (var session in sessions)
        {
            await ReplicaSessionRegistry.RemoveAsync(session);
        }

        foreach (var host in new[] { MirrorA, MirrorB }.Where(h => h is not null))
        {
            SshLab.Stop(host);
        }

        foreach (var tgt in new[] { TgtA, TgtB })
        {
            if (tgt is not null)
            {
                await tgt.DisposeAsync();
            }
        }

        foreach (var device in Enumerable.Reverse(loopDevices))
        {
            Tool.TryRun("losetup", new[] { "-d", device });
        }

        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static async Task<IReadOnlyList<Core.Nbd.NbdExport>> SafeListAsync(Core.Nbd.NbdExportManager manager)
    {
        try
        {
            return await manager.ListAsync(null, warnAboutStale: false);
        }
        catch (Core.ReplicaException)
        {
            return Array.Empty<Core.Nbd.NbdExport>();
        }
    }

    private ReplicaSession Connect(LabHost host, TgtLab? tgt)
    {
        var session = ReplicaSessionRegistry.Create(host.Options(), host.Name, isImplicit: false, controlDirectory: Ssh.ControlDirectory);
        sessions.Add(session);
        var directory = Path.Combine(Root, host.Name);
        layouts[session.Host.Name] = new DrbdHostLayout(
            Path.Combine(directory, "drbd.d"),
            Path.Combine(directory, "nbd"),
            tgt?.ConfigDirectory ?? Path.Combine(directory, "tgt.d"),
            tgt?.ControlPort ?? 1);
        return session;
    }

    private string Attach(string file, long? size, long? sizeLimit = null)
    {
        if (size is { } bytes)
        {
            using var stream = new FileStream(file, FileMode.CreateNew);
            stream.SetLength(bytes);
        }

        var arguments = new List<string> { "-f", "--show" };
        if (sizeLimit is { } limit)
        {
            arguments.AddRange(new[] { "--sizelimit", limit.ToString(CultureInfo.InvariantCulture) });
        }

        arguments.Add(file);
        var device = Tool.Run("losetup", arguments).Trim();
        loopDevices.Add(device);
        return device;
    }
}
