using System.Globalization;
using System.Security;
using ReplicaTools.Core;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Drbd;

/// <summary>
/// A fresh <see cref="DrbdLab"/> (mirror-a and mirror-b in their own UTS namespaces, loop-device disks, the simulated
/// DRBD kernel) for each test, on the shared sshd lab, plus what the tests share.
/// </summary>
public abstract class DrbdLabTest : IAsyncLifetime
{
    public const long MiB = 1 << 20;

    /// <summary>The secret of every test request: it must never show up anywhere but in the 0600 resource files.</summary>
    public const string Secret = "Lab-Secret-7f3a9c";

    private readonly bool withTgt;

    protected DrbdLabTest(LabFixture fixture, bool withTgt = false)
    {
        Tool.Require("drbdadm", "drbdmeta", "losetup", "unshare", "nbd-server", "nbdcopy", "qemu-io", "qemu-img");
        Ssh = fixture.Lab;
        this.withTgt = withTgt;
    }

    protected SshLab Ssh { get; }

    protected DrbdLab Lab { get; private set; } = null!;

    protected ReplicatedDiskManager Manager { get; private set; } = null!;

    /// <summary>The client host (127.0.0.4): reads and writes exports as a KVM host would.</summary>
    protected SshHost Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Lab = await DrbdLab.StartAsync(Ssh, 64 * MiB, withTgt);
        Manager = new ReplicatedDiskManager(Lab.Environment);
        Client = Ssh[2].CreateHost();
        await Client.ConnectAsync();
    }

    public async Task DisposeAsync()
    {
        await Client.DisconnectAsync();
        await Lab.DisposeAsync();
    }

    protected static SecureString SecureText(string text)
    {
        var secure = new SecureString();
        foreach (var c in text)
        {
            secure.AppendChar(c);
        }

        secure.MakeReadOnly();
        return secure;
    }

    /// <summary>A request for r0 with mirror-a primary on the lab's disks, a free replication port, exports on each host's own address.</summary>
    protected ReplicatedDiskRequest Request(ReplicatedDiskExport export = ReplicatedDiskExport.Nbd, string? sourceImage = null, string name = "r0", int? port = null, string secret = Secret) => new()
    {
        Name = name,
        Primary = Lab.SessionA,
        Secondary = Lab.SessionB,
        PrimaryDisk = Lab.DiskA,
        SecondaryDisk = Lab.DiskB,
        Port = port ?? FreePortOnBoth(),
        SharedSecret = SecureText(secret),
        PrimaryAddress = Lab.MirrorA.Address,
        SecondaryAddress = Lab.MirrorB.Address,
        Export = export,
        NbdPort = NbdPort,
        PrimaryExportAddress = Lab.MirrorA.Address,
        SecondaryExportAddress = Lab.MirrorB.Address,
        Iqn = export == ReplicatedDiskExport.Iscsi ? Iqn : null,
        SourceImage = sourceImage,
    };

    protected int NbdPort { get; } = Ports.Free("127.0.0.2");

    protected string Iqn { get; } = TgtLab.NewIqn("r0");

    /// <summary>Sets up r0 and waits until both nodes are UpToDate.</summary>
    protected async Task<ReplicatedDisk> CreateInSyncAsync(ReplicatedDiskRequest request)
    {
        await Manager.ExecuteAsync(await Manager.PlanNewAsync(request));
        return await Manager.WaitAsync(Both, request.Name, TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(50));
    }

    protected IReadOnlyList<ReplicaSession> Both => new[] { Lab.SessionA, Lab.SessionB };

    /// <summary>Whether a backing disk carries DRBD metadata, asked of the real drbdmeta.</summary>
    protected static bool HasMetadata(string disk) => Tool.TryRun("drbdmeta", new[] { "-", "v09", disk, "internal", "dump-md" }).ExitCode == 0;

    protected static string[] FilesIn(string directory) => Directory.Exists(directory) ? Directory.GetFiles(directory) : Array.Empty<string>();

    /// <summary>Nothing of the lab's: no resource files, NBD or tgt files on either host, no metadata on the disks, no kernel step.</summary>
    protected void AssertNothingWritten()
    {
        foreach (var session in Both)
        {
            var layout = Lab.Layout(session);
            Assert.Empty(FilesIn(layout.ConfigDirectory));
            Assert.Empty(FilesIn(layout.NbdStateDirectory!));
            Assert.Empty(FilesIn(layout.TgtConfigDirectory));
        }

        Assert.False(HasMetadata(Lab.DiskA), "mirror-a's disk got DRBD metadata");
        Assert.False(HasMetadata(Lab.DiskB), "mirror-b's disk got DRBD metadata");
        Assert.Empty(Lab.Kernel.Steps);
    }

    protected async Task<string> QemuIoAsync(string uri, string command)
    {
        var result = await Client.RunAsync(new CommandSpec("qemu-io", "-f", "raw", "-c", command, uri));
        Assert.DoesNotContain("Pattern verification failed", result.StandardOutput);
        Assert.Contains(command.StartsWith("read", StringComparison.Ordinal) ? "read " : "wrote ", result.StandardOutput);
        return result.StandardOutput;
    }

    protected static byte[] ReadBytes(string path, long offset, int length)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        stream.Position = offset;
        var buffer = new byte[length];
        stream.ReadExactly(buffer);
        return buffer;
    }

    private static int FreePortOnBoth()
    {
        for (var i = 0; ; i++)
        {
            var port = Ports.Free("127.0.0.2");
            if (port < 65000 && IsFree("127.0.0.3", port))
            {
                return port;
            }
        }
    }

    private static bool IsFree(string address, int port)
    {
        try
        {
            var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Parse(address), port);
            listener.Start();
            listener.Stop();
            return true;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return false;
        }
    }

    protected static string Text(long value) => value.ToString(CultureInfo.InvariantCulture);
}
