using ReplicaTools.Core;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Operations;
using ReplicaTools.Tests.Storage;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Drbd;

/// <summary>
/// New-ReplicatedDisk's plan on the two lab storage hosts: validated by the real drbdadm on each host (each in its own
/// UTS namespace, so each picks its own <c>on</c> section), every file and command host by host, the DRBD commands
/// drbdadm would run for each step; and every kind of bad input refused with nothing written on either host.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class ReplicatedDiskPlanTests : DrbdLabTest
{
    public ReplicatedDiskPlanTests(LabFixture fixture)
        : base(fixture)
    {
    }

    [Fact]
    public async Task Plan_ShowsTheValidatedFileAndEveryCommandHostByHost_WithDrbdadmsDryRun_AndWritesNothing()
    {
        var request = Request();
        var reporter = new RecordingReporter();
        ReplicatedDiskPlan plan;
        using (OperationContext.Use(reporter))
        {
            plan = await Manager.PlanNewAsync(request);
        }

        var fileA = Lab.Layout(Lab.SessionA).ConfigFile("r0");
        var fileB = Lab.Layout(Lab.SessionB).ConfigFile("r0");
        var port = Text(request.Port);
        var expectedFile =
            DrbdResourceConfig.Header + "\n" +
            DrbdResourceConfig.Parse(plan.Steps[0].ShownInput!)!.Render(PlannedCommand.Redacted).Split('\n')[1] + "\n" +
            "resource r0 {\n" +
            "    options {\n        auto-promote no;\n    }\n" +
            "    net {\n        protocol C;\n        cram-hmac-alg sha256;\n        shared-secret \"********\";\n    }\n" +
            "    startup {\n        wfc-timeout 15;\n        degr-wfc-timeout 60;\n    }\n" +
            $"    on mirror-a {{\n        node-id 0;\n        device /dev/drbd0;\n        disk \"{Lab.DiskA}\";\n        address ipv4 127.0.0.2:{port};\n        meta-disk internal;\n    }}\n" +
            $"    on mirror-b {{\n        node-id 1;\n        device /dev/drbd0;\n        disk \"{Lab.DiskB}\";\n        address ipv4 127.0.0.3:{port};\n        meta-disk internal;\n    }}\n" +
            "}\n";
        Assert.Equal(expectedFile, plan.Steps[0].ShownInput);
        Assert.Equal(expectedFile, plan.StepsOn("mirror-b")[0].ShownInput);

        // Host by host, in order: the file and drbdadm reading it back, metadata, up, the forced promotion, the exports.
        Assert.Equal(new[]
        {
            "[mirror-a] write the resource file " + fileA,
            "[mirror-b] write the resource file " + fileB,
            $"[mirror-a] initialise DRBD metadata on {Lab.DiskA}",
            $"[mirror-b] initialise DRBD metadata on {Lab.DiskB}",
            "[mirror-a] bring r0 up",
            "[mirror-b] bring r0 up",
            "[mirror-a] make mirror-a primary; the initial sync overwrites mirror-b",
            "[mirror-a] start the Nbd export of r0",
            "[mirror-b] configure the Nbd export of r0 without starting it",
        }, plan.Actions.Select(a => a.ToString()));

        var a = plan.StepsOn("mirror-a").Select(s => s.Command.CommandLine).ToArray();
        Assert.StartsWith("sh -c ", a[0]);
        Assert.EndsWith($" sh {fileA} 077 mkdir", a[0]);
        Assert.Equal($"drbdadm -c {fileA} dump r0", a[1]);
        Assert.Equal($"drbdadm -c {fileA} create-md r0", a[2]);
        Assert.Equal($"drbdadm -c {fileA} up r0", a[3]);
        Assert.Equal($"drbdadm -c {fileA} primary --force r0", a[4]);
        Assert.Contains(a, line => line.StartsWith("nbd-server -C ", StringComparison.Ordinal));
        var b = plan.StepsOn("mirror-b").Select(s => s.Command.CommandLine).ToArray();
        Assert.Equal(new[] { $"drbdadm -c {fileB} dump r0", $"drbdadm -c {fileB} create-md r0", $"drbdadm -c {fileB} up r0" }, b[1..4]);
        Assert.DoesNotContain(b, line => line.StartsWith("nbd-server", StringComparison.Ordinal) || line.Contains(" primary ", StringComparison.Ordinal));
        Assert.Contains($"listenaddr = 127.0.0.3", plan.StepsOn("mirror-b")[^1].ShownInput);
        Assert.Contains(Lab.StandIn, plan.StepsOn("mirror-b")[^1].ShownInput);

        // What drbdadm on each host would run for each step (drbdadm -d): each host's own view of the resource.
        var upA = plan.Actions.Single(x => x.ToString() == "[mirror-a] bring r0 up").Expansion;
        Assert.Equal(new[]
        {
            "drbdsetup new-resource r0 0 --auto-promote=no",
            "drbdsetup new-minor r0 0 0",
            $"drbdsetup new-peer r0 1 --_name=mirror-b --shared-secret=******** --cram-hmac-alg=sha256 --protocol=C",
            $"drbdsetup new-path r0 1 ipv4:127.0.0.2:{port} ipv4:127.0.0.3:{port}",
            $"drbdmeta 0 v09 {Lab.DiskA} internal apply-al",
            $"drbdsetup attach 0 {Lab.DiskA} {Lab.DiskA} internal",
            "drbdsetup connect r0 1",
        }, upA);
        var upB = plan.Actions.Single(x => x.ToString() == "[mirror-b] bring r0 up").Expansion;
        Assert.Contains("drbdsetup new-resource r0 1 --auto-promote=no", upB);
        Assert.Contains($"drbdsetup new-path r0 0 ipv4:127.0.0.3:{port} ipv4:127.0.0.2:{port}", upB);
        Assert.Contains($"drbdsetup attach 0 {Lab.DiskB} {Lab.DiskB} internal", upB);
        Assert.Equal(new[] { $"drbdmeta 0 v09 {Lab.DiskA} internal create-md 1" }, plan.Actions[2].Expansion);
        Assert.Equal(new[] { "drbdsetup primary r0 --force" }, plan.Actions[6].Expansion);

        Assert.Contains(plan.Notes, n => n.Contains("DRBD's internal metadata takes the last 40 KiB", StringComparison.Ordinal));
        var described = plan.Describe();
        Assert.Contains("[mirror-b] drbdadm -c " + fileB + " up r0", described);
        Assert.Contains("#     drbdsetup connect r0 1", described);
        Assert.DoesNotContain(Secret, described);
        Assert.All(plan.Steps, s => Assert.DoesNotContain(s.Command.Arguments, arg => arg.Contains(Secret, StringComparison.Ordinal)));
        Assert.All(reporter.Verbose.Concat(reporter.Warnings), m => Assert.DoesNotContain(Secret, m));
        AssertNothingWritten();
    }

    [Fact]
    public async Task BadInput_IsAClearErrorNamingHostAndParameter_AndNothingIsWrittenOnEitherHost()
    {
        async Task<ReplicaException> Refused(ReplicatedDiskRequest request)
        {
            var error = await Assert.ThrowsAsync<ReplicaException>(() => Manager.PlanNewAsync(request));
            Assert.DoesNotContain(Secret, error.Message);
            return error;
        }

        // The same host twice: the same session, and a second sshd that is the same machine (same kernel host name).
        var same = await Refused(Request() with { Secondary = Lab.SessionA, SecondaryDisk = Lab.DiskB });
        Assert.Equal(("DrbdSameHost", ReplicaErrorCategory.InvalidArgument), (same.ErrorId, same.Category));
        var twin = await Ssh.StartDaemonAsync("mirror-a-twin", "127.0.0.4", wrap: DrbdLab.InOwnUtsNamespace("mirror-a"));
        Ssh.Trust(twin);
        var twinSession = Core.Remote.ReplicaSessionRegistry.Create(twin.Options(), "mirror-a-twin", isImplicit: false, controlDirectory: Ssh.ControlDirectory);
        try
        {
            var sameMachine = await Refused(Request() with { Secondary = twinSession, SecondaryDisk = Lab.DiskB });
            Assert.Equal("DrbdSameHost", sameMachine.ErrorId);
            Assert.Contains("'mirror-a'", sameMachine.Message);
        }
        finally
        {
            await Core.Remote.ReplicaSessionRegistry.RemoveAsync(twinSession);
            SshLab.Stop(twin);
        }

        // A disk missing on one host.
        var missing = await Refused(Request() with { SecondaryDisk = "/dev/does-not-exist" });
        Assert.Equal(("DrbdDiskNotFound", "mirror-b"), (missing.ErrorId, missing.HostName));
        Assert.Contains("'/dev/does-not-exist'", missing.Message);

        // A disk that already carries another resource's metadata.
        var used = Lab.NewDisk("used.disk", 64 * MiB);
        Tool.Run("drbdmeta", "--force", "-", "v09", used, "internal", "create-md", "1");
        var metadata = await Refused(Request() with { SecondaryDisk = used });
        Assert.Equal(("DrbdDiskHasMetadata", "mirror-b", ReplicaErrorCategory.ResourceExists), (metadata.ErrorId, metadata.HostName, metadata.Category));
        Assert.Contains("-UseExistingMetadata", metadata.RecommendedAction);
        Assert.True(HasMetadata(used));

        // A disk that another resource on the host is configured with.
        var other = Lab.Layout(Lab.SessionB).ConfigDirectory;
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, "r9.res"), $"resource r9 {{\n  on mirror-a {{ node-id 0; device /dev/drbd9; disk /dev/vdz; address 127.0.0.2:7999; meta-disk internal; }}\n  on mirror-b {{ node-id 1; device /dev/drbd9; disk {Lab.DiskB}; address 127.0.0.3:7999; meta-disk internal; }}\n}}\n");
        var inUse = await Refused(Request());
        Assert.Equal(("DrbdDiskInUse", "mirror-b"), (inUse.ErrorId, inUse.HostName));
        Assert.Contains("'r9'", inUse.Message);
        File.Delete(Path.Combine(other, "r9.res"));

        // A port already in use (mirror-a's own sshd).
        var port = await Refused(Request(port: Lab.MirrorA.Port));
        Assert.Equal(("DrbdPortInUse", "mirror-a", ReplicaErrorCategory.ResourceUnavailable), (port.ErrorId, port.HostName, port.Category));
        Assert.Contains($"TCP port {Lab.MirrorA.Port} on 127.0.0.2", port.Message);

        // Empty and over-long secrets, and a name with shell metacharacters.
        Assert.Contains("-SharedSecret is empty", (await Refused(Request(secret: string.Empty))).Message);
        Assert.Contains("at most 63", (await Refused(Request(secret: new string('x', 64)))).Message);
        var name = await Refused(Request(name: "r0;reboot"));
        Assert.Equal("DrbdInvalidArgument", name.ErrorId);
        Assert.Contains("-Name 'r0;reboot'", name.Message);

        // A source image larger than the disk holds: the error says how much the metadata takes.
        var image = Path.Combine(Lab.Root, "big.qcow2");
        Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", image, Text(DrbdMetadata.UsableBytes(Lab.DiskBytes) + 512));
        var big = await Refused(Request(sourceImage: image));
        Assert.Equal(("DrbdSourceImageTooLarge", ReplicaErrorCategory.LimitsExceeded), (big.ErrorId, big.Category));
        Assert.Contains("DRBD's internal metadata takes the last 40960 bytes (40 KiB)", big.Message);
        Assert.Contains($"leaving {Text(DrbdMetadata.UsableBytes(Lab.DiskBytes))} bytes", big.Message);

        AssertNothingWritten();
    }

    [Fact]
    public async Task WithoutTheKernelModule_ThePlanSaysSo_AndRunningItChangesNothing()
    {
        // The production kernel seam on this machine: drbdsetup finds no DRBD module.
        var manager = new ReplicatedDiskManager(new DrbdEnvironment(DrbdUtilsKernel.Instance, Lab.Environment.Layout));
        var plan = await manager.PlanNewAsync(Request());
        var warning = Assert.Single(plan.Warnings, w => w.HostName == "mirror-a");
        Assert.True(warning.Fatal);
        Assert.Contains("DRBD kernel module is not available", warning.Message);

        var error = await Assert.ThrowsAsync<ReplicaException>(() => manager.ExecuteAsync(plan));
        Assert.Equal(("DrbdKernelModuleMissing", ReplicaErrorCategory.NotInstalled), (error.ErrorId, error.Category));
        Assert.Contains("modprobe drbd", error.RecommendedAction);
        AssertNothingWritten();
    }
}
