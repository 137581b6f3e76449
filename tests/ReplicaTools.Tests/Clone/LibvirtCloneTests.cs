using ReplicaTools.Core;
using ReplicaTools.Core.Clone;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;
using ReplicaTools.Tests.Qemu;
using static ReplicaTools.Tests.Clone.CloneTestKit;

namespace ReplicaTools.Tests.Clone;

/// <summary>An sshd of its own for the libvirt clone tests (they live in the libvirt collection, not the lab's).</summary>
public sealed class CloneSshFixture : IAsyncLifetime
{
    public SshLab Lab { get; private set; } = null!;

    public async Task InitializeAsync() => Lab = await SshLab.StartAsync("127.0.0.4");

    public async Task DisposeAsync() => await Lab.DisposeAsync();
}

/// <summary>Invoke-NbdClone's core against libvirt domains (pull-mode backup with checkpoints); the VM host is reached over SSH.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtCloneTests : IClassFixture<CloneSshFixture>, IAsyncLifetime
{
    private const long Size = 64 * MiB;
    private static readonly GuestWrite[] Initial = { new(0x11, 0, 8 * MiB), new(0x22, 20 * MiB, 4 * MiB), new(0x33, 60 * MiB, 4 * MiB) };
    private readonly LibvirtFixture libvirt;
    private readonly CloneSshFixture ssh;
    private readonly List<ReplicaSession> sessions = new();
    private string directory = null!;
    private string image = null!;
    private string reference = null!;
    private string domain = null!;
    private string domainXmlFormat = "qcow2";

    public LibvirtCloneTests(LibvirtFixture libvirt, CloneSshFixture ssh)
    {
        this.libvirt = libvirt;
        this.ssh = ssh;
    }

    private LibvirtLab Lab => libvirt.Lab;

    public Task InitializeAsync()
    {
        directory = NewDirectory("rtcll");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (domain is not null)
        {
            Lab.Destroy(domain);
        }

        foreach (var session in sessions)
        {
            await ReplicaSessionRegistry.RemoveAsync(session);
        }

        DeleteDirectory(directory);
        foreach (var file in Directory.GetFiles(Lab.Directory, "clone-*"))
        {
            File.Delete(file);
        }
    }

    private void StartDomain(string format = "qcow2")
    {
        domainXmlFormat = format;
        image = Path.Combine(Lab.Directory, $"clone-{Guid.NewGuid().ToString("N")[..6]}.{format}");
        reference = Path.Combine(directory, "reference.raw");
        CreateImage(image, format, Size, reference, Initial);
        domain = Lab.CreateDomain(Lab.UniqueName("clone"), persistent: false, (image, format));
    }

    [Fact]
    public async Task FullClone_EqualsThePointInTime_AndTheDomainKeepsEveryWriteMadeDuringTheCopy()
    {
        StartDomain();
        var after = new[] { new GuestWrite(0x55, 0, MiB), new GuestWrite(0x66, 21 * MiB, 2 * MiB), new GuestWrite(0x77, 40 * MiB, MiB) };
        var copier = new ScriptedCopier
        {
            BeforeCopy = (_, _) => { Write(after[0]); Write(after[1]); return Task.CompletedTask; },
            DuringCopy = (_, _) => Task.Run(() => Write(after[2])),
        };
        var destination = Path.Combine(directory, "clone.raw");

        var result = await CloneAsync(destination, copier, verify: true);

        AssertSameContent(reference, destination, "the clone must hold the disk as it was at the point in time");
        Assert.Equal(CloneMode.Full, result.Mode);
        Assert.True(result.Verified);
        Assert.Equal(Size, result.BytesTotal);
        Assert.Equal(16 * MiB, result.BytesCopied);
        Assert.Equal("vda", result.Drive);
        Assert.Equal(domain, result.VMName);
        Assert.StartsWith("127.0.0.4", copier.LastExport!.Address, StringComparison.Ordinal); // the VM host's address as the session sees it
        AssertReleased(new[] { result.Checkpoint! });

        Apply(reference, after);
        AssertDomainDisk(reference, "the live disk must hold every write made during the copy");
    }

    [Fact]
    public async Task Incremental_CopiesOnlyTheDirtyBlocks_SurvivesALostCheckpointDefinition_AndFallsBackWhenTheBitmapIsBroken()
    {
        StartDomain();
        var destination = Path.Combine(directory, "inc.raw");
        await CloneAsync(destination, incremental: true);

        var dirty = Enumerable.Range(0, 8).Select(i => new GuestWrite((byte)(0xa0 + i), (i * 7 + 1) * MiB, 256 * 1024)).ToArray();
        foreach (var w in dirty)
        {
            Write(w);
        }

        Apply(reference, dirty);
        var inc = await CloneAsync(destination, incremental: true, verify: true);
        Assert.Equal(CloneMode.Incremental, inc.Mode);
        Assert.InRange(inc.BytesCopied, 2 * MiB, 2 * MiB + 8 * 64 * 1024);
        var fresh = Path.Combine(directory, "fresh.raw");
        var freshResult = await CloneAsync(fresh);
        AssertSameContent(fresh, destination, "an incremental must be byte-identical to a fresh full clone");
        AssertSameContent(reference, destination, "the incremental clone must equal the disk");
        AssertReleased(new[] { inc.Checkpoint!, freshResult.Checkpoint! });

        // A transient domain re-created: libvirt forgot its checkpoints, the qcow2 kept the bitmaps (clean shutdown).
        Recreate();
        Assert.Empty(Lab.Virsh("checkpoint-list", domain, "--name").Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var w2 = new GuestWrite(0x5b, 44 * MiB, MiB);
        Write(w2);
        Apply(reference, w2);
        var reporter = new RecordingReporter();
        var redefined = await CloneAsync(destination, incremental: true, reporter: reporter);
        Assert.True(redefined.Mode == CloneMode.Incremental, redefined.FallbackReason);
        Assert.Equal(MiB, redefined.BytesCopied);
        Assert.Contains(reporter.Warnings, x => x.Contains("redefined", StringComparison.Ordinal));
        AssertSameContent(reference, destination, "the incremental after a redefinition must equal the disk");

        // QEMU killed: the bitmap in the image is inconsistent; never a silently wrong incremental.
        var pid = Tool.Run("pgrep", "-f", $"guest={domain},").Trim().Split('\n')[0];
        Tool.Run("kill", "-9", pid);
        await Task.Delay(1000);
        Recreate();
        reporter = new RecordingReporter();
        var fallback = await CloneAsync(destination, incremental: true, reporter: reporter);
        Assert.Equal(CloneMode.Full, fallback.Mode);
        Assert.Contains("missing or inconsistent", fallback.FallbackReason);
        Assert.Contains(reporter.Warnings, x => x.Contains("full clone instead", StringComparison.Ordinal));
        AssertSameContent(reference, destination, "the fallback full clone must equal the disk");
    }

    [Fact]
    public async Task ADestinationRestoredFromAnOlderCopy_FallsBackToFullNamingTheCause_AndIncrementalsResume()
    {
        // Field report (issue 9, case 2) on libvirt: the new checkpoint's name collided with the VM's newest one.
        StartDomain();
        var destination = Path.Combine(directory, "a.raw");
        var saved = Path.Combine(directory, "saved");
        Directory.CreateDirectory(saved);
        var first = await CloneAsync(destination, incremental: true);
        Tool.Run("cp", "--preserve=all", "--", destination, destination + CloneDestination.SidecarSuffix, saved);
        var w1 = new GuestWrite(0x41, 4 * MiB, MiB);
        Write(w1);
        Apply(reference, w1);
        var newest = await CloneAsync(destination, incremental: true);
        Assert.Equal(CloneMode.Incremental, newest.Mode);

        foreach (var incremental in new[] { true, false })
        {
            foreach (var file in new[] { "a.raw", "a.raw" + CloneDestination.SidecarSuffix })
            {
                Tool.Run("cp", "--preserve=all", "--", Path.Combine(saved, file), Path.Combine(directory, file));
            }

            var run = await CloneAsync(destination, incremental: incremental, verify: true);
            Assert.Equal(CloneMode.Full, run.Mode);
            if (incremental)
            {
                Assert.Contains($"matches checkpoint '{first.Checkpoint}', older than the VM's newest checkpoint of its chain, '{newest.Checkpoint}'", run.FallbackReason);
            }

            AssertSameContent(reference, destination, "the full clone after the restore must equal the disk");
            AssertReleased(new[] { run.Checkpoint! }); // the stale checkpoint was replaced

            var w2 = new GuestWrite(incremental ? (byte)0x62 : (byte)0x63, 50 * MiB, MiB);
            Write(w2);
            Apply(reference, w2);
            newest = await CloneAsync(destination, incremental: true, verify: true);
            Assert.Equal(CloneMode.Incremental, newest.Mode);
            Assert.Equal(MiB, newest.BytesCopied);
            AssertSameContent(reference, destination, "the next incremental must equal the disk");
        }
    }

    [Fact]
    public async Task Incremental_ZeroesTheDirtyExtentsThatReadAsZero_AndAllocatesWhatAFreshFullCloneDoes()
    {
        // Field report (issue 9, case 3) through libvirt's pull backup: zeroed blocks are zeroed, never copied as data.
        StartDomain();
        var destination = Path.Combine(directory, "zero.raw");
        var full = await CloneAsync(destination, incremental: true);
        Assert.Equal(16 * MiB, full.BytesCopied);
        var zeroing = new (string Command, long Offset, long Length, bool Zero)[]
        {
            ("write -z -u", 32 * MiB, 16 * MiB, true),       // never written
            ("write -z", 20 * MiB, 2 * MiB, true),           // over data
            ("write -P 0x00", 50 * MiB, MiB, true),          // literal zeros, found by reading
            ("write -P 0x46", 2 * MiB, 64 * 1024, false),    // one dirty extent: 64 KiB data, then 192 KiB zeros
            ("write -z", 2 * MiB + 64 * 1024, 192 * 1024, true),
        };
        foreach (var (command, offset, length, zero) in zeroing)
        {
            Lab.Virsh("qemu-monitor-command", domain, "--hmp", $"qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"{command} {offset} {length}\"");
            Apply(reference, new GuestWrite(zero ? (byte)0 : (byte)0x46, offset, length));
        }

        var inc = await CloneAsync(destination, incremental: true, verify: true);

        Assert.Equal(CloneMode.Incremental, inc.Mode);
        Assert.Equal(64 * 1024, inc.BytesCopied);
        Assert.Equal(16 * MiB + 2 * MiB + MiB + 192 * 1024, inc.BytesZeroed);
        AssertSameContent(reference, destination, "the incremental clone must equal the disk");
        var fresh = Path.Combine(directory, "zero-fresh.raw");
        await CloneAsync(fresh);
        AssertSameContent(fresh, destination, "an incremental must be byte-identical to a fresh full clone");
        Assert.Equal(14 * MiB - 192 * 1024, Images.AllocatedBytes(fresh)); // 16 MiB of data, 2 MiB and 192 KiB of it zeroed
        Assert.Equal(Images.AllocatedBytes(fresh), Images.AllocatedBytes(destination));
    }

    [Fact]
    public async Task RawDisk_IsClonedFully_AndIncrementalFallsBackSayingWhy()
    {
        StartDomain("raw");
        var destination = Path.Combine(directory, "raw.raw");
        var first = await CloneAsync(destination);
        Assert.Null(first.Checkpoint);

        var reporter = new RecordingReporter();
        var second = await CloneAsync(destination, incremental: true, reporter: reporter);
        Assert.Equal(CloneMode.Full, second.Mode);
        Assert.Contains("qcow2", second.FallbackReason);
        Assert.Contains(reporter.Warnings, w => w.Contains("qcow2", StringComparison.Ordinal));
        AssertSameContent(reference, destination, "a raw disk's clone must equal it");
        AssertReleased(Array.Empty<string>());
    }

    public static IEnumerable<object[]> Interruptions => new[] { new object[] { "export" }, new object[] { "copier" }, new object[] { "ssh" } };

    [Theory]
    [MemberData(nameof(Interruptions))]
    public async Task InterruptedCopy_LeavesTheDomainOnItsDiskWithEveryWrite_AndNoDestinationThatLooksComplete(string what)
    {
        StartDomain();
        var destination = Path.Combine(directory, "int.raw");
        var during = new GuestWrite(0x99, 2 * MiB, MiB);
        var vmSession = Remote();
        var destinationSession = what == "ssh" ? Remote() : ReplicaSession.Local;
        var copier = new ScriptedCopier
        {
            RateLimit = "2M",
            DuringCopy = async (_, target) =>
            {
                await Task.Delay(1500);
                Write(during);
                switch (what)
                {
                    case "export":
                        Lab.Virsh("domjobabort", domain);
                        break;
                    case "copier":
                        var (_, pids, _) = Tool.TryRun("pgrep", new[] { "-f", "--", "^nbdcopy .*" + target });
                        foreach (var pid in pids.Split('\n', StringSplitOptions.RemoveEmptyEntries))
                        {
                            Tool.TryRun("kill", new[] { "-9", pid.Trim() });
                        }

                        break;
                    default:
                        QmpCloneTests.KillMaster(destinationSession); // the copier runs through it
                        break;
                }
            },
        };
        Apply(reference, during);

        var error = await Assert.ThrowsAsync<CloneFailedException>(() => CloneAsync(destination, copier, vmSession: vmSession, destinationSession: destinationSession));

        Assert.Contains("continues on its original disk", error.Message);
        Assert.False(File.Exists(destination), "no destination may look complete");
        Assert.False(File.Exists(destination + CloneDestination.PartialSuffix), "no partial file may stay behind");
        AssertReleased(Array.Empty<string>());

        var retry = await CloneAsync(destination);
        AssertSameContent(reference, destination, "a retry must clone the disk with the write made during the failed copy");
        AssertReleased(new[] { retry.Checkpoint! });
        AssertDomainDisk(reference, "the live disk must hold the write made during the failed copy");
    }

    [Fact]
    public async Task StaleBackupJobOfACrashedRun_IsRefused_ThenRepaired()
    {
        StartDomain();
        var destination = Path.Combine(directory, "stale.raw");
        var first = await CloneAsync(destination, incremental: true);
        var vmSession = Remote();
        var crashedRun = CloneNames.NewRunId();
        await using (var crashed = new LibvirtPointInTime(new LibvirtVirtualMachine(vmSession, domain), "/var/tmp"))
        {
            await crashed.OpenAsync("vda", CancellationToken.None);
            await crashed.StartAsync(new PointInTimeRequest
            {
                RunId = crashedRun, NewCheckpoint = CloneNames.Checkpoint(first.Checkpoint!.Split('-')[1], 2), IncrementalFrom = first.Checkpoint, Address = "127.0.0.1", Ports = (12900, 13899),
            }, CancellationToken.None);
        }

        var during = new GuestWrite(0x71, 12 * MiB, 2 * MiB);
        Write(during);
        Apply(reference, during);

        var stale = await Assert.ThrowsAsync<StaleCloneStateException>(() => CloneAsync(destination, incremental: true, vmSession: vmSession));
        var kinds = stale.Findings.Select(f => f.Kind).ToHashSet();
        Assert.Contains("backup job", kinds);
        Assert.Contains("checkpoint rotation", kinds);
        Assert.Contains("scratch file", kinds);
        Assert.Contains("Backup", Lab.Virsh("domjobinfo", domain)); // refused: nothing was touched

        var reporter = new RecordingReporter();
        var repaired = await CloneAsync(destination, incremental: true, repair: true, verify: true, reporter: reporter, vmSession: vmSession);

        Assert.Equal(CloneMode.Incremental, repaired.Mode);
        Assert.Contains(reporter.Warnings, w => w.Contains("stale backup job", StringComparison.Ordinal));
        AssertSameContent(reference, destination, "after the repair the clone must equal the disk");
        AssertReleased(new[] { repaired.Checkpoint! });
        AssertDomainDisk(reference, "the repair must not lose guest writes");
    }

    private ReplicaSession Remote()
    {
        var session = ReplicaSessionRegistry.Create(ssh.Lab[0].Options(), controlDirectory: ssh.Lab.ControlDirectory);
        sessions.Add(session);
        return session;
    }

    private async Task<CloneResult> CloneAsync(string destination, ICloneCopier? copier = null, RecordingReporter? reporter = null, bool verify = false,
        bool incremental = false, bool repair = false, ReplicaSession? vmSession = null, ReplicaSession? destinationSession = null)
    {
        var operation = new NbdCloneOperation(new CloneRequest
        {
            VirtualMachine = new LibvirtVirtualMachine(vmSession ?? Remote(), domain),
            Drive = "vda",
            Destination = destination,
            DestinationSession = destinationSession ?? ReplicaSession.Local,
            Incremental = incremental,
            Verify = verify,
            Repair = repair,
            LockDirectory = directory,
            StateDirectory = Path.Combine(directory, "state"),
            PortRange = (12900, 13899),
            CopyTimeout = TimeSpan.FromMinutes(5),
        })
        {
            Copier = copier ?? new NbdCloneCopier(),
        };
        using (OperationContext.Use(reporter ?? new RecordingReporter()))
        {
            return await operation.RunAsync(CancellationToken.None);
        }
    }

    private void Write(GuestWrite w) => Lab.Write(domain, w.Pattern, w.Offset, w.Length);

    private void Recreate()
    {
        Tool.TryRun("virsh", new[] { "-c", LibvirtLab.Uri, "destroy", domain }, TimeSpan.FromMinutes(1));
        Lab.Virsh("create", Path.Combine(Lab.Directory, domain + ".xml"), "--paused");
    }

    private void AssertReleased(IEnumerable<string> expectCheckpoints)
    {
        Assert.DoesNotContain("Backup", Lab.Virsh("domjobinfo", domain));
        var checkpoints = Lab.Virsh("checkpoint-list", domain, "--name").Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal(expectCheckpoints.OrderBy(x => x), checkpoints.OrderBy(x => x));
        Assert.Empty(Directory.GetFiles("/var/tmp", CloneNames.ScratchGlob(CloneNames.VmKey(new LibvirtVirtualMachine(ReplicaSession.Local, domain)))));
    }

    private void AssertDomainDisk(string expected, string because)
    {
        Lab.Destroy(domain);
        AssertSameContent(expected, OfflineRaw(image, domainXmlFormat, Path.Combine(directory, "live.raw")), because);
    }
}
