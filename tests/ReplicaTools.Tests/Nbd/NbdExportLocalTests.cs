using System.Net;
using System.Net.Sockets;
using ReplicaTools.Core;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;
using static ReplicaTools.Tests.Nbd.NbdTestSupport;

namespace ReplicaTools.Tests.Nbd;

/// <summary>Real nbd-server and qemu-nbd exports on the local machine, with their own state directory.</summary>
public sealed class NbdExportLocalTests : IAsyncLifetime
{
    private readonly string root;
    private readonly NbdExportManager manager;

    public NbdExportLocalTests()
    {
        Tool.Require("nbd-server", "qemu-nbd", "nbdcopy", "nbdinfo", "qemu-img", "ss");
        root = NewDirectory("/tmp", "rt-nbd-local");
        manager = new NbdExportManager(LocalHost.Instance, Path.Combine(root, "state"));
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => CleanUpAsync(manager, root);

    [Theory]
    [InlineData(NbdServerKind.NbdServer)]
    [InlineData(NbdServerKind.QemuNbd)]
    public async Task ReadOnlyExport_ServesTheExactBytes_RefusesWrites_IsListed_AndRemoveStopsIt(NbdServerKind server)
    {
        var image = Path.Combine(root, "disk.raw");
        CreateRandomImage(image, 24 * MiB, 5);
        var expected = Sha256(image);

        var export = await manager.NewAsync(new NbdExportRequest { Name = "ro-" + server, Path = image, ReadOnly = true, Server = server });

        Assert.Equal(NbdExportState.Running, export.State);
        Assert.InRange(export.Port, NbdExportManager.FirstAutomaticPort, NbdExportManager.LastAutomaticPort);
        Assert.Equal($"nbd://127.0.0.1:{export.Port}/ro-{server}", export.Uri);
        Assert.True(LocalProcesses.IsAlive(export.ProcessId!.Value));
        Assert.Contains(export.PidFile, LocalProcesses.CommandLine(export.ProcessId!.Value));
        Assert.Equal(export.ServerArguments, LocalProcesses.CommandLine(export.ProcessId!.Value));

        var copy = Path.Combine(root, "copy.raw");
        Tool.Run("nbdcopy", export.Uri, copy);
        Assert.Equal(expected, Sha256(copy));

        var garbage = Path.Combine(root, "garbage.raw");
        File.WriteAllBytes(garbage, new byte[24 * MiB]);
        var write = Tool.TryRun("nbdcopy", new[] { garbage, export.Uri });
        Assert.NotEqual(0, write.ExitCode);
        Assert.Equal(expected, Sha256(image));

        var listed = Assert.Single(await new NbdExportManager(LocalHost.Instance, Path.Combine(root, "state")).ListAsync());
        Assert.Equal(export.Name, listed.Name);
        Assert.Equal(NbdExportState.Running, listed.State);
        Assert.Equal(export.ProcessId, listed.ProcessId);
        Assert.Equal(export.Uri, listed.Uri);
        Assert.Equal(server, listed.Server);
        Assert.True(listed.ReadOnly);
        Assert.Equal("raw", listed.Format);

        await manager.RemoveAsync(listed);

        Assert.True(await LocalProcesses.WaitGoneAsync(export.ProcessId!.Value, TimeSpan.FromSeconds(5)));
        Assert.False(await LocalProcesses.IsPortOpenAsync("127.0.0.1", export.Port));
        Assert.Empty(await manager.ListAsync());
        Assert.Empty(Directory.GetFiles(Path.Combine(root, "state")));
    }

    /// <summary>
    /// Regression: nbd-server 3.24's maxconnections counts every connection since the server started, so an export
    /// written with the old default of 8 refused every client after its 8th in total (nbdinfo: "server policy prevents
    /// NBD_OPT_GO"). Twenty clients one after another must all be served.
    /// </summary>
    [Theory]
    [InlineData(NbdServerKind.NbdServer)]
    [InlineData(NbdServerKind.QemuNbd)]
    public async Task Export_ServesManyClientsOneAfterAnother(NbdServerKind server)
    {
        var image = Path.Combine(root, "many.raw");
        CreateRandomImage(image, 1 * MiB, 7);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "many-" + server, Path = image, ReadOnly = true, Server = server });
        for (var i = 1; i <= 20; i++)
        {
            var (code, stdout, stderr) = Tool.TryRun("nbdinfo", new[] { "--size", export.Uri });
            Assert.True(code == 0, $"client {i} of 20 was refused: {stderr}");
            Assert.Equal((1 * MiB).ToString(System.Globalization.CultureInfo.InvariantCulture), stdout.Trim());
        }

        await manager.RemoveAsync(export);
    }

    [Fact]
    public async Task MaxConnections_WithNbdServer_IsRefusedNamingTheParameter()
    {
        var image = Path.Combine(root, "capped.raw");
        CreateRandomImage(image, 1 * MiB, 8);
        var error = await Assert.ThrowsAnyAsync<ReplicaTools.Core.ReplicaException>(() =>
            manager.NewAsync(new NbdExportRequest { Name = "capped", Path = image, ReadOnly = true, Server = NbdServerKind.NbdServer, MaxConnections = 4 }));
        Assert.Contains("-MaxConnections works only with qemu-nbd", error.Message);
        Assert.Empty(await manager.ListAsync());
    }

    [Theory]
    [InlineData(NbdServerKind.NbdServer)]
    [InlineData(NbdServerKind.QemuNbd)]
    public async Task WritableExport_TakesWrites_IntoTheFile(NbdServerKind server)
    {
        var image = Path.Combine(root, "target.raw");
        File.WriteAllBytes(image, new byte[8 * MiB]);
        var source = Path.Combine(root, "source.raw");
        CreateRandomImage(source, 8 * MiB, 4);

        var export = await manager.NewAsync(new NbdExportRequest { Name = "rw", Path = image, Server = server });
        Tool.Run("nbdcopy", "--flush", source, export.Uri);
        await manager.RemoveAsync(export);

        Assert.Equal(Sha256(source), Sha256(image));
    }

    [Theory]
    [InlineData(NbdServerKind.NbdServer)]
    [InlineData(NbdServerKind.QemuNbd)]
    public async Task KilledServer_LeavesAStaleRecord_ThatIsReportedAndRemovable(NbdServerKind server)
    {
        var image = Path.Combine(root, "stale.raw");
        CreateRandomImage(image, 4 * MiB, 1);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "stale", Path = image, ReadOnly = true, Server = server });

        Tool.Run("kill", "-KILL", export.ProcessId!.Value.ToString());
        Assert.True(await LocalProcesses.WaitGoneAsync(export.ProcessId!.Value, TimeSpan.FromSeconds(5)));

        var reporter = new RecordingReporter();
        IReadOnlyList<NbdExport> listed;
        using (OperationContext.Use(reporter))
        {
            listed = await manager.ListAsync();
        }

        var stale = Assert.Single(listed);
        Assert.Equal(NbdExportState.Stale, stale.State);
        Assert.Contains($"process {export.ProcessId} is gone", stale.StaleReason);
        Assert.Null(stale.ProcessId); // the recorded id is no longer this export's process: it must not be offered for killing
        Assert.Contains(reporter.Warnings, w => w.Contains("'stale' is stale") && w.Contains("Remove-NbdExport -Name stale"));

        await manager.RemoveAsync(stale);
        Assert.Empty(await manager.ListAsync());

        // The name is free again.
        var again = await manager.NewAsync(new NbdExportRequest { Name = "stale", Path = image, ReadOnly = true, Server = server });
        Assert.Equal(NbdExportState.Running, again.State);
    }

    [Fact]
    public async Task RecordWhosePidNowBelongsToAnotherProgram_IsStale_AndRemoveDoesNotKillThatProgram()
    {
        var image = Path.Combine(root, "reuse.raw");
        CreateRandomImage(image, 4 * MiB, 1);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "reuse", Path = image, ReadOnly = true });
        await manager.RemoveAsync(export);
        Assert.True(await LocalProcesses.WaitGoneAsync(export.ProcessId!.Value, TimeSpan.FromSeconds(5)));

        // Forge the record of a dead export whose pid is now a sleep this test started.
        using var sleeper = System.Diagnostics.Process.Start("sleep", "60");
        var statePath = Path.Combine(root, "state", "reuse.json");
        Directory.CreateDirectory(Path.Combine(root, "state"));
        File.WriteAllText(statePath, $$"""
            {"version":1,"status":"running","name":"reuse","server":"QemuNbd","path":"{{image}}","readOnly":true,"listenAddress":"127.0.0.1",
             "port":{{export.Port}},"uri":"{{export.Uri}}","processId":{{sleeper.Id}},"format":"raw","createdAt":"2024-01-01T00:00:00+00:00",
             "pidFile":"{{export.PidFile}}","serverArguments":{{System.Text.Json.JsonSerializer.Serialize(export.ServerArguments)}}}
            """);

        var stale = Assert.Single(await manager.ListAsync());
        Assert.Equal(NbdExportState.Stale, stale.State);
        Assert.Contains($"process {sleeper.Id} is no longer qemu-nbd", stale.StaleReason);
        Assert.Null(stale.ProcessId); // that id is the sleeper's now, not the server's

        await manager.RemoveAsync(stale);
        Assert.True(LocalProcesses.IsAlive(sleeper.Id));
        Assert.Empty(await manager.ListAsync());
        sleeper.Kill();
    }

    [Fact]
    public async Task ServerThatIgnoresSigterm_IsKilledAfterTheGracePeriod_WithAWarning()
    {
        Tool.Require("bash");
        var image = Path.Combine(root, "stubborn.raw");
        CreateRandomImage(image, MiB, 1);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "stubborn", Path = image, ReadOnly = true, Server = NbdServerKind.NbdServer });
        await manager.RemoveAsync(export);

        var ready = Path.Combine(root, "stubborn.ready");

        // A process that passes the identity check (argv[0] nbd-server, the export's pid file in its arguments) but ignores TERM.
        using var stubborn = System.Diagnostics.Process.Start("bash", new[]
        {
            "-c", "exec -a nbd-server /usr/bin/python3 -c 'import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open(sys.argv[3], \"w\").close(); time.sleep(120)' -p \"$1\" \"$2\"",
            "bash", export.PidFile, ready,
        });
        try
        {
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (!File.Exists(ready) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }

            var impostor = new NbdExport
            {
                Name = export.Name, HostName = export.HostName, Path = export.Path, ListenAddress = export.ListenAddress, Uri = export.Uri,
                StateFile = export.StateFile, ConfigFile = export.ConfigFile, PidFile = export.PidFile, Server = NbdServerKind.NbdServer,
                ProcessId = stubborn.Id, ServerArguments = new[] { "nbd-server" },
            };
            var reporter = new RecordingReporter();
            var stopwatch = System.Diagnostics.Stopwatch.StartNew();
            using (OperationContext.Use(reporter))
            {
                await manager.RemoveAsync(impostor, TimeSpan.FromSeconds(1));
            }

            Assert.True(await LocalProcesses.WaitGoneAsync(stubborn.Id, TimeSpan.FromSeconds(5)));
            Assert.InRange(stopwatch.Elapsed.TotalSeconds, 0.9, 15);
            Assert.Contains(reporter.Warnings, w => w.Contains("did not stop within the grace period and was killed"));
        }
        finally
        {
            if (!stubborn.HasExited)
            {
                stubborn.Kill();
            }
        }
    }

    [Theory]
    [InlineData(NbdServerKind.NbdServer)]
    [InlineData(NbdServerKind.QemuNbd)]
    public async Task AutomaticPort_TakenBeforeTheServerBinds_IsReplacedByAnotherOne(NbdServerKind server)
    {
        var image = Path.Combine(root, "race.raw");
        CreateRandomImage(image, 4 * MiB, 1);
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        var busy = ((IPEndPoint)squatter.LocalEndpoint).Port;
        var free = Ports.Free("127.0.0.1");
        var raced = new NbdExportManager(LocalHost.Instance, Path.Combine(root, "state"))
        {
            // As if the port was free when chosen and taken before the server bound it.
            PortChooser = (_, attempt) => attempt == 0 ? busy : free,
        };

        var export = await raced.NewAsync(new NbdExportRequest { Name = "race", Path = image, ReadOnly = true, Server = server });

        Assert.Equal(free, export.Port);
        Assert.Equal(NbdExportState.Running, Assert.Single(await raced.ListAsync()).State);
        var size = Tool.Run("nbdinfo", "--size", export.Uri).Trim();
        Assert.Equal((4 * MiB).ToString(), size);
    }

    [Theory]
    [InlineData(NbdServerKind.NbdServer)]
    [InlineData(NbdServerKind.QemuNbd)]
    public async Task ExplicitPortInUse_FailsClearly_AndLeavesNothingBehind(NbdServerKind server)
    {
        var image = Path.Combine(root, "busy.raw");
        CreateRandomImage(image, 4 * MiB, 1);
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        var busy = ((IPEndPoint)squatter.LocalEndpoint).Port;

        var error = await Assert.ThrowsAsync<NbdPortInUseException>(() =>
            manager.NewAsync(new NbdExportRequest { Name = "busy", Path = image, Port = busy, Server = server }));

        Assert.Equal("NbdPortInUse", error.ErrorId);
        Assert.Contains($"port {busy}", error.Message);
        Assert.Contains("localhost", error.Message);
        Assert.Empty(await manager.ListAsync());
        Assert.Empty(Directory.GetFiles(Path.Combine(root, "state")));
        Assert.Empty(LocalProcesses.FindByArgument(Path.Combine(root, "state", "busy.pid")));
    }

    [Fact]
    public async Task SecondExportWithTheSameName_IsRefused_AndTheFirstKeepsRunning()
    {
        var image = Path.Combine(root, "dup.raw");
        CreateRandomImage(image, 4 * MiB, 1);
        var first = await manager.NewAsync(new NbdExportRequest { Name = "dup", Path = image, ReadOnly = true });

        var error = await Assert.ThrowsAsync<ReplicaException>(() => manager.NewAsync(new NbdExportRequest { Name = "dup", Path = image, ReadOnly = true, Server = NbdServerKind.NbdServer }));

        Assert.Equal("NbdExportExists", error.ErrorId);
        Assert.Equal(ReplicaErrorCategory.ResourceExists, error.Category);
        Assert.Contains("Remove-NbdExport -Name dup", error.Message);
        var listed = Assert.Single(await manager.ListAsync());
        Assert.Equal(first.ProcessId, listed.ProcessId);
        Assert.Equal(NbdExportState.Running, listed.State);
    }

    [Fact]
    public async Task PathWithQuotesSpacesPercentAndBackslashes_IsServedLiterally_ByNbdServer()
    {
        var directory = Path.Combine(root, "it's a \"dir\" $(x) %s\\n ");
        Directory.CreateDirectory(directory);
        var image = Path.Combine(directory, " %n [x]=y;#c.raw ");
        CreateRandomImage(image, 2 * MiB, 1);

        var export = await manager.NewAsync(new NbdExportRequest { Name = "weird", Path = image, ReadOnly = true, Server = NbdServerKind.NbdServer });

        var copy = Path.Combine(root, "weird-copy.raw");
        Tool.Run("nbdcopy", export.Uri, copy);
        Assert.Equal(Sha256(image), Sha256(copy));
        Assert.Equal(image, export.Path);
    }

    [Fact]
    public async Task Qcow2FileWithoutFormat_IsRefused_NamingTheFormatToPass()
    {
        var image = Path.Combine(root, "disk.qcow2");
        Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "16M");

        var error = await Assert.ThrowsAsync<ReplicaException>(() => manager.PlanAsync(new NbdExportRequest { Name = "q", Path = image }));

        Assert.Equal("NbdFormatAmbiguous", error.ErrorId);
        Assert.Contains("-Format qcow2", error.Message);
        var plan = await manager.PlanAsync(new NbdExportRequest { Name = "q", Path = image, Format = "qcow2", Bitmap = "b0" });
        Assert.Contains("-B b0", plan.StartServer.Command.CommandLine);
    }

    [Fact]
    public async Task MissingPath_AndWrongKind_AreReportedWithTheHost()
    {
        var missing = await Assert.ThrowsAsync<ReplicaException>(() => manager.PlanAsync(new NbdExportRequest { Name = "m", Path = Path.Combine(root, "nope.raw") }));
        Assert.Equal("NbdPathNotFound", missing.ErrorId);
        Assert.Contains("localhost", missing.Message);

        var notDevice = await Assert.ThrowsAsync<ReplicaException>(() => manager.PlanAsync(new NbdExportRequest { Name = "m", Path = root, IsDevice = true }));
        Assert.Equal("NbdPathWrongType", notDevice.ErrorId);

        var file = Path.Combine(root, "f.raw");
        CreateRandomImage(file, MiB, 1);
        var notDeviceFile = await Assert.ThrowsAsync<ReplicaException>(() => manager.PlanAsync(new NbdExportRequest { Name = "m", Path = file, IsDevice = true }));
        Assert.Contains("use -Path", notDeviceFile.Message);
    }

    [Fact]
    public async Task Plan_ListsTheExactCommands_AndRunsNothingThatChangesState()
    {
        var image = Path.Combine(root, "plan.raw");
        CreateRandomImage(image, MiB, 1);
        var state = Path.Combine(root, "state");

        var plan = await manager.PlanAsync(new NbdExportRequest { Name = "plan", Path = image, ReadOnly = true, Server = NbdServerKind.NbdServer, Port = 10999 });

        Assert.False(Directory.Exists(state));
        Assert.Equal(new[] { "nbd-server", "-C", $"{state}/plan.conf", "-p", $"{state}/plan.pid" }, plan.ServerArguments);
        Assert.Contains($"[localhost] mkdir -p -m 0700 -- {state}", plan.Describe());
        Assert.Contains($"[localhost] nbd-server -C {state}/plan.conf -p {state}/plan.pid", plan.Describe());
        Assert.Contains($"exportname = {image}\nreadonly = true\n", plan.ConfigText);
        Assert.Contains("port = 10999\n", plan.ConfigText);
        Assert.Equal("nbd://127.0.0.1:10999/plan", plan.Uri);

        var qemu = await manager.PlanAsync(new NbdExportRequest { Name = "plan", Path = image, ListenAddress = "0.0.0.0", Port = 10998, MaxConnections = 3 });
        Assert.Equal(new[] { "qemu-nbd", "--fork", "--persistent", "--shared=3", "--pid-file", $"{state}/plan.pid", "-b", "0.0.0.0", "-p", "10998", "-x", "plan", "-f", "raw", image }, qemu.ServerArguments);
        Assert.Equal("nbd://127.0.0.1:10998/plan", qemu.Uri);
        Assert.Null(qemu.ConfigFile);
    }

    [Theory]
    [InlineData(NbdServerKind.NbdServer)]
    [InlineData(NbdServerKind.QemuNbd)]
    public async Task NbdInfo_DescribesTheExport_WithTheRealSizeEvenFromNbdServer(NbdServerKind server)
    {
        var image = Path.Combine(root, "info.raw");
        CreateRandomImage(image, 6 * MiB, 1);
        var export = await manager.NewAsync(new NbdExportRequest { Name = "info", Path = image, ReadOnly = true, Server = server });

        var info = await NbdInfo.GetAsync(LocalHost.Instance, export.Uri);

        Assert.Equal(6 * MiB, info.Size);
        Assert.Equal(server == NbdServerKind.NbdServer ? "nbdinfo --size" : "json", info.SizeSource);
        Assert.True(info.IsReadOnly);
        Assert.True(info.CanMultiConn);
        Assert.Equal(server == NbdServerKind.QemuNbd, info.HasContext(NbdContexts.BaseAllocation));

        var allocation = await NbdInfo.GetAllocationAsync(LocalHost.Instance, export.Uri);
        if (server == NbdServerKind.NbdServer)
        {
            Assert.Null(allocation);
        }
        else
        {
            Assert.Equal(MiB, allocation!.DataBytes);
            Assert.Equal(5 * MiB, allocation.ZeroBytes);
        }
    }
}
