using System.Globalization;
using ReplicaTools.Core;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;
using static ReplicaTools.Tests.Nbd.NbdTestSupport;

namespace ReplicaTools.Tests.Nbd;

/// <summary>
/// Exports on one lab host (host2, 127.0.0.2) read and copied by another (host3) over SSH, as the clone feature will:
/// the export is served where the disk is, the copier runs on the destination.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class NbdLabTests : IAsyncLifetime
{
    private readonly SshLab lab;
    private readonly SshHost source;
    private readonly SshHost destination;
    private readonly string root;
    private readonly string stateDirectory;
    private readonly NbdExportManager manager;

    public NbdLabTests(LabFixture fixture)
    {
        Tool.Require("nbd-server", "qemu-nbd", "nbdcopy", "nbdinfo", "qemu-img", "qemu-io", "nbdkit");
        lab = fixture.Lab;
        source = lab[0].CreateHost();
        destination = lab[1].CreateHost();
        root = NewDirectory(lab.Root, "nbd");
        stateDirectory = Path.Combine(root, "state");
        manager = new NbdExportManager(source, stateDirectory);
    }

    public Task InitializeAsync() => Task.WhenAll(source.ConnectAsync(), destination.ConnectAsync());

    public async Task DisposeAsync()
    {
        await CleanUpAsync(manager, root);
        await source.DisconnectAsync();
        await destination.DisconnectAsync();
    }

    [Theory]
    [InlineData(NbdServerKind.NbdServer)]
    [InlineData(NbdServerKind.QemuNbd)]
    public async Task RemoteExport_IsReadExactlyFromAnotherHost_ListedFromAnotherSession_AndRemoved(NbdServerKind server)
    {
        var image = Path.Combine(root, $"disk-{server}.raw");
        CreateRandomImage(image, 20 * MiB, 6);
        var export = await manager.NewAsync(new NbdExportRequest
        {
            Name = "remote", Path = image, ReadOnly = true, Server = server, ListenAddress = lab[0].Address,
        });

        Assert.Equal("host2", export.HostName);
        Assert.Equal($"nbd://127.0.0.2:{export.Port}/remote", export.Uri);

        // The client runs on host3.
        var copy = Path.Combine(root, $"read-{server}.raw");
        await destination.RunAsync(new CommandSpec("nbdcopy", export.Uri, copy));
        Assert.Equal(Sha256(image), Sha256(copy));
        var refused = await destination.RunAsync(new CommandSpec("nbdcopy", copy, export.Uri) { ThrowOnFailure = false });
        Assert.NotEqual(0, refused.ExitCode);

        // Another session (new SSH connection, new manager) finds it in the host's state directory.
        var otherSession = lab[0].CreateHost();
        try
        {
            var otherManager = new NbdExportManager(otherSession, stateDirectory);
            var listed = Assert.Single(await otherManager.ListAsync());
            Assert.Equal(NbdExportState.Running, listed.State);
            Assert.Equal(export.ProcessId, listed.ProcessId);
            Assert.Equal(export.Uri, listed.Uri);

            await otherManager.RemoveAsync(listed);
        }
        finally
        {
            await otherSession.DisconnectAsync();
        }

        Assert.True(await LocalProcesses.WaitGoneAsync(export.ProcessId!.Value, TimeSpan.FromSeconds(5)));
        Assert.False(await LocalProcesses.IsPortOpenAsync(lab[0].Address, export.Port));
        Assert.Empty(await manager.ListAsync());
    }

    [Fact]
    public async Task RemoteStaleRecord_IsReported_AndRemovable()
    {
        var image = Path.Combine(root, "stale.raw");
        CreateRandomImage(image, 2 * MiB, 1);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "stale", Path = image, ReadOnly = true, Server = NbdServerKind.NbdServer });
        await source.RunAsync(new CommandSpec("kill", "-KILL", export.ProcessId!.Value.ToString(CultureInfo.InvariantCulture)));
        Assert.True(await LocalProcesses.WaitGoneAsync(export.ProcessId!.Value, TimeSpan.FromSeconds(5)));

        var stale = Assert.Single(await manager.ListAsync());
        Assert.Equal(NbdExportState.Stale, stale.State);
        Assert.Contains("is gone", stale.StaleReason);

        await manager.RemoveAsync(stale);
        Assert.Empty(await manager.ListAsync());
    }

    [Fact]
    public async Task DefaultRemoteStateDirectory_IsUnderTheLoginDirectory()
    {
        // sshd starts commands in the login directory; the lab's sessions have a different $HOME, which must not matter.
        var home = (await source.RunAsync(new CommandSpec("pwd", "-P"))).StandardOutput.Trim();
        Assert.Equal(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), home);
        var directory = await new NbdExportManager(source).GetStateDirectoryAsync();
        Assert.Equal($"{home}/.local/state/replicatools/nbd", directory);
        Assert.Equal($"{home}/rel/nbd", await new NbdExportManager(source, "rel/nbd/").GetStateDirectoryAsync());
    }

    [Theory]
    [InlineData(NbdServerKind.QemuNbd, NbdCopyTool.NbdCopy)]
    [InlineData(NbdServerKind.QemuNbd, NbdCopyTool.QemuImg)]
    [InlineData(NbdServerKind.NbdServer, NbdCopyTool.NbdCopy)]
    [InlineData(NbdServerKind.NbdServer, NbdCopyTool.QemuImg)]
    public async Task FullCopy_OnTheDestinationHost_MatchesTheSource_AndReportsProgress(NbdServerKind server, NbdCopyTool tool)
    {
        var image = Path.Combine(root, "full-src.raw");
        var data = CreateRandomImage(image, 48 * MiB, 12);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "full", Path = image, ReadOnly = true, Server = server, ListenAddress = lab[0].Address });
        var target = Path.Combine(root, "full-dst.raw");
        var reporter = new RecordingReporter();

        NbdCopyResult result;
        using (OperationContext.Use(reporter))
        {
            result = await new NbdCopier(destination).CopyAsync(new NbdFullCopyRequest { SourceUri = export.Uri, DestinationPath = target, Tool = tool });
        }

        Assert.Equal(Sha256(image), Sha256(target));
        Assert.Equal(target, result.Destination);
        Assert.Equal("host3", result.HostName);
        Assert.Equal(tool == NbdCopyTool.NbdCopy ? "nbdcopy" : "qemu-img", result.Tool);
        Assert.Equal(48 * MiB, result.Size);
        if (server == NbdServerKind.QemuNbd)
        {
            // Block status: only the data stripes travel.
            Assert.Equal(data, result.BytesCopied);
            Assert.Equal(48 * MiB - data, result.BytesSkipped);
        }
        else
        {
            // nbd-server has no block status: every byte is read.
            Assert.Equal(48 * MiB, result.BytesCopied);
            Assert.Equal(0, result.BytesSkipped);
        }

        Assert.True(result.Duration > TimeSpan.Zero && result.BytesPerSecond > 0);
        Assert.Contains(reporter.Progresses, p => !p.Completed && p.PercentComplete is >= 0 and <= 100 && p.Activity.Contains(export.Uri));
        Assert.True(reporter.Progresses.Last().Completed);
        Assert.Empty(Directory.GetFiles(root, $".full-dst.raw{NbdCopier.TemporaryMarker}*"));
    }

    [Fact]
    public async Task FullCopy_FallsBackToQemuImg_WhenNbdcopyIsNotInstalled_AndCanWriteQcow2()
    {
        var image = Path.Combine(root, "fb-src.raw");
        CreateRandomImage(image, 8 * MiB, 2);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "fb", Path = image, ReadOnly = true, ListenAddress = lab[0].Address });
        var copier = new NbdCopier(destination) { NbdCopyProgram = "nbdcopy-not-installed-xyz" };
        var reporter = new RecordingReporter();

        NbdCopyResult raw;
        using (OperationContext.Use(reporter))
        {
            Assert.Equal(NbdCopyTool.QemuImg, await copier.ResolveToolAsync(new NbdFullCopyRequest { SourceUri = export.Uri, DestinationPath = "/x" }));
            raw = await copier.CopyAsync(new NbdFullCopyRequest { SourceUri = export.Uri, DestinationPath = Path.Combine(root, "fb.raw") });
        }

        Assert.Equal("qemu-img", raw.Tool);
        Assert.Equal(Sha256(image), Sha256(Path.Combine(root, "fb.raw")));
        Assert.Contains(reporter.Verboses, v => v.Contains("nbdcopy-not-installed-xyz is not installed"));

        var qcow2 = Path.Combine(root, "fb.qcow2");
        var converted = await new NbdCopier(destination).CopyAsync(new NbdFullCopyRequest { SourceUri = export.Uri, DestinationPath = qcow2, TargetFormat = "qcow2" });
        Assert.Equal("qemu-img", converted.Tool);
        Assert.Contains("Images are identical", Tool.Run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", image, qcow2));
    }

    [Fact]
    public async Task FullCopy_RefusesAnExistingDestination_UnlessOverwriteIsAllowed()
    {
        var image = Path.Combine(root, "ow-src.raw");
        CreateRandomImage(image, 2 * MiB, 1);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "ow", Path = image, ReadOnly = true, ListenAddress = lab[0].Address });
        var target = Path.Combine(root, "ow.raw");
        File.WriteAllText(target, "previous copy");
        var copier = new NbdCopier(destination);

        var error = await Assert.ThrowsAsync<ReplicaException>(() => copier.CopyAsync(new NbdFullCopyRequest { SourceUri = export.Uri, DestinationPath = target }));
        Assert.Equal("NbdCopyDestinationExists", error.ErrorId);
        Assert.Equal("previous copy", File.ReadAllText(target));

        await copier.CopyAsync(new NbdFullCopyRequest { SourceUri = export.Uri, DestinationPath = target, Overwrite = true });
        Assert.Equal(Sha256(image), Sha256(target));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task IncrementalCopy_AppliesOnlyTheDirtyExtents_AndEqualsAFreshFullCopy(bool viaTemporaryCopy)
    {
        // A qcow2 with random content, and its full copy (the previous state) on the destination.
        var seed = Path.Combine(root, "inc-seed.raw");
        CreateRandomImage(seed, 64 * MiB, 16);
        var disk = Path.Combine(root, "inc.qcow2");
        await source.RunAsync(new CommandSpec("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", seed, disk));
        var first = await manager.NewAsync(new NbdExportRequest { Name = "inc0", Path = disk, Format = "qcow2", ReadOnly = true, Server = NbdServerKind.QemuNbd, ListenAddress = lab[0].Address });
        var previous = Path.Combine(root, "inc-previous.raw");
        var copier = new NbdCopier(destination);
        await copier.CopyAsync(new NbdFullCopyRequest { SourceUri = first.Uri, DestinationPath = previous });
        await manager.RemoveAsync(first);

        // A persistent bitmap added offline, then scattered writes (qemu-io records them in it): some 64 KiB aligned,
        // some small and unaligned (a whole 64 KiB granule becomes dirty), one of zeros, one spanning two granules.
        await source.RunAsync(new CommandSpec("qemu-img", "bitmap", "--add", disk, "b0"));
        var writes = new (long Offset, long Length, string Command)[]
        {
            (1 * MiB, 64 * 1024, "write -P 0x5a"),
            (3 * MiB + 4096, 4096, "write -P 0xa5"),
            (10 * MiB, 256 * 1024, "write -P 0x01"),
            (33 * MiB, 128 * 1024, "write -z"),
            (47 * MiB + 65536 - 512, 1024, "write -P 0x77"),
            (63 * MiB, MiB, "write -P 0xee"),
        };
        var io = new List<string> { "qemu-io", "-f", "qcow2" };
        foreach (var (offset, length, command) in writes)
        {
            io.AddRange(new[] { "-c", $"{command} {offset} {length}" });
        }

        io.Add(disk);
        await source.RunAsync(new CommandSpec(io));
        var granules = writes.SelectMany(w => Enumerable.Range(0, (int)((w.Offset + w.Length - 1) / 65536 - w.Offset / 65536 + 1)).Select(i => w.Offset / 65536 + i)).Distinct().Count();
        var expectedDirty = granules * 65536L;

        var export = await manager.NewAsync(new NbdExportRequest { Name = "inc1", Path = disk, Format = "qcow2", Bitmap = "b0", ReadOnly = true, Server = NbdServerKind.QemuNbd, ListenAddress = lab[0].Address });
        Assert.Equal("qemu:dirty-bitmap:b0", export.BitmapContext);
        Assert.True((await NbdInfo.GetAsync(destination, export.Uri)).HasDirtyBitmap("b0"));

        var patched = Path.Combine(root, "inc-patched.raw");
        Tool.Run("cp", "--sparse=always", previous, patched); // as sparse as the previous copy, so allocations compare
        var reporter = new RecordingReporter();
        NbdCopyResult result;
        using (OperationContext.Use(reporter))
        {
            result = await copier.ApplyDirtyExtentsAsync(new NbdIncrementalCopyRequest { SourceUri = export.Uri, Bitmap = "b0", DestinationPath = patched, ViaTemporaryCopy = viaTemporaryCopy });
        }

        var fresh = Path.Combine(root, "inc-fresh.raw");
        await copier.CopyAsync(new NbdFullCopyRequest { SourceUri = export.Uri, DestinationPath = fresh });
        Assert.Equal(Sha256(fresh), Sha256(patched));
        Assert.NotEqual(Sha256(previous), Sha256(patched));

        Assert.Equal(NbdCopyKind.Incremental, result.Kind);
        Assert.Equal("python3-libnbd", result.Tool);
        Assert.Equal(patched, result.Destination);
        Assert.Equal(64 * MiB, result.Size);
        // The "write -z" granules (and the seed's zero 4 KiB blocks inside other dirty granules) read as zero: zeroed, not copied.
        Assert.InRange(result.BytesZeroed, 128 * 1024, expectedDirty - 5 * 4096);
        Assert.Equal(expectedDirty - result.BytesZeroed, result.BytesCopied);
        Assert.Equal(Images.AllocatedBytes(fresh), Images.AllocatedBytes(patched));
        Assert.Equal(64 * MiB - expectedDirty, result.BytesSkipped);
        Assert.Equal(6, result.Extents);   // the write at 47 MiB spans two granules: still one extent
        Assert.False(result.DestinationResized);
        Assert.True(reporter.Progresses.Last().Completed);
        Assert.Empty(Directory.GetFiles(root, $".inc-patched.raw{NbdCopier.TemporaryMarker}*"));
    }

    [Fact]
    public async Task IncrementalCopy_WithoutTheContext_OrWithoutPythonLibnbd_FailsClearly()
    {
        var image = Path.Combine(root, "noctx.raw");
        CreateRandomImage(image, 2 * MiB, 1);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "noctx", Path = image, ReadOnly = true, ListenAddress = lab[0].Address });
        var target = Path.Combine(root, "noctx-copy.raw");
        File.Copy(image, target);

        var noContext = await Assert.ThrowsAsync<ReplicaException>(() =>
            new NbdCopier(destination).ApplyDirtyExtentsAsync(new NbdIncrementalCopyRequest { SourceUri = export.Uri, Bitmap = "b9", DestinationPath = target }));
        Assert.Equal("NbdContextNotOffered", noContext.ErrorId);
        Assert.Contains("qemu:dirty-bitmap:b9", noContext.Message);
        Assert.Contains("host3", noContext.Message);

        // python3 -S does not load the dist-packages where Debian puts python3-libnbd: as if it were not installed.
        var withoutModule = new NbdCopier(destination) { PythonCommand = new[] { NbdCopier.PythonProgram, "-S" } };
        var missing = await Assert.ThrowsAsync<NbdToolMissingException>(() =>
            withoutModule.ApplyDirtyExtentsAsync(new NbdIncrementalCopyRequest { SourceUri = export.Uri, Bitmap = "b0", DestinationPath = target }));
        Assert.Equal("ProgramNotFound", missing.ErrorId);
        Assert.Equal(ReplicaErrorCategory.NotInstalled, missing.Category);
        Assert.Equal("python3-libnbd", missing.Package);
        Assert.Contains("apt-get install python3-libnbd", missing.Message);
        Assert.Contains("host3", missing.Message);

        var noPython = new NbdCopier(destination) { PythonCommand = new[] { "/usr/bin/python3-not-installed" } };
        var noInterpreter = await Assert.ThrowsAsync<NbdToolMissingException>(() =>
            noPython.ApplyDirtyExtentsAsync(new NbdIncrementalCopyRequest { SourceUri = export.Uri, Bitmap = "b0", DestinationPath = target }));
        Assert.Equal("python3-libnbd", noInterpreter.Package);
        Assert.Equal(Sha256(image), Sha256(target));
    }

    [Fact]
    public async Task CancelledCopy_LeavesNoDestination_NoTemporaryFile_AndNoProcess()
    {
        using var slow = await NbdKitServer.StartAsync(root, "--filter=rate", "pattern", "size=1G", "rate=40M");
        var target = Path.Combine(root, "cancelled.raw");
        using var cancel = new CancellationTokenSource();
        var reporter = new RecordingReporter();

        var copy = Task.Run(async () =>
        {
            using (OperationContext.Use(reporter))
            {
                return await new NbdCopier(destination).CopyAsync(new NbdFullCopyRequest { SourceUri = slow.Uri, DestinationPath = target, Tool = NbdCopyTool.NbdCopy }, cancel.Token);
            }
        });
        var temporary = await WaitForTemporaryAsync("cancelled.raw");
        cancel.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => copy);
        Assert.False(File.Exists(target));
        Assert.False(File.Exists(temporary));
        Assert.Empty(LocalProcesses.FindByArgument(temporary));
    }

    [Theory]
    [InlineData(NbdCopyTool.NbdCopy)]
    [InlineData(NbdCopyTool.QemuImg)]
    public async Task CopyWhoseProcessIsKilledMidway_Fails_AndLeavesNoFinalDestination(NbdCopyTool tool)
    {
        using var slow = await NbdKitServer.StartAsync(root, "--filter=rate", "pattern", "size=1G", "rate=40M");
        var target = Path.Combine(root, $"killed-{tool}.raw");

        var copy = new NbdCopier(destination).CopyAsync(new NbdFullCopyRequest { SourceUri = slow.Uri, DestinationPath = target, Tool = tool });
        var temporary = await WaitForTemporaryAsync($"killed-{tool}.raw");
        var deadline = DateTime.UtcNow.AddSeconds(20);
        IReadOnlyList<int> copiers;
        while ((copiers = LocalProcesses.FindByArgument(temporary)).Count == 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        // The copy tool this test started, found by the unique temporary path it writes (as an operator's kill or the OOM killer would).
        var pid = Assert.Single(copiers, p => LocalProcesses.CommandLine(p).FirstOrDefault() is "nbdcopy" or "qemu-img");
        Assert.True(new FileInfo(temporary).Length >= 0);
        Tool.Run("kill", "-KILL", pid.ToString(CultureInfo.InvariantCulture));

        var error = await Assert.ThrowsAsync<CommandFailedException>(() => copy);
        Assert.Contains("host3", error.Message);
        Assert.False(File.Exists(target));
        Assert.False(File.Exists(temporary));
    }

    [Fact]
    public async Task CopyToTemporaryThenRename_PublishesOnlyOnSuccess()
    {
        var copier = new NbdCopier(destination);
        var target = Path.Combine(root, "helper.raw");
        var seen = "";

        var failed = await Assert.ThrowsAsync<InvalidOperationException>(() => copier.CopyToTemporaryThenRenameAsync<int>(target, async (temporary, token) =>
        {
            seen = temporary;
            await destination.RunAsync(new CommandSpec("sh", "-c", "head -c 1048576 /dev/urandom > \"$1\"", "sh", temporary), token);
            throw new InvalidOperationException("copy failed halfway");
        }));
        Assert.Equal("copy failed halfway", failed.Message);
        Assert.StartsWith(Path.Combine(root, ".helper.raw.rt-partial-"), seen);
        Assert.False(File.Exists(seen));
        Assert.False(File.Exists(target));

        var written = await copier.CopyToTemporaryThenRenameAsync(target, async (temporary, token) =>
        {
            await destination.RunAsync(new CommandSpec("sh", "-c", "printf complete > \"$1\"", "sh", temporary), token);
            return temporary;
        });
        Assert.Equal("complete", File.ReadAllText(target));
        Assert.False(File.Exists(written));

        // A seeded temporary copy starts as the destination.
        await copier.CopyToTemporaryThenRenameAsync(target, async (temporary, token) =>
        {
            await destination.RunAsync(new CommandSpec("sh", "-c", "printf ' and patched' >> \"$1\"", "sh", temporary), token);
            return 0;
        }, seedFromDestination: true);
        Assert.Equal("complete and patched", File.ReadAllText(target));
    }

    private async Task<string> WaitForTemporaryAsync(string destinationName)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            var found = Directory.GetFiles(root, $".{destinationName}{NbdCopier.TemporaryMarker}*");
            if (found.Length == 1 && new FileInfo(found[0]).Length > 0)
            {
                return found[0];
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"No temporary file for {destinationName} appeared in {root}.");
    }
}
