using ReplicaTools.Core.Failover;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Mirror;

/// <summary>The same code paths through an SSH session (the lab's sshd on 127.0.0.2): probes, QMP over socat, cleanup.</summary>
[Collection(LabCollection.Name)]
public sealed class MirrorOverSshTests(LabFixture fixture) : IAsyncLifetime
{
    private const long MiB = 1024 * 1024;
    private readonly string directory = Path.Combine("/tmp", "rtssh-" + Guid.NewGuid().ToString("N")[..8]);
    private ReplicaSession session = null!;
    private QemuVm? vm;

    public Task InitializeAsync()
    {
        Directory.CreateDirectory(directory);
        session = ReplicaSessionRegistry.Create(fixture.Lab[0].Options(), controlDirectory: fixture.Lab.ControlDirectory);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (vm is not null)
        {
            await vm.DisposeAsync();
        }

        await ReplicaSessionRegistry.RemoveAsync(session);
        foreach (var pidFile in Directory.GetFiles(directory, "*.pid"))
        {
            Tool.TryRun("kill", new[] { "-9", File.ReadAllText(pidFile).Trim() });
        }

        await Task.Delay(200);
        Directory.Delete(directory, recursive: true);
    }

    [Fact]
    public async Task MirrorAndPivot_ThroughASession()
    {
        var source = Path.Combine(directory, "src.qcow2");
        Images.Create(source, "qcow2", "32M");
        Images.Write(source, "qcow2", 0x21, 0, 4 * MiB);
        vm = await QemuVm.StartAsync(directory, "sshvm", new LabDisk("virtio0", source, "qcow2"));
        var destination = Path.Combine(directory, "copy.qcow2");
        var mirror = VirtualMachine.Open(session, null, vm.SocketPath).CreateMirrorBackend();

        var plan = await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination) });
        Assert.All(plan.Steps, s => Assert.Equal("host2", s.HostName));
        var job = await mirror.StartAsync(plan);
        Assert.Same(session, job.Session);
        await vm.WriteAsync("virtio0", 0x22, 8 * MiB, MiB);
        var ready = await mirror.WaitAsync(null, new MirrorWaitOptions());
        Assert.True(ready.Ready);
        Assert.Equal(destination, Assert.Single(await mirror.GetAsync(null)).Destination);

        var pivoted = await mirror.StopAsync(await mirror.PlanStopAsync(null, pivot: true, force: false), TimeSpan.FromMinutes(2));

        Assert.Equal(DriveMirrorState.Pivoted, pivoted.State);
        Assert.Equal(destination, (await VirtualMachine.Open(session, null, vm.SocketPath).ResolveDiskAsync(null)).Source);
        await vm.DisposeAsync();
        var (identical, output) = Images.Compare(source, "qcow2", destination, "qcow2");
        Assert.True(identical, output);
    }

    [Fact]
    public async Task FailoverStart_ThroughASession_ProbesOnTheHost()
    {
        var copy = Path.Combine(directory, "copy.vdi");
        Images.Create(copy, "vdi", "16M");
        var socket = Path.Combine(directory, "sshfo.qmp");
        var launcher = new ReplicaVmLauncher(session);

        var result = await launcher.StartAsync(await launcher.PlanAsync(new ReplicaVmRequest
        {
            Name = "sshfo", Copies = new[] { ImageLocation.Parse(Path.Combine(directory, "gone.vdi")), ImageLocation.Parse(copy) },
            QmpSocket = socket, Machine = "pc,accel=tcg", Paused = true, MemoryMB = 32, QemuArguments = new[] { "-nodefaults" },
        }));

        Assert.Equal(2, result.UsedPreference);
        Assert.Same(session, result.Session);
        Assert.NotNull(result.ProcessId);
        Assert.Equal(copy, (await VirtualMachine.Open(session, null, socket).ResolveDiskAsync(null)).Source);
    }
}
