using System.Text.Json;
using System.Text.Json.Nodes;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Quorum;

/// <summary>What Test-QuorumDisk found: one comparison per replica, and where no majority exists.</summary>
public sealed class QuorumTestResult
{
    public required QuorumDefinition Disk { get; init; }

    public required IReadOnlyList<QuorumComparison> Replicas { get; init; }

    public required QuorumCompareResult Raw { get; init; }

    /// <summary>The error to report when some range has no majority (null when every range has one).</summary>
    public QuorumException? NoMajority { get; init; }
}

public sealed partial class QuorumDiskManager
{
    /// <summary>Where Test-QuorumDisk's NBD socket directory is made on the VM host.</summary>
    public const string ExportDirectoryTemplate = "/tmp/rt-quorum-test-XXXXXX";

    private static readonly string[] Python = { "/usr/bin/python3" };

    /// <summary>
    /// Compares all replicas of a quorum disk through the running QEMU, without stopping anything: QEMU's own NBD server
    /// (nbd-server-start on a unix socket in a private directory on the VM host) exports each child node read-only, and
    /// <see cref="QuorumCompareScript"/> reads them side by side. Everything is torn down afterwards, also on failure.
    /// </summary>
    /// <exception cref="QuorumException">QuorumNbdServerBusy (QEMU already runs an NBD server), QuorumCompareFailed, QuorumToolMissing.</exception>
    public async Task<QuorumTestResult> TestAsync(string? drive, CancellationToken cancellationToken = default)
    {
        await using var monitor = await QemuMonitor.OpenAsync(Vm, cancellationToken).ConfigureAwait(false);
        var view = await ReadViewAsync(monitor, cancellationToken).ConfigureAwait(false);
        EnsureRunning(Vm, view);
        var disk = ResolveDisk(view, drive);
        var children = view.Graph.ChildrenOf(disk.NodeName).Select(c => c.Child).ToHashSet(StringComparer.Ordinal);
        var attached = disk.Replicas.Where(r => children.Contains(r.NodeName)).ToArray();

        // A replica whose storage does not answer is left out: reading it would fail (NBD) or wait forever (libnfs).
        var probes = await Task.WhenAll(attached.Select(r => QuorumProbe.ProbeOpenAsync(Host, r.Location, ProbeTimeout, cancellationToken))).ConfigureAwait(false);
        for (var i = 0; i < attached.Length; i++)
        {
            if (probes[i].Status != QuorumProbeStatus.Readable)
            {
                OperationContext.Reporter.Warning($"Replica {attached[i].NodeName} ({attached[i].Location.Text}) of quorum disk '{disk.Drive}' is not compared: {probes[i].Reason}.");
            }
        }

        var replicas = attached.Where((_, i) => probes[i].Status == QuorumProbeStatus.Readable).ToArray();
        if (replicas.Length < 2)
        {
            throw new QuorumException(QuorumErrorIds.CompareFailed, ReplicaErrorCategory.InvalidOperation,
                $"Quorum disk '{disk.Drive}' of {Vm.DisplayName} has {replicas.Length} replica(s) attached and answering; there is nothing to compare.", Host.Name, disk.Drive);
        }

        var directory = (await Host.RunAsync(new CommandSpec("mktemp", "-d", ExportDirectoryTemplate) { Timeout = TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false)).StandardOutput.Trim();
        // QEMU may run as another user (libvirt's qemu user): it must be able to create its socket here.
        await Host.RunAsync(new CommandSpec("chmod", "1733", directory) { Timeout = TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false);
        var socket = directory + "/nbd.sock";
        var exports = new List<string>();
        var serverStarted = false;
        try
        {
            var start = new JsonObject { ["addr"] = new JsonObject { ["type"] = "unix", ["data"] = new JsonObject { ["path"] = socket } } };
            OperationContext.Reporter.Verbose(QemuMonitor.Plan(Vm, "nbd-server-start", start, "QEMU's NBD server for the comparison").ToString());
            try
            {
                await monitor.ExecuteAsync("nbd-server-start", start, null, cancellationToken).ConfigureAwait(false);
            }
            catch (QmpException ex) when (ex.Description.Contains("already running", StringComparison.OrdinalIgnoreCase))
            {
                throw new QuorumException(QuorumErrorIds.NbdServerBusy, ReplicaErrorCategory.ResourceUnavailable,
                    $"{Vm.DisplayName} already runs an NBD server (an Invoke-NbdClone, a libvirt backup or an export of its own); QEMU has only one, and Test-QuorumDisk needs it.", Host.Name, disk.Drive, ex)
                {
                    RecommendedAction = "Run Test-QuorumDisk again when that export has ended.",
                };
            }

            serverStarted = true;
            foreach (var replica in replicas)
            {
                var export = new JsonObject { ["type"] = "nbd", ["id"] = ExportId(replica.NodeName), ["node-name"] = replica.NodeName, ["name"] = replica.NodeName, ["writable"] = false };
                OperationContext.Reporter.Verbose(QemuMonitor.Plan(Vm, "block-export-add", export, "read-only export of " + replica.Location.Text).ToString());
                await monitor.ExecuteAsync("block-export-add", export, null, cancellationToken).ConfigureAwait(false);
                exports.Add(ExportId(replica.NodeName));
            }

            var uris = replicas.Select(r => $"nbd+unix:///{Uri.EscapeDataString(r.NodeName)}?socket={socket}").ToArray();
            var raw = await RunCompareAsync(disk, uris, cancellationToken).ConfigureAwait(false);
            return BuildTestResult(disk, replicas, raw);
        }
        finally
        {
            foreach (var id in exports)
            {
                await TryAsync(monitor, "block-export-del", new JsonObject { ["id"] = id, ["mode"] = "hard" }).ConfigureAwait(false);
            }

            if (serverStarted)
            {
                await TryAsync(monitor, "nbd-server-stop", null).ConfigureAwait(false);
            }

            await Host.RunAsync(new CommandSpec("rm", "-rf", "--", directory) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(30) }, CancellationToken.None).ConfigureAwait(false);
        }
    }

    private static string ExportId(string nodeName) => "rt-quorum-test-" + nodeName;

    private async Task TryAsync(QemuMonitor monitor, string command, JsonObject? arguments)
    {
        try
        {
            OperationContext.Reporter.Verbose(QemuMonitor.Plan(Vm, command, arguments, "clean up").ToString());
            await monitor.ExecuteAsync(command, arguments, null, CancellationToken.None).ConfigureAwait(false);
        }
        catch (ReplicaException ex)
        {
            OperationContext.Reporter.Warning($"{Vm.DisplayName}: '{command}' failed while cleaning up: {ex.Message}");
        }
    }

    private async Task<QuorumCompareResult> RunCompareAsync(QuorumDefinition disk, IReadOnlyList<string> uris, CancellationToken cancellationToken)
    {
        QuorumCompareResult? result = null;
        var activity = $"Test-QuorumDisk {disk.Drive}";
        var arguments = Python.Concat(new[] { "-c", QuorumCompareScript.Source, disk.VoteThreshold.ToString(System.Globalization.CultureInfo.InvariantCulture) }).Concat(uris);
        var spec = new CommandSpec(arguments) { ThrowOnFailure = false, Timeout = StorageOptions.LongCommandTimeout }.WithOutputLines(line =>
        {
            if (QuorumCompareScript.TryParseProgress(line, out var done, out var total) && total > 0)
            {
                OperationContext.Reporter.Progress(new OperationProgress(activity,
                    $"Comparing {uris.Count} replicas: {Text.ByteSize.Format(done)} of {Text.ByteSize.Format(total)}", (int)(done * 100 / total)));
            }
            else if (line.StartsWith("result ", StringComparison.Ordinal))
            {
                result = QuorumCompareScript.ParseResult(line);
            }
        });
        OperationContext.Reporter.Verbose($"[{Host.Name}] {Python[0]} -c COMPARE-SCRIPT {disk.VoteThreshold} {string.Join(' ', uris)}");
        CommandResult run;
        try
        {
            run = await Host.RunAsync(spec, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            OperationContext.Reporter.Progress(new OperationProgress(activity, "Done", Completed: true));
        }

        if (run.ExitCode == QuorumCompareScript.ExitModuleMissing)
        {
            throw new QuorumException(QuorumErrorIds.ToolMissing, ReplicaErrorCategory.NotInstalled,
                $"On VM host '{Host.Name}', Test-QuorumDisk needs the Python 3 module 'nbd' for {Python[0]} (Debian package python3-libnbd): {run.StandardError.Trim()}", Host.Name, "python3-libnbd");
        }

        if (run.ExitCode != 0 || result is null)
        {
            throw new QuorumException(QuorumErrorIds.CompareFailed, ReplicaErrorCategory.ReadError,
                $"On VM host '{Host.Name}', comparing the replicas of '{disk.Drive}' failed (exit code {run.ExitCode}): {run.StandardError.Trim()}", Host.Name, disk.Drive);
        }

        return result;
    }

    private QuorumTestResult BuildTestResult(QuorumDefinition disk, IReadOnlyList<QuorumReplicaSpec> replicas, QuorumCompareResult raw)
    {
        var comparisons = replicas.Select((r, i) => new QuorumComparison(Vm.Target)
        {
            Drive = disk.Drive,
            QuorumNode = disk.NodeName,
            NodeName = r.NodeName,
            Location = r.Location.Text,
            InMajority = raw.Replicas[i].FirstDifference is null,
            FirstDifference = raw.Replicas[i].FirstDifference,
            DifferingBytes = raw.Replicas[i].DifferingBytes,
            DifferingRegions = raw.Replicas[i].DifferingRegions,
            NoMajorityAt = raw.NoMajorityAt,
            Size = raw.Size,
            ComparedBytes = raw.ComparedBytes,
        }).ToArray();

        QuorumException? noMajority = null;
        if (raw.NoMajorityAt is { } at)
        {
            string Name(int i) => $"{replicas[i].NodeName} ({replicas[i].Location.Text})";
            var groups = raw.NoMajorityGroups.Select(g => g.Count == 1 ? Name(g[0]) + " alone" : string.Join(" and ", g.Select(Name)) + " agree").ToArray();
            noMajority = new QuorumException(QuorumErrorIds.NoMajority, ReplicaErrorCategory.InvalidData,
                $"Quorum disk '{disk.Drive}' of {Vm.DisplayName}: at offset {at} no {disk.VoteThreshold} of its {replicas.Count} replicas agree ({string.Join("; ", groups)}). " +
                $"The guest's reads of that range fail (QUORUM_FAILURE); {raw.NoMajorityBytes} bytes in {raw.NoMajorityRegions} range(s) are affected.", Host.Name, disk.Drive)
            {
                RecommendedAction = "Repair-QuorumDisk cannot choose a version where there is no majority: restore the affected range from a backup, or repair the replicas that disagree elsewhere first.",
            };
        }

        if (raw.Sizes.Distinct().Count() > 1)
        {
            OperationContext.Reporter.Warning($"The replicas of '{disk.Drive}' differ in size ({string.Join(", ", raw.Sizes)} bytes); the first {raw.Size} bytes were compared.");
        }

        return new QuorumTestResult { Disk = disk, Replicas = comparisons, Raw = raw, NoMajority = noMajority };
    }
}
