using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace ReplicaTools.TestLab;

/// <summary>
/// STOPGAP, to be reconciled with feature/storage's NFS lab fixture: the minimal NFS lab the mirror tests need,
/// built from /work/notes/nfs-mirror.md. Two nfs-ganesha servers (NFS1, NFS2) on their own loopback addresses, each
/// exporting a btrfs filesystem on a loop device (subvolume "images", No_COW), reachable as nfs://ADDRESS/images/FILE.
/// </summary>
/// <remarks>
/// Facts it is built on: QEMU's libnfs asks rpcbind on the server address for the ports, and rpcbind holds one
/// registration per program for the whole machine, so every instance uses NFS port 2049 and MOUNT port 20048.
/// SIGTERM of any ganesha unregisters them for all instances (other labs on this machine included), so servers are
/// stopped with SIGKILL and the registrations are restored with a PMAP SET when missing. A "dead server" is SIGKILL
/// (port closed), a "hung server" SIGSTOP. Default addresses 127.0.0.12/13 keep clear of other labs on .2/.3.
/// </remarks>
public sealed class MirrorNfsLab : IAsyncDisposable
{
    private const int NfsPort = 2049;
    private const int MountPort = 20048;
    private readonly List<NfsServer> servers = new();
    private bool startedRpcbind;

    private MirrorNfsLab(string root)
    {
        Root = root;
    }

    public string Root { get; }

    public IReadOnlyList<NfsServer> Servers => servers;

    public NfsServer this[int index] => servers[index];

    public static async Task<MirrorNfsLab> StartAsync(string size = "12G", params string[] addresses)
    {
        Tool.Require("ganesha.nfsd", "rpcbind", "rpcinfo", "mkfs.btrfs", "btrfs", "chattr", "mount", "umount", "qemu-img");
        if (addresses.Length == 0)
        {
            addresses = new[] { "127.0.0.12", "127.0.0.13" };
        }

        var root = Path.Combine("/tmp", $"rtnfs-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}");
        Directory.CreateDirectory(root);
        var lab = new MirrorNfsLab(root);
        try
        {
            if (Tool.TryRun("pgrep", new[] { "-x", "rpcbind" }).ExitCode != 0)
            {
                Tool.Run("rpcbind", "-w");
                lab.startedRpcbind = true;
            }

            for (var i = 0; i < addresses.Length; i++)
            {
                var server = new NfsServer($"nfs{i + 1}", addresses[i], Path.Combine(root, $"nfs{i + 1}"));
                lab.servers.Add(server);
                server.CreateFilesystem(size);
                await server.StartAsync();
            }

            EnsureRegistered();
            return lab;
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
    }

    /// <summary>Restores the rpcbind registrations (NFS v3 and MOUNT v1/v3 over TCP) if anyone removed them.</summary>
    public static void EnsureRegistered()
    {
        var listing = Tool.TryRun("rpcinfo", new[] { "-p", "127.0.0.1" }).StandardOutput;
        bool Has(int program, int version, int port) => listing.Split('\n').Any(line =>
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return f.Length >= 4 && f[0] == program.ToString(CultureInfo.InvariantCulture) && f[1] == version.ToString(CultureInfo.InvariantCulture) && f[2] == "tcp" && f[3] == port.ToString(CultureInfo.InvariantCulture);
        });
        var wanted = new[] { (100003, 3, NfsPort), (100005, 1, MountPort), (100005, 3, MountPort) };
        if (wanted.All(w => Has(w.Item1, w.Item2, w.Item3)))
        {
            return;
        }

        // PMAP v2 SET over UDP from a reserved port: xid, CALL, rpcvers 2, prog 100000, vers 2, proc 1, AUTH_NONE x2, (prog, vers, tcp, port).
        for (var port = 700; port < 1000; port++)
        {
            try
            {
                using var udp = new UdpClient(new IPEndPoint(IPAddress.Loopback, port));
                udp.Client.ReceiveTimeout = 2000;
                foreach (var (program, version, servicePort) in wanted)
                {
                    var packet = new byte[56];
                    uint[] words = { (uint)Random.Shared.Next(), 0, 2, 100000, 2, 1, 0, 0, 0, 0, (uint)program, (uint)version, 6, (uint)servicePort };
                    for (var i = 0; i < words.Length; i++)
                    {
                        BinaryPrimitives.WriteUInt32BigEndian(packet.AsSpan(i * 4), words[i]);
                    }

                    udp.Send(packet, packet.Length, new IPEndPoint(IPAddress.Loopback, 111));
                    var remote = new IPEndPoint(IPAddress.Any, 0);
                    udp.Receive(ref remote);
                }

                return;
            }
            catch (SocketException)
            {
                // Port taken (or no answer): try the next reserved port.
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var server in servers)
        {
            server.Kill();
        }

        await Task.Delay(200);
        foreach (var server in servers)
        {
            server.RemoveFilesystem();
        }

        if (startedRpcbind && Tool.TryRun("pgrep", new[] { "-x", "ganesha.nfsd" }).ExitCode != 0 && File.Exists("/run/rpcbind.lock"))
        {
            // Only the rpcbind this lab started, and only when no other NFS server (another lab's) still needs it.
            var pid = Tool.TryRun("pgrep", new[] { "-x", "rpcbind" }).StandardOutput.Trim();
            if (pid.Length > 0 && !pid.Contains('\n'))
            {
                Tool.TryRun("kill", new[] { pid });
            }
        }

        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>One nfs-ganesha server of the lab: its address, its export on disk and what tests do to it.</summary>
public sealed class NfsServer
{
    internal NfsServer(string name, string address, string directory)
    {
        Name = name;
        Address = address;
        Directory = directory;
    }

    public string Name { get; }

    public string Address { get; }

    public string Directory { get; }

    /// <summary>The exported directory on this machine (the btrfs subvolume's mount point).</summary>
    public string ExportDirectory => Path.Combine(Directory, "export");

    public string DiskImage => Path.Combine(Directory, "disk.img");

    private string PidFile => Path.Combine(Directory, "ganesha.pid");

    private string LogFile => Path.Combine(Directory, "ganesha.log");

    public int ProcessId { get; private set; }

    /// <summary>The URL QEMU and qemu-img use for a file in the export.</summary>
    public string Url(string file) => $"nfs://{Address}/images/{file}";

    /// <summary>The same file as seen on this machine (for checks that need no NFS).</summary>
    public string LocalPath(string file) => Path.Combine(ExportDirectory, file);

    public bool IsRunning => ProcessId > 0 && System.IO.Directory.Exists($"/proc/{ProcessId}") &&
                             File.ReadAllText($"/proc/{ProcessId}/stat").Split(' ')[2] is not "Z";

    internal void CreateFilesystem(string size)
    {
        var rootMount = Path.Combine(Directory, "root");
        System.IO.Directory.CreateDirectory(rootMount);
        System.IO.Directory.CreateDirectory(ExportDirectory);
        System.IO.Directory.CreateDirectory(Path.Combine(Directory, "recovery"));
        Tool.Run("truncate", "-s", size, DiskImage);
        Tool.Run("mkfs.btrfs", "-q", DiskImage);
        Tool.Run("mount", "-o", "loop", DiskImage, rootMount);
        try
        {
            Tool.Run("btrfs", "subvolume", "create", Path.Combine(rootMount, "images"));
            Tool.Run("chattr", "+C", Path.Combine(rootMount, "images"));
        }
        finally
        {
            Tool.Run("umount", rootMount);
        }

        // ganesha cannot export a subvolume directory of a mounted btrfs; it can export the subvolume's own mount.
        Tool.Run("mount", "-o", "loop,subvol=images", DiskImage, ExportDirectory);
        File.WriteAllText(Path.Combine(Directory, "ganesha.conf"), $$"""
            NFS_CORE_PARAM { Bind_addr = {{Address}}; NFS_Port = 2049; MNT_Port = 20048; Enable_NLM = false; Enable_RQUOTA = false;
                             Enable_UDP = false; mount_path_pseudo = true; Protocols = 3, 4; }
            NFSV4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = {{Path.Combine(Directory, "recovery")}}; }
            NFS_KRB5 { Active_krb5 = false; }
            EXPORT { Export_Id = 1; Path = {{ExportDirectory}}; Pseudo = /images; Protocols = 3, 4; Transports = TCP; Access_Type = RW;
                     Squash = no_root_squash; SecType = sys; Attr_Expiration_Time = 0; FSAL { Name = VFS; } }
            LOG { Default_Log_Level = EVENT; }
            """);
    }

    /// <summary>Starts (or restarts after <see cref="Kill"/>) the server; the export keeps its files and handles.</summary>
    public async Task StartAsync()
    {
        File.Delete(PidFile);
        File.WriteAllText(LogFile, string.Empty);
        Tool.Run("ganesha.nfsd", "-f", Path.Combine(Directory, "ganesha.conf"), "-L", LogFile, "-p", PidFile);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!File.ReadAllText(LogFile).Contains("NFS SERVER INITIALIZED", StringComparison.Ordinal))
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new InvalidOperationException($"ganesha {Name} on {Address} did not start: {File.ReadAllText(LogFile)}");
            }

            await Task.Delay(50);
        }

        if (File.ReadAllText(LogFile).Contains("Could not create export", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"ganesha {Name} on {Address} started without its export: {File.ReadAllText(LogFile)}");
        }

        for (var i = 0; i < 100 && !File.Exists(PidFile); i++)
        {
            await Task.Delay(50);
        }

        ProcessId = int.Parse(File.ReadAllText(PidFile).Trim(), CultureInfo.InvariantCulture);
        MirrorNfsLab.EnsureRegistered();
        if (!await Ports.WaitListeningAsync(Address, 2049, TimeSpan.FromSeconds(10)))
        {
            throw new InvalidOperationException($"ganesha {Name} does not listen on {Address}:2049.");
        }
    }

    /// <summary>The server dies (port closed, registrations kept): clients fail fast with "nfs_service failed".</summary>
    public void Kill()
    {
        Thaw();
        if (IsRunning)
        {
            Tool.TryRun("kill", new[] { "-KILL", ProcessId.ToString(CultureInfo.InvariantCulture) });
            for (var i = 0; i < 100 && IsRunning; i++)
            {
                Thread.Sleep(20);
            }
        }
    }

    /// <summary>The server hangs (SIGSTOP): libnfs clients wait forever.</summary>
    public void Freeze() => Tool.TryRun("kill", new[] { "-STOP", ProcessId.ToString(CultureInfo.InvariantCulture) });

    public void Thaw()
    {
        if (ProcessId > 0)
        {
            Tool.TryRun("kill", new[] { "-CONT", ProcessId.ToString(CultureInfo.InvariantCulture) });
        }
    }

    /// <summary>Removes a file from the export so that space is freed at once (ganesha may hold it open: truncate first).</summary>
    public void DeleteFile(string file)
    {
        var path = LocalPath(file);
        if (File.Exists(path))
        {
            Tool.TryRun("truncate", new[] { "-s", "0", path });
            File.Delete(path);
        }
    }

    internal void RemoveFilesystem()
    {
        // A killed ganesha takes a moment to drop its files: retry before falling back to a lazy unmount.
        for (var i = 0; i < 50 && Tool.TryRun("umount", new[] { ExportDirectory }).ExitCode != 0 && Tool.TryRun("mountpoint", new[] { "-q", ExportDirectory }).ExitCode == 0; i++)
        {
            Thread.Sleep(200);
        }

        if (Tool.TryRun("mountpoint", new[] { "-q", ExportDirectory }).ExitCode == 0)
        {
            Tool.TryRun("umount", new[] { "-l", ExportDirectory });
        }

        Tool.TryRun("umount", new[] { Path.Combine(Directory, "root") });
    }

    public override string ToString() => $"{Name} ({Address})";
}
