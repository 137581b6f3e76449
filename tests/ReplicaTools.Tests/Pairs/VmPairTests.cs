using ReplicaTools.Core;
using ReplicaTools.Core.Clone;
using ReplicaTools.Core.Failover;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;
using ReplicaTools.TestLab;
using static ReplicaTools.Tests.Clone.CloneTestKit;

namespace ReplicaTools.Tests.Pairs;

/// <summary>
/// One VM of each kind with every kind of VM object made from it for real: a bare QEMU, and a libvirt domain on a
/// libvirtd of its own (a non-default URI, so losing the URI anywhere means not finding the domain). Both are started
/// by Start-ReplicaVM's core, cloned (a checkpoint), and mirrored (a job in sync).
/// </summary>
public sealed class VmPairFixture : IAsyncLifetime
{
    private const string DomainTemplate = """
        <domain type='qemu'><name>x</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
        <os><type arch='x86_64' machine='pc'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/nowhere.qcow2'/><target dev='vda' bus='virtio'/></disk>
        <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>
        """;

    private readonly Dictionary<VmBackend, VmObjects> made = new();
    private LibvirtLab? libvirt;
    private string directory = null!;
    private int? qemuProcess;

    public VmObjects this[VmBackend backend] => made[backend];

    public async Task InitializeAsync()
    {
        directory = NewDirectory("rtpair");
        libvirt = await LibvirtLab.StartPrivateAsync();
        made[VmBackend.Qmp] = await MakeAsync(new ReplicaVmRequest
        {
            Name = "pair", Copies = new[] { ImageLocation.Parse(Image(directory, "qemu")) }, QmpSocket = Path.Combine(directory, "pair.qmp"),
            Machine = "pc,accel=tcg", QemuArguments = new[] { "-nodefaults" }, Paused = true, MemoryMB = 32,
        }, Path.Combine(directory, "qemu-mirror.qcow2"));
        made[VmBackend.Libvirt] = await MakeAsync(new ReplicaVmRequest
        {
            Name = libvirt.UniqueName("pair"), Copies = new[] { ImageLocation.Parse(Image(libvirt.Directory, "domain")) }, DomainXml = DomainTemplate,
            LibvirtUri = libvirt.ConnectionUri, Paused = true, MemoryMB = 48,
        }, Path.Combine(libvirt.Directory, $"pair-{Guid.NewGuid().ToString("N")[..6]}-mirror.qcow2"));
    }

    public async Task DisposeAsync()
    {
        if (qemuProcess is > 0)
        {
            Tool.TryRun("kill", new[] { "-9", qemuProcess.Value.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        }

        if (libvirt is not null)
        {
            await libvirt.DisposeAsync();
        }

        DeleteDirectory(directory);
    }

    private static string Image(string directory, string stem)
    {
        var image = Path.Combine(directory, $"pair-{stem}-{Guid.NewGuid().ToString("N")[..6]}.qcow2");
        CreateImage(image, "qcow2", 16 * MiB, image + ".raw", new[] { new Clone.GuestWrite(0x5a, 0, 2 * MiB) });
        return image;
    }

    private async Task<VmObjects> MakeAsync(ReplicaVmRequest request, string mirrorDestination)
    {
        var launcher = new ReplicaVmLauncher(ReplicaSession.Local);
        var started = await launcher.StartAsync(await launcher.PlanAsync(request));
        if (started.Backend == VmBackend.Qmp)
        {
            qemuProcess = started.ProcessId;
        }

        var target = VmTarget.FromParameters(started.Session, started.VMName, started.QmpSocket, started.LibvirtUri);
        var vm = target.Open();
        var clone = await new NbdCloneOperation(new CloneRequest
        {
            VirtualMachine = vm,
            Drive = started.Drive,
            Destination = Path.Combine(directory, $"{started.Backend}-clone.raw"),
            DestinationSession = ReplicaSession.Local,
        }).RunAsync(CancellationToken.None);
        var checkpoint = (await DiskCheckpointManager.ListAsync(vm, started.Drive)).Single(c => c.Name == clone.Checkpoint);
        var mirror = vm.CreateMirrorBackend();
        var plan = await mirror.PlanStartAsync(new MirrorStartRequest { Drive = started.Drive, Destination = ImageLocation.Parse(mirrorDestination) });
        await mirror.StartAsync(plan);
        var job = await mirror.WaitAsync(started.Drive, new MirrorWaitOptions { Timeout = TimeSpan.FromMinutes(2) });
        return new VmObjects(target, request.Copies[0].Text, started, clone, checkpoint, job);
    }
}

/// <summary>A VM and one object of each kind that describes it.</summary>
public sealed record VmObjects(VmTarget Target, string Image, ReplicaVmStartResult Started, CloneResult Cloned, DiskCheckpoint Checkpoint, DriveMirrorJob Job)
{
    public VmObject Get(string kind) => kind switch
    {
        "start" => Started,
        "clone" => Cloned,
        "checkpoint" => Checkpoint,
        _ => Job,
    };
}

/// <summary>
/// The output of every VM cmdlet, for a bare QEMU and for a libvirt domain on a non-default URI, given to every other VM
/// cmdlet's core by its identity properties alone (VMName, QmpSocket, LibvirtUri, Drive, Session: what binds by property
/// name), reaches the same VM and the same drive. The cmdlets' own binding is covered by tests/Pester/VmPairs.Tests.ps1.
/// </summary>
[Collection(Qemu.LibvirtCollection.Name)]
public sealed class VmPairTests : IClassFixture<VmPairFixture>
{
    private readonly VmPairFixture fixture;

    public VmPairTests(VmPairFixture fixture, Qemu.LibvirtFixture libvirt)
    {
        this.fixture = fixture;
        _ = libvirt; // the collection's libvirtd (qemu:///system) runs; the pair domain lives on a private one
    }

    public static TheoryData<VmBackend, string> Pairs()
    {
        var data = new TheoryData<VmBackend, string>();
        foreach (var backend in new[] { VmBackend.Qmp, VmBackend.Libvirt })
        {
            foreach (var kind in new[] { "start", "clone", "checkpoint", "job" })
            {
                data.Add(backend, kind);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public async Task EveryVmObject_ReachesTheSameVmAndDrive_InEveryVmCmdlet(VmBackend backend, string kind)
    {
        var expected = fixture[backend];
        var output = expected.Get(kind);

        // What -Session, -VMName / -QmpSocket, -LibvirtUri and -Drive bind from the object, through the cmdlets' one rule.
        var target = VmTarget.FromParameters(output.Session, output.VMName, output.QmpSocket, output.LibvirtUri);
        Assert.Equal(expected.Target, target);
        Assert.Equal(backend, output.Backend);
        Assert.Equal(expected.Started.Drive, output.Drive);
        Assert.Equal(backend == VmBackend.Libvirt ? null : expected.Target.Name, output.QmpSocket);
        Assert.Equal(backend == VmBackend.Libvirt ? expected.Target.Name : null, output.VMName);
        var vm = target.Open();

        // The drive: the same disk image.
        Assert.Equal(expected.Image, (await vm.ResolveDiskAsync(output.Drive)).Source);

        // Get-DriveMirror, Wait-DriveMirror, Stop-DriveMirror (plan): the same job.
        var mirror = vm.CreateMirrorBackend();
        var job = await mirror.GetOneAsync(output.Drive, checkStall: false);
        Assert.Equal(expected.Job.JobId, job.JobId);
        Assert.Equal(expected.Job.Destination, job.Destination);
        Assert.Equal(expected.Target, job.Target);
        Assert.Equal(DriveMirrorState.Ready, (await mirror.WaitAsync(output.Drive, new MirrorWaitOptions { Timeout = TimeSpan.FromSeconds(30) })).State);
        var stop = await mirror.PlanStopAsync(output.Drive, pivot: false, force: false);
        Assert.Equal(expected.Job.JobId, stop.Job.JobId);

        // Suspend-/Resume-DriveMirror: QEMU pauses the job; libvirt cannot, and says so about this very job.
        if (backend == VmBackend.Qmp)
        {
            Assert.Equal(DriveMirrorState.Paused, (await mirror.SuspendAsync(output.Drive)).State);
            Assert.NotEqual(DriveMirrorState.Paused, (await mirror.ResumeAsync(output.Drive)).State);
        }
        else
        {
            var refused = await Assert.ThrowsAsync<DriveMirrorException>(() => mirror.SuspendAsync(output.Drive));
            Assert.Equal("MirrorPauseNotSupported", refused.ErrorId);
            Assert.Equal(expected.Job.JobId, refused.Job!.JobId);
        }

        // Get-DiskCheckpoint, Remove-DiskCheckpoint (plan): the clone's checkpoint of the same disk.
        var checkpoints = await DiskCheckpointManager.ListAsync(vm, output.Drive);
        var checkpoint = Assert.Single(checkpoints, c => c.Name == expected.Checkpoint.Name);
        Assert.Equal(expected.Target, checkpoint.Target);
        Assert.Contains(AddressOf(expected.Target), DiskCheckpointManager.PlanRemoval(vm, output.Drive, checkpoint.Name).Text);

        // Invoke-NbdClone (plan): every VM-side step addresses the same VM.
        var clone = new NbdCloneOperation(new CloneRequest
        {
            VirtualMachine = vm, Drive = output.Drive, Destination = "/nonexistent/pair.raw", DestinationSession = ReplicaSession.Local,
        });
        Assert.All(clone.DescribePlan().Where(s => s.Qmp is not null || s.Command.Arguments[0] == "virsh"), s => Assert.Contains(AddressOf(expected.Target), s.Text));
    }

    /// <summary>How a command addresses the VM: its QMP socket, or virsh -c URI.</summary>
    private static string AddressOf(VmTarget target) => target.Backend == VmBackend.Qmp ? target.Name : $"-c '{target.LibvirtUri}'";
}
