using System.Diagnostics;
using ReplicaTools.Core;
using ReplicaTools.Core.Iscsi;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Iscsi;

/// <summary>
/// tgt targets set up over SSH on lab host host2 (127.0.0.2) by the code under test, served by the lab's own tgtd, and
/// read and written by userspace initiators (qemu-io with iscsi:// URLs, iscsi-inq) running on host3.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class IscsiTargetLabTests : IAsyncLifetime
{
    private const int MiB = 1 << 20;
    private readonly SshLab lab;
    private readonly SshHost storage;
    private readonly SshHost client;
    private TgtLab tgt = null!;
    private IscsiTargetManager manager = null!;

    public IscsiTargetLabTests(LabFixture fixture)
    {
        Tool.Require("tgtd", "tgtadm", "qemu-io", "qemu-img", "iscsi-inq");
        lab = fixture.Lab;
        storage = lab[0].CreateHost();
        client = lab[1].CreateHost();
    }

    public async Task InitializeAsync()
    {
        tgt = await TgtLab.StartAsync(lab[0].Address);
        manager = new IscsiTargetManager(storage, tgt.ConfigDirectory, tgt.ControlPort);
        await Task.WhenAll(storage.ConnectAsync(), client.ConnectAsync());
    }

    public async Task DisposeAsync()
    {
        await tgt.DisposeAsync();
        await storage.DisconnectAsync();
        await client.DisconnectAsync();
    }

    [Fact]
    public async Task NewTarget_ServesTheBackingStore_ExactBytesBothWays_OverItsUri()
    {
        var disk = BackingFile("disk.raw", 16 * MiB);
        var iqn = TgtLab.NewIqn("rw");
        var plan = await manager.PlanAsync(new IscsiTargetRequest { Iqn = iqn, BackingStore = disk, Lun = 3 });
        Assert.Equal(new[] { "mkdir", "sh", "tgtadm", "tgtadm", "tgtadm" }, plan.Commands.Select(c => c.Command.Arguments[0]));
        Assert.Contains($"-b {disk}", plan.Describe());

        var target = await manager.CreateAsync(plan);
        Assert.Equal(IscsiTargetState.Running, target.State);
        Assert.Equal(3, target.Lun);
        Assert.Equal(disk, target.BackingStore);
        Assert.Equal(tgt.Uri(iqn, 3), target.Uri);
        Assert.Empty(target.InitiatorName);

        // A pattern written on the host is read through iSCSI from another host ...
        WritePattern(disk, 0x5a, 4 * MiB, MiB);
        await QemuIoAsync(target.Uri!, $"read -P 0x5a {4 * MiB} {MiB}");

        // ... and a pattern written through iSCSI lands on those exact bytes of the backing store.
        await QemuIoAsync(target.Uri!, $"write -P 0xc3 {9 * MiB} {2 * MiB}");
        var bytes = ReadBytes(disk, 9 * MiB - 1, 2 * MiB + 2);
        Assert.NotEqual(0xc3, bytes[0]);
        Assert.All(bytes[1..^1], b => Assert.Equal(0xc3, b));
        Assert.NotEqual(0xc3, bytes[^1]);
    }

    [Fact]
    public async Task InitiatorAllowList_LetsTheNamedInitiatorIn_AndRefusesAnother()
    {
        var disk = BackingFile("acl.raw", 4 * MiB);
        WritePattern(disk, 0x11, 0, MiB);
        var iqn = TgtLab.NewIqn("acl");
        const string allowed = "iqn.2024-10.org.replicatools.lab:kvm1";
        var target = await manager.CreateAsync(await manager.PlanAsync(new IscsiTargetRequest { Iqn = iqn, BackingStore = disk, InitiatorName = new[] { allowed } }));
        Assert.Equal(new[] { allowed }, target.InitiatorName);

        var inquiry = await client.RunAsync(new CommandSpec("iscsi-inq", "-i", allowed, target.Uri!));
        Assert.Contains("DIRECT_ACCESS", inquiry.StandardOutput);
        var refused = await client.RunAsync(new CommandSpec("iscsi-inq", "-i", "iqn.2024-10.org.replicatools.lab:intruder", target.Uri!) { ThrowOnFailure = false });
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains("Login Failed", refused.StandardError + refused.StandardOutput);
    }

    [Fact]
    public async Task Target_SurvivesATgtdRestart_FromItsConfDFile_WithItsLunAndAllowList()
    {
        var disk = BackingFile("persist.raw", 4 * MiB);
        WritePattern(disk, 0x77, MiB, MiB);
        var iqn = TgtLab.NewIqn("persist");
        var created = await manager.CreateAsync(await manager.PlanAsync(new IscsiTargetRequest
        {
            Iqn = iqn, BackingStore = disk, Lun = 2, InitiatorName = new[] { "iqn.2024-10.org.replicatools.lab:kvm1" }, InitiatorAddress = new[] { "127.0.0.0/8" },
        }));
        Assert.Equal(manager.ConfigFileFor(iqn), created.ConfigFile);

        await tgt.RestartAsync();

        var target = Assert.Single(await manager.ListAsync(), t => t.Iqn == iqn);
        Assert.Equal(IscsiTargetState.Running, target.State);
        Assert.Equal(2, target.Lun);
        Assert.Equal(disk, target.BackingStore);
        Assert.Equal(new[] { "iqn.2024-10.org.replicatools.lab:kvm1" }, target.InitiatorName);
        Assert.Equal(new[] { "127.0.0.0/8" }, target.InitiatorAddress);
        await QemuIoAsync(target.Uri!, $"read -P 0x77 {MiB} {MiB}", "iqn.2024-10.org.replicatools.lab:kvm1");
    }

    [Fact]
    public async Task Remove_RefusesWhileAnInitiatorIsLoggedIn_ThenForceDropsIt_AndLeavesNothing()
    {
        var disk = BackingFile("busy.raw", 4 * MiB);
        var iqn = TgtLab.NewIqn("busy");
        await manager.CreateAsync(await manager.PlanAsync(new IscsiTargetRequest { Iqn = iqn, BackingStore = disk }));

        // qemu-io without -c stays logged in until its standard input closes.
        using var session = Process.Start(new ProcessStartInfo("qemu-io", new[] { "-f", "raw", tgt.Uri(iqn) }) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true })!;
        try
        {
            var busy = await WaitForAsync(async () => (await manager.ListAsync()).Single(t => t.Iqn == iqn) is { ConnectedInitiators.Count: > 0 } t ? t : null);
            var refused = await Assert.ThrowsAsync<ReplicaException>(() => manager.RemoveAsync(busy, force: false));
            Assert.Equal("IscsiTargetInUse", refused.ErrorId);
            Assert.Contains(iqn, tgt.TargetNames());

            await manager.RemoveAsync(busy, force: true);
        }
        finally
        {
            session.StandardInput.Close();
            session.WaitForExit(10000);
        }

        Assert.DoesNotContain(iqn, tgt.TargetNames());
        Assert.Empty(Directory.GetFiles(tgt.ConfigDirectory));
        Assert.Empty(await manager.ListAsync());
    }

    [Fact]
    public async Task Standby_WritesOnlyTheStandbyFile_ActivationStartsIt_AndStandbyStopsItAgain()
    {
        var disk = BackingFile("standby.raw", 4 * MiB);
        WritePattern(disk, 0x42, 0, MiB);
        var iqn = TgtLab.NewIqn("standby");
        var plan = await manager.PlanAsync(new IscsiTargetRequest { Iqn = iqn, BackingStore = disk, Start = false });
        Assert.DoesNotContain(plan.Commands, c => c.Command.Arguments[0] == "tgtadm");
        var standby = await manager.CreateAsync(plan);
        Assert.Equal(IscsiTargetState.Standby, standby.State);
        Assert.Equal(manager.ConfigFileFor(iqn) + ".standby", standby.ConfigFile);
        Assert.DoesNotContain(iqn, tgt.TargetNames());

        // A tgtd restart does not bring a standby target up.
        await tgt.RestartAsync();
        manager = new IscsiTargetManager(storage, tgt.ConfigDirectory, tgt.ControlPort);
        Assert.DoesNotContain(iqn, tgt.TargetNames());

        var running = await manager.CreateAsync(await manager.PlanActivationAsync(standby));
        Assert.Equal(IscsiTargetState.Running, running.State);
        Assert.Equal(manager.ConfigFileFor(iqn), running.ConfigFile);
        await QemuIoAsync(running.Uri!, $"read -P 0x42 0 {MiB}");

        await manager.StandbyAsync(running);
        Assert.DoesNotContain(iqn, tgt.TargetNames());
        Assert.Equal(IscsiTargetState.Standby, Assert.Single(await manager.ListAsync()).State);
    }

    [Fact]
    public async Task BadInput_IsAClearError_AndWritesNothing()
    {
        var disk = BackingFile("bad.raw", 4 * MiB);
        var iqn = TgtLab.NewIqn("taken");
        await manager.CreateAsync(await manager.PlanAsync(new IscsiTargetRequest { Iqn = iqn, BackingStore = disk }));
        var filesBefore = Directory.GetFiles(tgt.ConfigDirectory);

        async Task<ReplicaException> Refused(IscsiTargetRequest request) => await Assert.ThrowsAsync<ReplicaException>(() => manager.PlanAsync(request));

        var badName = await Refused(new IscsiTargetRequest { Iqn = "iqn.2024-10.Com.Example:UPPER; rm -rf /", BackingStore = disk });
        Assert.Equal("IscsiTargetInvalidArgument", badName.ErrorId);
        Assert.Contains("-Iqn", badName.Message);

        var missing = await Refused(new IscsiTargetRequest { Iqn = TgtLab.NewIqn("missing"), BackingStore = Path.Combine(tgt.Root, "nope.raw") });
        Assert.Equal("IscsiBackingStoreNotFound", missing.ErrorId);
        Assert.Contains("host2", missing.Message);

        var exists = await Refused(new IscsiTargetRequest { Iqn = iqn, BackingStore = BackingFile("other.raw", MiB) });
        Assert.Equal("IscsiTargetExists", exists.ErrorId);
        Assert.Equal(ReplicaErrorCategory.ResourceExists, exists.Category);

        var shared = await Refused(new IscsiTargetRequest { Iqn = TgtLab.NewIqn("second"), BackingStore = disk });
        Assert.Equal("IscsiBackingStoreInUse", shared.ErrorId);
        Assert.Contains(iqn, shared.Message);

        var badLun = await Refused(new IscsiTargetRequest { Iqn = TgtLab.NewIqn("lun"), BackingStore = disk, Lun = 0 });
        Assert.Contains("-Lun 0", badLun.Message);

        Assert.Equal(filesBefore, Directory.GetFiles(tgt.ConfigDirectory));
        Assert.Equal(new[] { iqn }, tgt.TargetNames());
    }

    [Fact]
    public async Task NoTgtdOnTheControlPort_IsTgtdNotRunning_WhileConfiguredTargetsAreStillListed()
    {
        var idle = new IscsiTargetManager(storage, tgt.ConfigDirectory, controlPort: 1);
        var disk = BackingFile("idle.raw", MiB);
        var error = await Assert.ThrowsAsync<ReplicaException>(() => idle.PlanAsync(new IscsiTargetRequest { Iqn = TgtLab.NewIqn("idle"), BackingStore = disk }));
        Assert.Equal("TgtdNotRunning", error.ErrorId);
        Assert.Contains("control port 1", error.Message);

        var standby = await idle.CreateAsync(await idle.PlanAsync(new IscsiTargetRequest { Iqn = TgtLab.NewIqn("idle"), BackingStore = disk, Start = false }));
        Assert.Equal(IscsiTargetState.Standby, Assert.Single(await idle.ListAsync()).State);
        await idle.RemoveAsync(standby, force: false);
        Assert.Empty(Directory.GetFiles(tgt.ConfigDirectory));
    }

    private string BackingFile(string name, long size)
    {
        var path = Path.Combine(tgt.Root, name);
        using (var stream = new FileStream(path, FileMode.CreateNew))
        {
            stream.SetLength(size);
        }

        return path;
    }

    private async Task QemuIoAsync(string uri, string command, string? initiator = null)
    {
        // qemu's iscsi driver takes the initiator name from -iscsi or the json: form; a plain URL uses its default.
        var arguments = initiator is null
            ? new[] { "qemu-io", "-f", "raw", "-c", command, uri }
            : new[] { "qemu-io", "-c", command, "--image-opts", $"driver=raw,file.driver=iscsi,file.transport=tcp,file.portal={Portal(uri)},file.target={Target(uri)},file.lun={LunOf(uri)},file.initiator-name={initiator}" };
        var result = await client.RunAsync(new CommandSpec(arguments));
        Assert.DoesNotContain("Pattern verification failed", result.StandardOutput);
        Assert.Contains(command.StartsWith("read", StringComparison.Ordinal) ? "read " : "wrote ", result.StandardOutput);
    }

    private static string Portal(string uri) => new Uri(uri).Authority;

    private static string Target(string uri) => new Uri(uri).AbsolutePath.Trim('/').Split('/')[0];

    private static string LunOf(string uri) => new Uri(uri).AbsolutePath.Trim('/').Split('/')[1];

    private static void WritePattern(string path, byte pattern, long offset, int length)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
        stream.Position = offset;
        stream.Write(Enumerable.Repeat(pattern, length).ToArray());
    }

    private static byte[] ReadBytes(string path, long offset, int length)
    {
        using var stream = File.OpenRead(path);
        stream.Position = offset;
        var buffer = new byte[length];
        stream.ReadExactly(buffer);
        return buffer;
    }

    private static async Task<T> WaitForAsync<T>(Func<Task<T?>> probe)
        where T : class
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            if (await probe() is { } value)
            {
                return value;
            }

            Assert.True(DateTime.UtcNow < deadline, "timed out waiting for the condition");
            await Task.Delay(100);
        }
    }
}
