using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace ReplicaTools.TestLab;

/// <summary>What <see cref="NfsLab.StartAsync"/> starts.</summary>
public sealed class NfsLabOptions
{
    /// <summary>Preferred server addresses, one ganesha instance each. If another NFS server already listens on one of them, free loopback addresses are used instead.</summary>
    public IReadOnlyList<string> Addresses { get; init; } = new[] { "127.0.0.2", "127.0.0.3" };

    /// <summary>Size of each server's btrfs volume (a sparse file). Mirrors to raw/VDI targets allocate the whole virtual size: size accordingly.</summary>
    public long VolumeSize { get; init; } = 512L << 20;

    /// <summary>Directory for the lab's files (default: a new /tmp/rtnfs-* directory, removed on dispose).</summary>
    public string? Root { get; init; }
}

/// <summary>
/// One nfs-ganesha instance of an <see cref="NfsLab"/>: NFSv3 (and 4) on its own loopback address, exporting a btrfs
/// subvolume with No_COW as the pseudo path <c>/images</c>. QEMU and qemu-img reach it as <c>nfs://ADDRESS/images/FILE</c>.
/// </summary>
public sealed class NfsServer
{
    internal NfsServer(string name, string address, string directory, BtrfsVolume volume, string exportDirectory, string storePath)
    {
        Name = name;
        Address = address;
        Directory = directory;
        Volume = volume;
        ExportDirectory = exportDirectory;
        StorePath = storePath;
        ConfigPath = Path.Combine(directory, "ganesha.conf");
        LogPath = Path.Combine(directory, "ganesha.log");
        PidFile = Path.Combine(directory, "ganesha.pid");
        RecoveryDirectory = Path.Combine(directory, "recovery");
    }

    /// <summary>"nfs1", "nfs2" ...</summary>
    public string Name { get; }

    /// <summary>The address ganesha binds to (127.0.0.2, 127.0.0.3 by default).</summary>
    public string Address { get; }

    /// <summary>The NFSv3 mount path of the export (ganesha's pseudo path).</summary>
    public string ExportPath => NfsLab.PseudoPath;

    /// <summary>nfs://ADDRESS/images: append "/file" for an image URL.</summary>
    public string BaseUrl => $"nfs://{Address}{ExportPath}";

    /// <summary>
    /// The exported directory on this machine: the btrfs subvolume "images" mounted by itself (ganesha cannot export a
    /// subvolume directory of a mounted file system). A file created through <see cref="BaseUrl"/> appears here.
    /// </summary>
    public string ExportDirectory { get; }

    /// <summary>
    /// The same subvolume seen through the mount of the whole file system: give this to Checkpoint-DiskStore /
    /// DiskStoreService, whose checkpoint directory (a sibling of the store) must be on the same btrfs file system.
    /// </summary>
    public string StorePath { get; }

    public BtrfsVolume Volume { get; }

    public string Directory { get; }

    public string ConfigPath { get; }

    public string LogPath { get; }

    public string PidFile { get; }

    public string RecoveryDirectory { get; }

    /// <summary>The ganesha process id while it runs (also while frozen), else null.</summary>
    public int? Pid { get; private set; }

    public bool IsFrozen { get; private set; }

    public bool IsRunning => Pid is { } pid && NfsLab.IsAlive(pid);

    public string Url(string fileName) => $"{BaseUrl}/{fileName}";

    public string LocalPath(string fileName) => Path.Combine(ExportDirectory, fileName);

    /// <summary>The server dies (kill -9): clients get "Failed to mount nfs share: nfs_service failed" at once. rpcbind keeps the registrations (a SIGTERM would remove them for every instance).</summary>
    public void SimulateOutage()
    {
        if (Pid is not { } pid)
        {
            return;
        }

        Thaw();
        NfsLab.Signal(pid, NfsLab.SIGKILL);
        NfsLab.WaitExited(pid, TimeSpan.FromSeconds(10));
        Pid = null;
    }

    /// <summary>Starts the server again after <see cref="SimulateOutage"/> (same disk, so open file handles stay valid) and waits until it serves.</summary>
    public async Task RestoreAsync()
    {
        if (IsRunning)
        {
            Thaw();
            return;
        }

        await StartAsync();
    }

    /// <summary>Synchronous <see cref="RestoreAsync"/>.</summary>
    public void Restore() => RestoreAsync().GetAwaiter().GetResult();

    /// <summary>
    /// The server hangs (SIGSTOP): connections are accepted by the kernel but never answered, so libnfs (qemu-img,
    /// QEMU) waits forever. Only a kill-timeout ends such a client. <see cref="Thaw"/> resumes it.
    /// </summary>
    public void Freeze()
    {
        if (Pid is { } pid && !IsFrozen)
        {
            NfsLab.Signal(pid, NfsLab.SIGSTOP);
            IsFrozen = true;
        }
    }

    public void Thaw()
    {
        if (Pid is { } pid && IsFrozen)
        {
            NfsLab.Signal(pid, NfsLab.SIGCONT);
        }

        IsFrozen = false;
    }

    /// <summary>Deletes a file in the export so that its space is freed at once (truncate, then rm: ganesha may still hold it open).</summary>
    public void DeleteFile(string fileName) => BtrfsVolume.FreeFile(LocalPath(fileName));

    internal void WriteConfig() => File.WriteAllText(ConfigPath, $$"""
        NFS_CORE_PARAM {
            Bind_addr = {{Address}};
            NFS_Port = {{NfsLab.NfsPort}};
            MNT_Port = {{NfsLab.MountPort}};
            Enable_NLM = false;
            Enable_RQUOTA = false;
            Enable_UDP = false;
            mount_path_pseudo = true;
            Protocols = 3, 4;
        }
        NFSV4 {
            Graceless = true;
            RecoveryBackend = fs;
            RecoveryRoot = {{RecoveryDirectory}};
        }
        NFS_KRB5 { Active_krb5 = false; }
        EXPORT {
            Export_Id = 1;
            Path = {{ExportDirectory}};
            Pseudo = {{NfsLab.PseudoPath}};
            Protocols = 3, 4;
            Transports = TCP;
            Access_Type = RW;
            Squash = no_root_squash;
            SecType = sys;
            Attr_Expiration_Time = 0;
            FSAL { Name = VFS; }
        }
        LOG { Default_Log_Level = EVENT; }
        """);

    internal async Task StartAsync()
    {
        if (File.Exists(PidFile))
        {
            File.Delete(PidFile); // left by kill -9
        }

        File.WriteAllText(LogPath, string.Empty);
        Tool.Run("ganesha.nfsd", "-f", ConfigPath, "-L", LogPath, "-p", PidFile);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            var log = File.ReadAllText(LogPath);
            if (log.Contains("Could not create export", StringComparison.Ordinal) || log.Contains("No export entries found", StringComparison.Ordinal))
            {
                StopAfterFailedStart();
                throw new InvalidOperationException($"ganesha {Name} ({Address}) started without its export {ExportDirectory}; log {LogPath}:\n{Tail(log)}");
            }

            if (log.Contains("NFS SERVER INITIALIZED", StringComparison.Ordinal) && File.Exists(PidFile))
            {
                break;
            }

            if (DateTime.UtcNow > deadline)
            {
                StopAfterFailedStart();
                throw new InvalidOperationException($"ganesha {Name} ({Address}) did not log 'NFS SERVER INITIALIZED' within 20 s; log {LogPath}:\n{Tail(log)}");
            }

            await Task.Delay(25);
        }

        Pid = int.Parse(File.ReadAllText(PidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        PortMapper.EnsureNfsRegistered();
        IsFrozen = false;
        if (!await Ports.WaitListeningAsync(Address, NfsLab.NfsPort, TimeSpan.FromSeconds(10), () => NfsLab.IsAlive(Pid.Value)))
        {
            StopAfterFailedStart();
            throw new InvalidOperationException($"ganesha {Name} does not accept connections on {Address}:{NfsLab.NfsPort}; log {LogPath}:\n{Tail(File.ReadAllText(LogPath))}");
        }
    }

    /// <summary>Stops the server for good. SIGTERM unregisters NFS and MOUNT from rpcbind for every instance, so it is used only when no other ganesha runs.</summary>
    internal void Stop(bool terminate)
    {
        if (Pid is not { } pid)
        {
            return;
        }

        Thaw();
        NfsLab.Signal(pid, terminate ? NfsLab.SIGTERM : NfsLab.SIGKILL);
        if (!NfsLab.WaitExited(pid, TimeSpan.FromSeconds(10)))
        {
            NfsLab.Signal(pid, NfsLab.SIGKILL);
            NfsLab.WaitExited(pid, TimeSpan.FromSeconds(10));
        }

        Pid = null;
    }

    private void StopAfterFailedStart()
    {
        if (File.Exists(PidFile) && int.TryParse(File.ReadAllText(PidFile).Trim(), out var pid))
        {
            NfsLab.Signal(pid, NfsLab.SIGKILL);
            NfsLab.WaitExited(pid, TimeSpan.FromSeconds(10));
        }
    }

    private static string Tail(string log) => log.Length <= 3000 ? log : log[^3000..];

    public override string ToString() => $"{Name} ({BaseUrl}, export {ExportDirectory})";
}

/// <summary>
/// NFS servers for tests: nfs-ganesha instances on 127.0.0.2 and 127.0.0.3 (by default), each exporting its own
/// loop-mounted btrfs subvolume with No_COW. Facts this relies on (see the NFS lab notes): QEMU's libnfs speaks NFSv3 and
/// asks rpcbind on the server address for the ports, and one rpcbind holds one registration per program, so every
/// instance uses the same NFS/MOUNT ports (2049/20048); Graceless, a RecoveryRoot per instance, Attr_Expiration_Time = 0
/// (else a file deleted locally and re-created over NFS is STALE) and absolute paths (ganesha chdirs to /).
/// Needs root. Everything is stopped, unmounted and freed on dispose, whatever the tests did.
/// </summary>
public sealed class NfsLab : IAsyncDisposable
{
    public const int NfsPort = 2049;
    public const int MountPort = 20048;
    public const string PseudoPath = "/images";

    internal const int SIGKILL = 9;
    internal const int SIGTERM = 15;
    internal const int SIGCONT = 18;
    internal const int SIGSTOP = 19;

    private readonly List<NfsServer> servers = new();
    private Process? rpcbind;
    private bool disposed;

    private NfsLab(string root)
    {
        Root = root;
    }

    public string Root { get; }

    public IReadOnlyList<NfsServer> Servers => servers;

    public NfsServer this[int index] => servers[index];

    /// <summary>True when this run started rpcbind (it is then stopped on dispose; an rpcbind found running is left alone).</summary>
    public bool StartedRpcbind => rpcbind is not null;

    /// <summary>
    /// Puts NFS and MOUNT back into rpcbind if someone removed them (any ganesha on this machine stopped with SIGTERM
    /// unregisters every instance). Call it before a test that opens nfs:// URLs; returns true if it had to.
    /// </summary>
    public bool EnsureRegistered() => PortMapper.EnsureNfsRegistered();

    public static bool IsSupported(out string why)
    {
        if (!BtrfsVolume.IsSupported(out why))
        {
            return false;
        }

        var missing = new[] { "ganesha.nfsd", "rpcbind", "qemu-img" }.Where(p => !Tool.Exists(p)).ToArray();
        if (missing.Length > 0 || !HasVfsFsal())
        {
            why = missing.Length > 0 ? "missing " + string.Join(", ", missing) + " (nfs-ganesha nfs-ganesha-vfs rpcbind qemu-utils)" : "nfs-ganesha-vfs is not installed";
            return false;
        }

        why = string.Empty;
        return true;
    }

    public static async Task<NfsLab> StartAsync(NfsLabOptions? options = null)
    {
        options ??= new NfsLabOptions();
        if (!IsSupported(out var why))
        {
            throw new InvalidOperationException("NfsLab: " + why);
        }

        var root = options.Root ?? Path.Combine("/tmp", $"rtnfs-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}");
        System.IO.Directory.CreateDirectory(root);
        var lab = new NfsLab(root);
        try
        {
            lab.EnsureRpcbind();
            var addresses = ChooseAddresses(options.Addresses);
            for (var i = 0; i < addresses.Count; i++)
            {
                var name = $"nfs{i + 1}";
                var directory = Path.Combine(root, name);
                System.IO.Directory.CreateDirectory(directory);
                var volume = BtrfsVolume.Create(options.VolumeSize, Path.Combine(directory, "volume"), $"rt{name}");
                NfsServer server;
                try
                {
                    var storePath = volume.CreateSubvolume("images", noCow: true);
                    var export = volume.MountSubvolume("images", Path.Combine(directory, "export"));
                    server = new NfsServer(name, addresses[i], directory, volume, export, storePath);
                }
                catch
                {
                    volume.Dispose();
                    throw;
                }

                lab.servers.Add(server);
                server.WriteConfig();
                await server.StartAsync();
            }

            return lab;
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        await Task.Yield();
        var ours = servers.Select(s => s.Pid).OfType<int>().ToHashSet();
        var othersRunning = OtherGaneshaRunning(ours);
        foreach (var server in servers)
        {
            try
            {
                // SIGTERM unregisters NFS/MOUNT from rpcbind for every instance on the machine: never do that to another lab's servers.
                server.Stop(terminate: !othersRunning);
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine($"NfsLab: stopping {server.Name}: {ex.Message}");
            }

            server.Volume.Dispose();
        }

        if (rpcbind is { } started)
        {
            try
            {
                if (!started.HasExited)
                {
                    started.Kill();
                    started.WaitForExit(5000);
                }
            }
            catch (InvalidOperationException)
            {
            }

            started.Dispose();
        }

        try
        {
            System.IO.Directory.Delete(Root, recursive: true);
        }
        catch (IOException ex)
        {
            Console.Error.WriteLine($"NfsLab: removing {Root}: {ex.Message}");
        }
    }

    private void EnsureRpcbind()
    {
        var (code, _, _) = Tool.TryRun("pgrep", new[] { "-x", "rpcbind" });
        if (code == 0)
        {
            return; // shared with whoever started it
        }

        var startInfo = new ProcessStartInfo(FindProgram("rpcbind")) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        startInfo.ArgumentList.Add("-f");
        rpcbind = Process.Start(startInfo) ?? throw new InvalidOperationException("rpcbind did not start");
        rpcbind.BeginErrorReadLine();
        rpcbind.BeginOutputReadLine();
        if (!Ports.WaitListeningAsync("127.0.0.1", 111, TimeSpan.FromSeconds(10), () => !rpcbind.HasExited).GetAwaiter().GetResult())
        {
            throw new InvalidOperationException($"rpcbind did not listen on port 111 (exit code {(rpcbind.HasExited ? rpcbind.ExitCode : -1)}).");
        }
    }

    /// <summary>The preferred addresses if nothing listens on their NFS port, else other free loopback addresses (another NFS lab may be running).</summary>
    private static IReadOnlyList<string> ChooseAddresses(IReadOnlyList<string> preferred)
    {
        var chosen = new List<string>();
        foreach (var address in preferred)
        {
            if (IsNfsPortFree(address))
            {
                chosen.Add(address);
                continue;
            }

            var replacement = Enumerable.Range(20, 200).Select(n => $"127.0.0.{n}")
                .FirstOrDefault(a => !chosen.Contains(a) && !preferred.Contains(a) && IsNfsPortFree(a))
                ?? throw new InvalidOperationException($"No free loopback address for an NFS server ({address}:{NfsPort} is in use).");
            Console.Error.WriteLine($"NfsLab: {address}:{NfsPort} is in use (another NFS server); using {replacement}.");
            chosen.Add(replacement);
        }

        return chosen;
    }

    private static bool IsNfsPortFree(string address)
    {
        foreach (var port in new[] { NfsPort, MountPort })
        {
            try
            {
                var listener = new TcpListener(IPAddress.Parse(address), port);
                listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                listener.Start();
                listener.Stop();
            }
            catch (SocketException)
            {
                return false;
            }
        }

        return true;
    }

    private static bool OtherGaneshaRunning(HashSet<int> ours)
    {
        var (_, output, _) = Tool.TryRun("pgrep", new[] { "-x", "ganesha.nfsd" });
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => int.TryParse(line.Trim(), out var pid) ? pid : 0)
            .Any(pid => pid > 0 && !ours.Contains(pid));
    }

    private static bool HasVfsFsal() =>
        new[] { "/usr/lib/x86_64-linux-gnu/ganesha", "/usr/lib/aarch64-linux-gnu/ganesha", "/usr/lib64/ganesha" }
            .Any(d => System.IO.Directory.Exists(d) && System.IO.Directory.EnumerateFiles(d, "libfsalvfs*").Any());

    private static string FindProgram(string name) =>
        new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin" }.Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists) ?? name;

    [DllImport("libc", SetLastError = true, EntryPoint = "kill")]
    private static extern int SysKill(int pid, int signal);

    internal static void Signal(int pid, int signal) => SysKill(pid, signal);

    /// <summary>Alive and not a zombie (ganesha is a child of init once it daemonized; a zombie is as good as gone).</summary>
    internal static bool IsAlive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var state = stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0];
            return state != "Z" && state != "X";
        }
        catch (IOException)
        {
            return false;
        }
    }

    internal static bool WaitExited(int pid, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (IsAlive(pid))
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }

            Thread.Sleep(20);
        }

        return true;
    }
}
