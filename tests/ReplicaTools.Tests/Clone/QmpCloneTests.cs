using System.Text.Json;
using System.Text.Json.Nodes;
using ReplicaTools.Core;
using ReplicaTools.Core.Clone;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;
using static ReplicaTools.Tests.Clone.CloneTestKit;

namespace ReplicaTools.Tests.Clone;

/// <summary>Invoke-NbdClone's core against a bare QEMU (QMP fleecing), with the destination on an SSH lab host.</summary>
[Collection(LabCollection.Name)]
public sealed class QmpCloneTests : IAsyncLifetime
{
    private const string Device = "virtio0";
    private const long Size = 64 * MiB;
    private static readonly GuestWrite[] Initial = { new(0x11, 0, 8 * MiB), new(0x22, 20 * MiB, 4 * MiB), new(0x33, 60 * MiB, 4 * MiB) };
    private readonly LabFixture fixture;
    private readonly List<ReplicaSession> sessions = new();
    private string directory = null!;
    private string image = null!;
    private string reference = null!;
    private QemuVm vm = null!;

    public QmpCloneTests(LabFixture fixture) => this.fixture = fixture;

    private string Scratch => Path.Combine(directory, "scratch");

    public async Task InitializeAsync()
    {
        directory = NewDirectory("rtclq");
        Directory.CreateDirectory(Scratch);
        image = Path.Combine(directory, "disk.qcow2");
        reference = Path.Combine(directory, "reference.raw");
        CreateImage(image, "qcow2", Size, reference, Initial);
        vm = await QemuVm.StartAsync(directory, "clonevm", new LabDisk(Device, image, "qcow2"));
    }

    public async Task DisposeAsync()
    {
        await vm.DisposeAsync();
        foreach (var session in sessions)
        {
            await ReplicaSessionRegistry.RemoveAsync(session);
        }

        DeleteDirectory(directory);
    }

    [Fact]
    public async Task FullClone_EqualsThePointInTime_AndTheVmKeepsEveryWriteMadeDuringTheCopy()
    {
        var before = new GuestWrite(0x44, 10 * MiB, MiB);
        await WriteAsync(before);
        Apply(reference, before);
        var after = new[] { new GuestWrite(0x55, 0, MiB), new GuestWrite(0x66, 21 * MiB, 2 * MiB), new GuestWrite(0x77, 40 * MiB, MiB), new GuestWrite(0x88, 62 * MiB, 512 * 1024) };
        var copier = new ScriptedCopier
        {
            BeforeCopy = async (_, _) => { await WriteAsync(after[0]); await WriteAsync(after[1]); },
            DuringCopy = async (_, _) => { await WriteAsync(after[2]); await WriteAsync(after[3]); },
        };
        var destination = Path.Combine(directory, "clone.raw");
        var reporter = new RecordingReporter();

        // The VM is reached over SSH (QMP through the session), the destination on another lab host.
        var result = await CloneAsync(destination, copier, reporter, verify: true, vmHost: Remote(0));

        AssertSameContent(reference, destination, "the clone must hold the disk as it was at the point in time");
        Assert.Equal(CloneMode.Full, result.Mode);
        Assert.True(result.Verified);
        Assert.Equal(Size, result.BytesTotal);
        Assert.Equal(16 * MiB + MiB, result.BytesCopied);
        Assert.Equal(Size - result.BytesCopied, result.BytesSkipped);
        Assert.NotNull(result.Checkpoint);
        Assert.Equal(Device, result.Drive);
        Assert.True(reporter.MaxPercent == 100 && reporter.ProgressCount > 3);
        await AssertReleasedAsync(expectCheckpoints: new[] { result.Checkpoint! });
        Assert.False(File.Exists(destination + CloneDestination.PartialSuffix));
        var sidecar = CloneSidecar.Parse(File.ReadAllText(destination + CloneDestination.SidecarSuffix))!;
        Assert.True(sidecar.IsComplete);
        Assert.Equal(result.Checkpoint, sidecar.Checkpoint);
        Assert.Equal(result.Checksum, sidecar.Checksum);

        Apply(reference, after);
        await AssertVmDiskAsync(reference, "the live disk must hold every write made during the copy");
    }

    [Fact]
    public async Task Incremental_CopiesOnlyTheDirtyBlocks_AndEqualsAFreshFullClone()
    {
        var destination = Path.Combine(directory, "inc.raw");
        var full = await CloneAsync(destination, incremental: true, reporter: new RecordingReporter());
        Assert.Equal(CloneMode.Full, full.Mode); // nothing to start from yet

        // Dirty N = 4 MiB in 16 scattered 256 KiB writes (64 KiB aligned, the bitmap granularity).
        var dirty = Enumerable.Range(0, 16).Select(i => new GuestWrite((byte)(0xa0 + i), (i * 3 + 1) * MiB + (i % 4) * 64 * 1024, 256 * 1024)).ToArray();
        foreach (var w in dirty)
        {
            await WriteAsync(w);
        }

        Apply(reference, dirty);
        var inc = await CloneAsync(destination, incremental: true, verify: true);

        Assert.Equal(CloneMode.Incremental, inc.Mode);
        Assert.InRange(inc.BytesCopied, 4 * MiB, 4 * MiB + 16 * 64 * 1024);
        Assert.True(inc.Verified);
        Assert.NotEqual(full.Checkpoint, inc.Checkpoint);
        AssertSameContent(reference, destination, "the incremental clone must equal the disk");

        var fresh = Path.Combine(directory, "fresh.raw");
        var freshResult = await CloneAsync(fresh);
        AssertSameContent(fresh, destination, "an incremental must be byte-identical to a fresh full clone");

        // Nothing written since: an incremental copies nothing. Each destination keeps exactly its own checkpoint.
        var idle = await CloneAsync(destination, incremental: true);
        Assert.Equal(CloneMode.Incremental, idle.Mode);
        Assert.Equal(0, idle.BytesCopied);
        await AssertReleasedAsync(expectCheckpoints: new[] { idle.Checkpoint!, freshResult.Checkpoint! });
        AssertSameContent(reference, destination, "an empty incremental leaves the clone as it was");
    }

    [Fact]
    public async Task Incremental_ZeroesTheDirtyExtentsThatReadAsZero_InsteadOfCopyingThem_AndAllocatesWhatAFreshFullCloneDoes()
    {
        // Field report (issue 9, case 3): a 512 MiB qcow2 with 8 MiB of data; the guest zeroes 256 MiB it never wrote,
        // and the incremental copied 256 MiB of zeros as data into the raw clone.
        const long big = 512 * MiB;
        await vm.DisposeAsync();
        image = Path.Combine(directory, "big.qcow2");
        reference = Path.Combine(directory, "big-reference.raw");
        CreateImage(image, "qcow2", big, reference, new[] { new GuestWrite(0x11, 0, 4 * MiB), new GuestWrite(0x22, 450 * MiB, 4 * MiB) });
        vm = await QemuVm.StartAsync(directory, "clonevm", new LabDisk(Device, image, "qcow2"));
        var destination = Path.Combine(directory, "big.raw");
        var full = await CloneAsync(destination, incremental: true);
        Assert.Equal(8 * MiB, full.BytesCopied);
        Assert.Equal(8 * MiB, Images.AllocatedBytes(destination));

        // The field report exactly: nothing copied, 256 MiB zeroed, and the clone still allocates 8 MiB.
        await vm.HmpAsync($"qemu-io -d {Device}/virtio-backend \"write -z -u {128 * MiB} {256 * MiB}\"");
        var field = await CloneAsync(destination, incremental: true);
        Assert.Equal(CloneMode.Incremental, field.Mode);
        Assert.Equal(0, field.BytesCopied);
        Assert.Equal(256 * MiB, field.BytesZeroed);
        Assert.Equal(8 * MiB, Images.AllocatedBytes(destination));
        AssertSameContent(reference, destination, "zeroing a range never written changes nothing the guest reads");

        // The whole kind, in one incremental: zeroes over a range never written (without unmap this time), over data,
        // literal zeros written as data (found by reading), and one dirty extent that is part data, part zeros.
        var zeroing = new (string Command, long Offset, long Length, bool Zero)[]
        {
            ("write -z", 128 * MiB, 256 * MiB, true),
            ("write -z", 450 * MiB, 2 * MiB, true),
            ("write -P 0x00", 400 * MiB, MiB, true),
            ("write -P 0x33", 1 * MiB, MiB, false),
            ("write -P 0x44", 10 * MiB, 64 * 1024, false),
            ("write -z", 10 * MiB + 64 * 1024, 192 * 1024, true),
        };
        foreach (var (command, offset, length, zero) in zeroing)
        {
            await vm.HmpAsync($"qemu-io -d {Device}/virtio-backend \"{command} {offset} {length}\"");
            Apply(reference, new GuestWrite(zero ? (byte)0 : byte.Parse(command[^2..], System.Globalization.NumberStyles.HexNumber), offset, length));
        }

        var inc = await CloneAsync(destination, incremental: true, verify: true);

        Assert.Equal(CloneMode.Incremental, inc.Mode);
        Assert.True(inc.Verified);
        Assert.Equal(MiB + 64 * 1024, inc.BytesCopied);
        Assert.Equal(256 * MiB + 2 * MiB + MiB + 192 * 1024, inc.BytesZeroed);
        Assert.Equal(big - inc.BytesCopied - inc.BytesZeroed, inc.BytesSkipped);
        AssertSameContent(reference, destination, "the incremental clone must equal the disk");
        var fresh = Path.Combine(directory, "big-fresh.raw");
        await CloneAsync(fresh);
        AssertSameContent(fresh, destination, "an incremental must be byte-identical to a fresh full clone");
        Assert.Equal(6 * MiB + 64 * 1024, Images.AllocatedBytes(fresh));
        Assert.Equal(Images.AllocatedBytes(fresh), Images.AllocatedBytes(destination));
    }

    [Fact]
    public async Task Incremental_FallsBackToFull_WithAReason_WhenTheDestinationOrTheBitmapCannotBeTrusted()
    {
        var destination = Path.Combine(directory, "fb.raw");
        var reporter = new RecordingReporter();
        var first = await CloneAsync(destination, incremental: true, reporter: reporter);
        Assert.Equal(CloneMode.Full, first.Mode);
        Assert.Contains(reporter.Warnings, w => w.Contains("no clone metadata", StringComparison.Ordinal));

        // Someone modified the clone: its size/inode/mtime no longer match the metadata.
        File.SetLastWriteTimeUtc(destination, DateTime.UtcNow.AddMinutes(-5));
        reporter = new RecordingReporter();
        var second = await CloneAsync(destination, incremental: true, reporter: reporter);
        Assert.Equal(CloneMode.Full, second.Mode);
        Assert.Contains("not the file the last clone wrote", second.FallbackReason);

        // A clean restart stores the bitmap in the qcow2 and loads it again: incrementals go on.
        await vm.DisposeAsync();
        vm = await QemuVm.StartAsync(directory, "clonevm", new LabDisk(Device, image, "qcow2"));
        var w = new GuestWrite(0x5a, 30 * MiB, MiB);
        await WriteAsync(w);
        Apply(reference, w);
        var afterRestart = await CloneAsync(destination, incremental: true);
        Assert.Equal(CloneMode.Incremental, afterRestart.Mode);
        Assert.Equal(MiB, afterRestart.BytesCopied);

        // QEMU killed while the bitmap was loaded from the image: it comes back inconsistent.
        await vm.DisposeAsync();
        vm = await QemuVm.StartAsync(directory, "clonevm", new LabDisk(Device, image, "qcow2"));
        vm.Kill();
        await Task.Delay(500);
        await vm.DisposeAsync();
        vm = await QemuVm.StartAsync(directory, "clonevm", new LabDisk(Device, image, "qcow2"));
        reporter = new RecordingReporter();
        var third = await CloneAsync(destination, incremental: true, reporter: reporter);
        Assert.Equal(CloneMode.Full, third.Mode);
        Assert.Contains("inconsistent", third.FallbackReason);
        Assert.Contains(reporter.Warnings, x => x.Contains("inconsistent", StringComparison.Ordinal));
        AssertSameContent(reference, destination, "the fallback full clone must equal the disk");
        await AssertReleasedAsync(expectCheckpoints: new[] { third.Checkpoint! });
    }

    [Fact]
    public async Task ADestinationRestoredFromAnOlderCopy_FallsBackToFullNamingTheCause_ReplacesTheStaleCheckpoint_AndIncrementalsResume()
    {
        // Field report (issue 9, case 2): full clone, keep a copy, incremental, put the copy back. Every later run failed
        // with "Bitmap already exists", for -Incremental, a plain run and -Repair alike.
        var destination = Path.Combine(directory, "a.raw");
        var saved = Path.Combine(directory, "saved");
        Directory.CreateDirectory(saved);
        var first = await CloneAsync(destination, incremental: true);
        Tool.Run("cp", "--preserve=all", "--", destination, destination + CloneDestination.SidecarSuffix, saved);
        var w1 = new GuestWrite(0x41, 4 * MiB, MiB);
        await WriteAsync(w1);
        Apply(reference, w1);
        var newest = await CloneAsync(destination, incremental: true);
        Assert.Equal(CloneMode.Incremental, newest.Mode);

        var step = 0;
        foreach (var (incremental, repair) in new[] { (true, false), (false, false), (true, true) })
        {
            // The destination comes back from its own backup (a restore makes a new inode; the metadata is the old one).
            foreach (var file in new[] { "a.raw", "a.raw" + CloneDestination.SidecarSuffix })
            {
                Tool.Run("cp", "--preserve=all", "--", Path.Combine(saved, file), Path.Combine(directory, file));
            }

            var w = new GuestWrite((byte)(0x50 + step), (10 + 4 * step++) * MiB, MiB);
            await WriteAsync(w);
            Apply(reference, w);
            var reporter = new RecordingReporter();
            var run = await CloneAsync(destination, incremental: incremental, repair: repair, reporter: reporter, verify: true);

            Assert.Equal(CloneMode.Full, run.Mode);
            if (incremental)
            {
                Assert.Contains($"matches checkpoint '{first.Checkpoint}', older than the VM's newest checkpoint of its chain, '{newest.Checkpoint}'", run.FallbackReason);
                Assert.Contains(reporter.Warnings, x => x.Contains("restored from an older copy", StringComparison.Ordinal));
            }

            Assert.Equal(first.Checkpoint!.Split('-')[1], run.Checkpoint!.Split('-')[1]); // the same chain, a name past every existing one
            AssertSameContent(reference, destination, "the full clone after the restore must equal the disk");
            await AssertReleasedAsync(expectCheckpoints: new[] { run.Checkpoint! }); // the stale checkpoint was replaced

            var w2 = new GuestWrite((byte)(0x60 + step), 50 * MiB, MiB);
            await WriteAsync(w2);
            Apply(reference, w2);
            newest = await CloneAsync(destination, incremental: true, verify: true);
            Assert.Equal(CloneMode.Incremental, newest.Mode);
            Assert.Equal(MiB, newest.BytesCopied);
            AssertSameContent(reference, destination, "the next incremental must equal the disk");
        }
    }

    [Fact]
    public async Task AClonesMetadataCopiedToAnotherDestination_StartsAChainOfItsOwn_AndTheOriginalStaysIncremental()
    {
        var a = Path.Combine(directory, "orig.raw");
        var b = Path.Combine(directory, "copy.raw");
        var first = await CloneAsync(a, incremental: true);
        File.Copy(a, b);
        File.Copy(a + CloneDestination.SidecarSuffix, b + CloneDestination.SidecarSuffix);

        var copied = await CloneAsync(b, incremental: true);
        Assert.Equal(CloneMode.Full, copied.Mode);
        Assert.Contains($"belongs to the clone {fixture.Lab[1].Address}:{a}", copied.FallbackReason);
        Assert.NotEqual(first.Checkpoint!.Split('-')[1], copied.Checkpoint!.Split('-')[1]);

        var w = new GuestWrite(0x42, 6 * MiB, MiB);
        await WriteAsync(w);
        var again = await CloneAsync(a, incremental: true);
        Assert.Equal(CloneMode.Incremental, again.Mode);
        Assert.Equal(MiB, again.BytesCopied);
        await AssertReleasedAsync(expectCheckpoints: new[] { again.Checkpoint!, copied.Checkpoint! });
    }

    [Fact]
    public async Task ACheckpointWhoseDestinationIsGone_IsListedAsOrphaned_WithHowToRemoveIt()
    {
        var destination = Path.Combine(directory, "gone.raw");
        var destinationSession = Remote(1);
        var clone = await CloneAsync(destination, destinationSession: destinationSession);
        var qmpVm = new QmpVirtualMachine(ReplicaSession.Local, vm.SocketPath);
        var state = Path.Combine(directory, "state");

        var listed = Assert.Single(await DiskCheckpointManager.ListAsync(qmpVm, Device, CancellationToken.None, state));
        Assert.Equal(clone.Checkpoint, listed.Name);
        Assert.Equal($"{fixture.Lab[1].Address}:{destination}", listed.Destination);
        Assert.False(listed.Orphaned);
        Assert.True(listed.Usable);

        File.Delete(destination);
        File.Delete(destination + CloneDestination.SidecarSuffix);
        var reporter = new RecordingReporter();
        DiskCheckpoint orphan;
        using (OperationContext.Use(reporter))
        {
            orphan = Assert.Single(await DiskCheckpointManager.ListAsync(qmpVm, Device, CancellationToken.None, state));
        }

        Assert.True(orphan.Orphaned);
        Assert.Contains($"{fixture.Lab[1].Address}:{destination} no longer exists", orphan.Problem);
        Assert.Contains($"Remove-DiskCheckpoint -QmpSocket '{vm.SocketPath}' -Drive '{Device}' -Name '{clone.Checkpoint}'", orphan.Problem);
        Assert.Contains(reporter.Warnings, w => w.Contains(clone.Checkpoint!, StringComparison.Ordinal) && w.Contains("orphaned", StringComparison.Ordinal));

        // Without a session that reaches the destination host, nobody can tell.
        await ReplicaSessionRegistry.RemoveAsync(destinationSession);
        sessions.Remove(destinationSession);
        Assert.Null(Assert.Single(await DiskCheckpointManager.ListAsync(qmpVm, Device, CancellationToken.None, state)).Orphaned);

        await DiskCheckpointManager.RemoveAsync(qmpVm, Device, clone.Checkpoint!, CancellationToken.None, state);
        Assert.Empty(await DiskCheckpointManager.ListAsync(qmpVm, Device, CancellationToken.None, state));
        Assert.False(File.Exists(CloneChainRecord.PathOf(state, clone.Checkpoint!.Split('-')[1])), "the chain's record goes with its last checkpoint");
    }

    public static IEnumerable<object[]> Interruptions => new[] { new object[] { "export" }, new object[] { "copier" }, new object[] { "ssh" } };

    [Theory]
    [MemberData(nameof(Interruptions))]
    public async Task InterruptedCopy_LeavesTheVmOnItsDiskWithEveryWrite_AndNoDestinationThatLooksComplete(string what)
    {
        var destination = Path.Combine(directory, "int.raw");
        var baseline = await CloneAsync(destination, incremental: true);
        var during = new GuestWrite(0x99, 2 * MiB, MiB);
        var destinationSession = Remote(1);
        var copier = new ScriptedCopier
        {
            RateLimit = "2M",
            DuringCopy = async (export, target) =>
            {
                await Task.Delay(1500);
                await WriteAsync(during);
                switch (what)
                {
                    case "export":
                        await vm.QmpAsync("block-export-del", new JsonObject { ["id"] = export.ExportName + "-export", ["mode"] = "hard" });
                        break;
                    case "copier":
                        KillProcessesMatching("^nbdcopy .*" + target);
                        break;
                    default:
                        KillMaster(destinationSession);
                        break;
                }
            },
        };
        Apply(reference, during);

        // A full clone (not -Incremental): it writes a new partial file while the previous clone stays in place.
        var error = await Assert.ThrowsAsync<CloneFailedException>(() => CloneAsync(destination, copier, destinationSession: destinationSession));

        Assert.Contains("continues on its original disk", error.Message);
        Assert.Contains(baseline.Checkpoint!, (await GetBitmapsAsync()).Select(b => b.Name));
        await AssertReleasedAsync(expectCheckpoints: new[] { baseline.Checkpoint! });
        Assert.False(File.Exists(destination + CloneDestination.PartialSuffix), "no partial file may stay behind");
        Assert.True(CloneSidecar.Parse(File.ReadAllText(destination + CloneDestination.SidecarSuffix))!.Checkpoint == baseline.Checkpoint, "the previous clone still describes the destination");

        // The failed run can simply be retried: an incremental from the untouched previous checkpoint.
        var retry = await CloneAsync(destination, incremental: true);
        Assert.Equal(CloneMode.Incremental, retry.Mode);
        AssertSameContent(reference, destination, "the retried clone must equal the disk");
        await AssertVmDiskAsync(reference, "the live disk must hold the write made while the copy failed");
    }

    [Fact]
    public async Task InterruptedIncremental_OnAFilesystemWithoutReflink_LeavesNoCompleteLookingClone_AndTheNextRunFinishesIt()
    {
        var destination = Path.Combine(directory, "pinc.raw");
        var first = await CloneAsync(destination);
        var dirty = new[] { new GuestWrite(0x61, 5 * MiB, 2 * MiB), new GuestWrite(0x62, 50 * MiB, MiB) };
        foreach (var w in dirty)
        {
            await WriteAsync(w);
        }

        Apply(reference, dirty);
        var copier = new ScriptedCopier
        {
            // The dirty copier already wrote part of the extents when the export disappears.
            BeforeCopy = async (export, target) =>
            {
                var sidecar = CloneSidecar.Parse(File.ReadAllText(destination + CloneDestination.SidecarSuffix))!;
                Assert.False(sidecar.IsComplete);
                Assert.Equal(first.Checkpoint, sidecar.ResumeFrom);
                Assert.False(File.Exists(destination), "while it is patched, the clone is not at its final name");
                await vm.QmpAsync("block-export-del", new JsonObject { ["id"] = export.ExportName + "-export", ["mode"] = "hard" });
            },
        };

        var error = await Assert.ThrowsAsync<CloneFailedException>(() => CloneAsync(destination, copier, incremental: true));
        Assert.Contains("finishes it from checkpoint", error.Message);
        Assert.False(File.Exists(destination));
        Assert.True(File.Exists(destination + CloneDestination.PartialSuffix));
        await AssertReleasedAsync(expectCheckpoints: new[] { first.Checkpoint! });

        var later = new GuestWrite(0x63, 33 * MiB, MiB);
        await WriteAsync(later);
        Apply(reference, later);
        var resumed = await CloneAsync(destination, incremental: true, verify: true);
        Assert.Equal(CloneMode.Incremental, resumed.Mode);
        Assert.True(resumed.Verified);
        AssertSameContent(reference, destination, "the resumed incremental must equal the disk");
        Assert.False(File.Exists(destination + CloneDestination.PartialSuffix));
    }

    [Fact]
    public async Task StaleStateOfACrashedRun_IsRefusedWithWhatWasFound_ThenRepairedWithoutLosingWrites()
    {
        var destination = Path.Combine(directory, "stale.raw");
        var first = await CloneAsync(destination, incremental: true);

        // A run that died between the point in time and the release (its QMP connection simply closed).
        var session = ReplicaSession.Local;
        var crashedRun = CloneNames.NewRunId();
        await using (var crashed = new QmpPointInTime(new QmpVirtualMachine(session, vm.SocketPath), Scratch))
        {
            await crashed.OpenAsync(Device, CancellationToken.None);
            var next = CloneNames.Checkpoint(first.Checkpoint!.Split('-')[1], 2);
            await crashed.StartAsync(new PointInTimeRequest { RunId = crashedRun, NewCheckpoint = next, IncrementalFrom = first.Checkpoint, Address = "127.0.0.1", Ports = (11900, 12899) }, CancellationToken.None);
        }

        var during = new GuestWrite(0x71, 12 * MiB, 2 * MiB);
        await WriteAsync(during);
        Apply(reference, during);
        Assert.Equal(CloneNames.FilterNode(crashedRun), (await vm.QmpAsync("qom-get", new JsonObject { ["path"] = Device, ["property"] = "drive" })).GetString());

        var stale = await Assert.ThrowsAsync<StaleCloneStateException>(() => CloneAsync(destination, incremental: true));
        var kinds = stale.Findings.Select(f => f.Kind).ToHashSet();
        Assert.Superset(new HashSet<string> { "block job", "NBD export", "block node", "scratch file", "disabled bitmap", "checkpoint rotation" }, kinds);
        Assert.Equal(6, kinds.Count);
        Assert.Contains("-Repair", stale.RecommendedAction);
        Assert.Contains(CloneNames.Job(crashedRun), stale.Message);
        Assert.Single((await vm.QmpAsync("query-block-jobs")).EnumerateArray()); // refused: nothing was touched

        var reporter = new RecordingReporter();
        var repaired = await CloneAsync(destination, incremental: true, repair: true, reporter: reporter, verify: true);

        Assert.Equal(CloneMode.Incremental, repaired.Mode);
        Assert.Contains(reporter.Warnings, w => w.Contains("rolling back the interrupted rotation", StringComparison.Ordinal));
        AssertSameContent(reference, destination, "after the repair the clone must equal the disk, including writes made while the state was stale");
        await AssertReleasedAsync(expectCheckpoints: new[] { repaired.Checkpoint! });
        await AssertVmDiskAsync(reference, "the repair must not lose guest writes");
    }

    [Fact]
    public async Task BlockDeviceDestination_IsWrittenInPlace_WithItsMetadataMarkingItIncompleteUntilDone()
    {
        var backing = Path.Combine(directory, "device.img");
        Tool.Run("truncate", "-s", (Size + 8 * MiB).ToString(System.Globalization.CultureInfo.InvariantCulture), backing);
        var device = Tool.Run("losetup", "--find", "--show", backing).Trim();
        var sidecarPath = $"{CloneDestination.BlockDeviceStateDirectory}/{device.Trim('/').Replace('/', '_')}-{CloneNames.Hash(device)}.json";
        try
        {
            if (File.Exists(sidecarPath))
            {
                File.Delete(sidecarPath); // metadata of an earlier run that failed before it could clean up
            }

            // A device without clone metadata is only overwritten with Force.
            var refused = await Assert.ThrowsAsync<ReplicaException>(() => CloneAsync(device));
            Assert.Equal("DestinationExists", refused.ErrorId);

            var full = await CloneAsync(device, force: true, verify: true);
            Assert.Equal(CloneMode.Full, full.Mode);
            Assert.True(full.Verified);
            Assert.True(CloneSidecar.Parse(File.ReadAllText(sidecarPath))!.IsComplete);
            AssertDevicePrefixEquals(reference, device);

            var w = new GuestWrite(0x3c, 7 * MiB, 3 * MiB);
            await WriteAsync(w);
            Apply(reference, w);
            var copier = new ScriptedCopier
            {
                BeforeCopy = async (export, _) =>
                {
                    Assert.False(CloneSidecar.Parse(File.ReadAllText(sidecarPath))!.IsComplete, "while a device is written its metadata says incomplete");
                    await vm.QmpAsync("block-export-del", new JsonObject { ["id"] = export.ExportName + "-export", ["mode"] = "hard" });
                },
            };
            await Assert.ThrowsAsync<CloneFailedException>(() => CloneAsync(device, copier, incremental: true));
            Assert.Equal(full.Checkpoint, CloneSidecar.Parse(File.ReadAllText(sidecarPath))!.ResumeFrom);

            var resumed = await CloneAsync(device, incremental: true, verify: true);
            Assert.Equal(CloneMode.Incremental, resumed.Mode);
            Assert.Equal(3 * MiB, resumed.BytesCopied);
            AssertDevicePrefixEquals(reference, device);
        }
        finally
        {
            Tool.TryRun("losetup", new[] { "-d", device });
            if (File.Exists(sidecarPath))
            {
                File.Delete(sidecarPath);
            }
        }
    }

    [Fact]
    public async Task ADestinationThatARunningQemuHolds_IsNeitherPatchedNorReplaced()
    {
        // Someone booted the clone (raw, -blockdev, as the field report's VM): patching it under that QEMU corrupts both.
        var destination = Path.Combine(directory, "booted.raw");
        var first = await CloneAsync(destination, incremental: true);
        await WriteAsync(new GuestWrite(0x4d, 3 * MiB, MiB));
        var identity = $"{new FileInfo(destination).Length}:{File.GetLastWriteTimeUtc(destination).Ticks}:{Tool.Run("stat", "-c", "%i", destination).Trim()}";
        await using var booted = await QemuVm.StartAsync(Path.Combine(directory, "booted"), "booted", new LabDisk("virtio0", destination, "raw"));

        foreach (var incremental in new[] { true, false })
        {
            var error = await Assert.ThrowsAsync<ReplicaException>(() => CloneAsync(destination, incremental: incremental));
            Assert.Equal(Core.Storage.StorageErrorIds.ImageInUse, error.ErrorId);
            Assert.Contains("qemu-system-x86_64", error.Message);
        }

        Assert.Equal(identity, $"{new FileInfo(destination).Length}:{File.GetLastWriteTimeUtc(destination).Ticks}:{Tool.Run("stat", "-c", "%i", destination).Trim()}");
        await AssertReleasedAsync(expectCheckpoints: new[] { first.Checkpoint! }); // refused before the point in time
    }

    private static void AssertDevicePrefixEquals(string expected, string device)
    {
        var (code, stdout, stderr) = Tool.TryRun("cmp", new[] { "-n", new FileInfo(expected).Length.ToString(System.Globalization.CultureInfo.InvariantCulture), expected, device });
        Assert.True(code == 0, $"{device} differs from {expected}: {stdout}{stderr}");
    }

    [Fact]
    public async Task ASecondClone_OfTheSameVm_IsRefusedWhileTheFirstRuns()
    {
        var gate = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        var copier = new ScriptedCopier { BeforeCopy = async (_, _) => { gate.SetResult(); await release.Task; } };
        var first = CloneAsync(Path.Combine(directory, "a.raw"), copier);
        await gate.Task.WaitAsync(TimeSpan.FromMinutes(2));

        var busy = await Assert.ThrowsAsync<CloneInProgressException>(() => CloneAsync(Path.Combine(directory, "b.raw")));
        Assert.Contains(vm.SocketPath, busy.Message);
        Assert.Matches($"Invoke-NbdClone run r[0-9a-f]{{7}} \\(pid {Environment.ProcessId} on ", busy.Holder); // names the run that holds it
        Assert.Contains(busy.Holder!, busy.Message);
        release.SetResult();
        Assert.Equal(CloneMode.Full, (await first).Mode);
    }

    private ReplicaSession Remote(int index)
    {
        var session = ReplicaSessionRegistry.Create(fixture.Lab[index].Options(), controlDirectory: fixture.Lab.ControlDirectory);
        sessions.Add(session);
        return session;
    }

    private async Task<CloneResult> CloneAsync(string destination, ICloneCopier? copier = null, RecordingReporter? reporter = null, bool verify = false,
        bool incremental = false, bool repair = false, ReplicaSession? vmHost = null, ReplicaSession? destinationSession = null, bool force = false)
    {
        var operation = new NbdCloneOperation(new CloneRequest
        {
            VirtualMachine = new QmpVirtualMachine(vmHost ?? ReplicaSession.Local, vm.SocketPath),
            Drive = Device,
            Destination = destination,
            DestinationSession = destinationSession ?? Remote(1),
            Incremental = incremental,
            Verify = verify,
            Repair = repair,
            ScratchDirectory = Scratch,
            LockDirectory = directory,
            StateDirectory = Path.Combine(directory, "state"),
            PortRange = (11900, 12899),
            CopyTimeout = TimeSpan.FromMinutes(5),
        })
        {
            Copier = copier ?? new NbdCloneCopier(),
            Force = force,
        };
        using (OperationContext.Use(reporter ?? new RecordingReporter()))
        {
            return await operation.RunAsync(CancellationToken.None);
        }
    }

    private Task WriteAsync(GuestWrite w) => vm.WriteAsync(Device, w.Pattern, w.Offset, w.Length);

    private async Task<IReadOnlyList<DiskCheckpoint>> GetBitmapsAsync()
    {
        var nodes = await vm.QmpAsync("query-named-block-nodes", new JsonObject { ["flat"] = true });
        return nodes.EnumerateArray().Where(n => n.GetProperty("node-name").GetString() == QemuVm.NodeName(Device) && n.TryGetProperty("dirty-bitmaps", out _))
            .SelectMany(n => n.GetProperty("dirty-bitmaps").EnumerateArray())
            .Where(b => b.TryGetProperty("name", out _))
            .Select(b => new DiskCheckpoint(VmTarget.Qmp(ReplicaSession.Local, vm.SocketPath)) { Drive = Device, Name = b.GetProperty("name").GetString()!, Recording = b.GetProperty("recording").GetBoolean() })
            .ToList();
    }

    /// <summary>No job, export, node or scratch file of a clone is left, the device is on its own node, and exactly the expected checkpoints exist (recording).</summary>
    private async Task AssertReleasedAsync(IEnumerable<string> expectCheckpoints)
    {
        Assert.Empty((await vm.QmpAsync("query-block-jobs")).EnumerateArray());
        Assert.Empty((await vm.QmpAsync("query-block-exports")).EnumerateArray());
        Assert.DoesNotContain((await vm.QmpAsync("query-named-block-nodes", new JsonObject { ["flat"] = true })).EnumerateArray(),
            n => CloneNames.IsCloneObject(n.GetProperty("node-name").GetString()));
        Assert.Equal(QemuVm.NodeName(Device), (await vm.QmpAsync("qom-get", new JsonObject { ["path"] = Device, ["property"] = "drive" })).GetString());
        var bitmaps = await GetBitmapsAsync();
        Assert.Equal(expectCheckpoints.OrderBy(x => x), bitmaps.Select(b => b.Name).OrderBy(x => x));
        Assert.All(bitmaps, b => Assert.True(b.Recording));
        Assert.Empty(ScratchLeftovers(Scratch));
    }

    /// <summary>Stops QEMU cleanly and compares its disk, read offline, with the expected content.</summary>
    private async Task AssertVmDiskAsync(string expected, string because)
    {
        await vm.DisposeAsync();
        AssertSameContent(expected, OfflineRaw(image, "qcow2", Path.Combine(directory, "live.raw")), because);
    }

    private static void KillProcessesMatching(string text)
    {
        var (_, stdout, _) = Tool.TryRun("pgrep", new[] { "-f", "--", text });
        foreach (var pid in stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            Tool.TryRun("kill", new[] { "-9", pid });
        }
    }

    /// <summary>Drops the session's shared SSH connection the hard way (kill -9 of its ControlMaster).</summary>
    internal static void KillMaster(ReplicaSession session)
    {
        var (_, _, stderr) = Tool.TryRun("ssh", new[] { "-o", $"ControlPath={session.ControlPath}", "-O", "check", "x" });
        var marker = stderr.IndexOf("pid=", StringComparison.Ordinal);
        Assert.True(marker >= 0, $"no ControlMaster to kill: {stderr}");
        var pid = new string(stderr[(marker + 4)..].TakeWhile(char.IsDigit).ToArray());
        Tool.Run("kill", "-9", pid);
    }
}
