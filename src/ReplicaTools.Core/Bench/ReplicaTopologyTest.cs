using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Bench;

public enum TopologyCheckStatus
{
    Pass,
    Warn,
    Fail,
}

/// <summary>One check of <see cref="ReplicaTopologyTester"/>: what was checked, on which host, the verdict and why.</summary>
public sealed class TopologyCheck
{
    public TopologyCheck(string name, string? hostName, TopologyCheckStatus status, string reason, object? value = null)
    {
        Name = name;
        HostName = hostName;
        Status = status;
        Reason = reason;
        Value = value;
    }

    /// <summary>Reachable, Tools, DrbdKernelModule, BackingDisk, BackingDiskSize, RoundTrip, SequentialWrite, RandomWrite4K, ProtocolCWriteLatency, InitialSync.</summary>
    public string Name { get; }

    /// <summary>The host checked; for a direction "a -> b"; null for checks of the pair.</summary>
    public string? HostName { get; }

    public TopologyCheckStatus Status { get; }

    public string Reason { get; }

    /// <summary>The measured or estimated figure, if any (ms, MB/s, µs, a TimeSpan, bytes).</summary>
    public object? Value { get; }

    public override string ToString() => $"{Status,-4} {Name} {(HostName is null ? string.Empty : $"[{HostName}] ")}{Reason}";
}

/// <summary>A host of the pre-flight: where commands run, and for storage hosts the backing disk and replication address.</summary>
public sealed record TopologyTestHost(string Name, IReplicaHost Host, string? ReplicationAddress = null, string? BackingDisk = null);

/// <summary>What <see cref="ReplicaTopologyTester"/> checks.</summary>
public sealed class ReplicaTopologyTestRequest
{
    public const double DefaultResyncRateMBps = 100;

    /// <summary>The two storage hosts of the DRBD pair (seed 001's mirror-a and mirror-b).</summary>
    public required IReadOnlyList<TopologyTestHost> StorageHosts { get; init; }

    /// <summary>KVM hosts that will use the pair's exports (optional).</summary>
    public IReadOnlyList<TopologyTestHost> KvmHosts { get; init; } = Array.Empty<TopologyTestHost>();

    /// <summary>DRBD's resync-rate for the initial sync estimate, in MB/s (seed 001: resync-rate 100M).</summary>
    public double ResyncRateMBps { get; init; } = DefaultResyncRateMBps;

    /// <summary>Seconds of each disk write measurement.</summary>
    public int DurationSeconds { get; init; } = 5;

    /// <summary>Write test data to backing disks that hold data.</summary>
    public bool Force { get; init; }

    /// <summary>Skip the disk write measurements (only reachability, tools, disks, RTT).</summary>
    public bool SkipDiskTest { get; init; }

    /// <summary>Asked before writing test data to a backing disk (host name, description); false skips it (ShouldProcess/-WhatIf).</summary>
    public Func<string, string, bool>? ConfirmWrite { get; init; }

    /// <summary>RTT above this warns: protocol C waits for it on every write. In milliseconds.</summary>
    public double RoundTripWarnMs { get; init; } = 2;

    /// <summary>An estimated protocol C write latency above this warns. In microseconds.</summary>
    public double WriteLatencyWarnUs { get; init; } = 5000;
}

/// <summary>The outcome of a pre-flight: the worst status, every check, and the estimates.</summary>
public sealed class ReplicaTopologyTestResult
{
    public TopologyCheckStatus Status => Checks.Count == 0 ? TopologyCheckStatus.Pass : Checks.Max(c => c.Status);

    public required IReadOnlyList<string> StorageHosts { get; init; }

    public IReadOnlyList<string> KvmHosts { get; init; } = Array.Empty<string>();

    public required IReadOnlyList<TopologyCheck> Checks { get; init; }

    /// <summary>Mean round-trip time over the replication addresses (the worse direction), in milliseconds.</summary>
    public double? RoundTripMs { get; init; }

    /// <summary>Size of the smaller backing disk (what DRBD replicates), in bytes.</summary>
    public long? BackingDiskSize { get; init; }

    /// <summary>Estimated protocol C write latency for 4 KiB writes: RTT plus the slower disk's mean 4k random write latency, in µs.</summary>
    public double? EstimatedWriteLatencyUs { get; init; }

    /// <summary>Estimated initial full sync: backing disk size at the resync rate (or the slower disk's sequential write rate if lower).</summary>
    public TimeSpan? EstimatedInitialSync { get; init; }

    public double ResyncRateMBps { get; init; }

    /// <summary>The disk write measurements behind the estimates.</summary>
    public IReadOnlyList<ThroughputSample> DiskSamples { get; init; } = Array.Empty<ThroughputSample>();

    public DateTimeOffset Timestamp { get; init; }

    public IEnumerable<TopologyCheck> Failed => Checks.Where(c => c.Status == TopologyCheckStatus.Fail);

    public override string ToString() => $"{Status}: {string.Join(" / ", StorageHosts)} ({Checks.Count} checks, {Checks.Count(c => c.Status == TopologyCheckStatus.Warn)} warnings, {Failed.Count()} failures)";
}

/// <summary>
/// Pre-flight for a replication pair (what Windows' Test-SRTopology does for Storage Replica): reachability, tools and
/// versions, backing disks, RTT over the replication addresses (ping, iputils), disk write throughput and latency
/// (fio, through <see cref="ThroughputMeter"/>), and estimates of the protocol C write latency and the initial sync time.
/// </summary>
public static partial class ReplicaTopologyTester
{
    /// <summary>Tools a storage host of a DRBD pair needs; fio and ping for this test itself.</summary>
    public static readonly IReadOnlyList<string> StorageTools = new[] { "drbdadm", "fio", "ping", "nbd-server", "tgtd" };

    public static readonly IReadOnlyList<string> KvmTools = new[] { "qemu-img", "qemu-system-x86_64", "virsh" };

    /// <summary>
    /// sh script: $@ tool names. Prints TOOL=VERSION (or TOOL=present, or TOOL= when missing); for drbdadm also
    /// drbd-kernel=VERSION from drbdadm --version (0 when no module is loaded or installed); for qemu-img, qemu-drivers= its block drivers.
    /// </summary>
    public const string ToolsScript = """
        for t; do
          if ! command -v "$t" >/dev/null 2>&1; then echo "$t="; continue; fi
          v=
          case $t in
            drbdadm) out=$(drbdadm --version 2>/dev/null); v=$(printf '%s\n' "$out" | sed -n 's/^DRBDADM_VERSION=//p')
                     echo "drbd-kernel=$(printf '%s\n' "$out" | sed -n 's/^DRBD_KERNEL_VERSION=//p')" ;;
            fio) v=$(fio --version 2>/dev/null | sed 's/^fio-//') ;;
            nbd-server) v=$(nbd-server -V 2>&1 | sed -n 's/.*version //p' | head -n 1) ;;
            tgtd) v=$(tgtadm --version 2>/dev/null | head -n 1) ;;
            ping) v=$(ping -V 2>/dev/null | sed -n 's/.*iputils[- ]//p' | head -n 1) ;;
            qemu-img) v=$(qemu-img --version 2>/dev/null | sed -n 's/.*version \([0-9.]*\).*/\1/p' | head -n 1)
                      echo "qemu-drivers=$(qemu-img --help 2>/dev/null | sed -n 's/^Supported formats: //p')" ;;
            qemu-system-x86_64) v=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9.]*\).*/\1/p' | head -n 1) ;;
            virsh) v=$(virsh --version 2>/dev/null) ;;
          esac
          echo "$t=${v:-present}"
        done
        """;

    /// <summary>Runs every check; never throws for a host problem (that is a Fail check), only for cancellation.</summary>
    public static async Task<ReplicaTopologyTestResult> RunAsync(ReplicaTopologyTestRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.StorageHosts.Count != 2)
        {
            throw new ReplicaException("TopologyTestInvalidArgument", ReplicaErrorCategory.InvalidArgument,
                $"-StorageHost needs exactly two hosts (the pair that replicates), but {request.StorageHosts.Count} were given.", null, request.StorageHosts.Count);
        }

        if (request.ResyncRateMBps is <= 0 or > 100000)
        {
            throw new ReplicaException("TopologyTestInvalidArgument", ReplicaErrorCategory.InvalidArgument,
                $"-ResyncRateMBps {request.ResyncRateMBps} is out of range (greater than 0, at most 100000).", null, request.ResyncRateMBps);
        }

        var checks = new List<TopologyCheck>();
        var all = request.StorageHosts.Select(h => (Host: h, Storage: true)).Concat(request.KvmHosts.Select(h => (Host: h, Storage: false))).ToArray();
        var activity = "Testing replica topology " + string.Join(" / ", request.StorageHosts.Select(h => h.Name));
        var step = 0;
        var totalSteps = all.Length + 3 + (request.SkipDiskTest ? 0 : 2);
        void Progress(string status) => OperationContext.Reporter.Progress(new OperationProgress(activity, status, Math.Min(99, step++ * 100 / totalSteps), ActivityId: 2));

        var reachable = new HashSet<string>(StringComparer.Ordinal);
        var tools = new Dictionary<string, IReadOnlyDictionary<string, string>>(StringComparer.Ordinal);
        foreach (var (host, storage) in all)
        {
            Progress($"{host.Name}: reachability and tools");
            var facts = await CheckHostAsync(host, storage, checks, cancellationToken).ConfigureAwait(false);
            if (facts is not null)
            {
                reachable.Add(host.Name);
                tools[host.Name] = facts;
            }
        }

        Progress("backing disks");
        // By position, not name: both storage hosts may be the same machine in a test.
        var sizes = new long?[2];
        for (var i = 0; i < 2; i++)
        {
            if (reachable.Contains(request.StorageHosts[i].Name))
            {
                sizes[i] = await CheckBackingDiskAsync(request.StorageHosts[i], checks, cancellationToken).ConfigureAwait(false);
            }
        }

        long? pairSize = null;
        var bothDisks = sizes[0] is not null && sizes[1] is not null;
        if (bothDisks)
        {
            var (a, b) = (request.StorageHosts[0], request.StorageHosts[1]);
            var (sizeA, sizeB) = (sizes[0]!.Value, sizes[1]!.Value);
            pairSize = Math.Min(sizeA, sizeB);
            checks.Add(sizeA == sizeB
                ? new TopologyCheck("BackingDiskSize", null, TopologyCheckStatus.Pass, $"Both backing disks are {Text.ByteSize.Format(pairSize.Value)}.", pairSize)
                : new TopologyCheck("BackingDiskSize", null, TopologyCheckStatus.Warn,
                    $"The backing disks differ: {a.Name} {Text.ByteSize.Format(sizeA)}, {b.Name} {Text.ByteSize.Format(sizeB)}. DRBD replicates only the smaller size ({Text.ByteSize.Format(pairSize.Value)}); the rest of the larger disk is unused.",
                    pairSize));
        }

        Progress("round-trip time");
        double? rtt = null;
        var (first, second) = (request.StorageHosts[0], request.StorageHosts[1]);
        foreach (var (from, to) in new[] { (first, second), (second, first) })
        {
            if (!reachable.Contains(from.Name) || !reachable.Contains(to.Name))
            {
                continue;
            }

            var measured = await CheckRoundTripAsync(from, to, tools[from.Name], request, checks, cancellationToken).ConfigureAwait(false);
            if (measured is { } ms)
            {
                rtt = Math.Max(rtt ?? 0, ms);
            }
        }

        var samples = new List<ThroughputSample>();
        if (!request.SkipDiskTest)
        {
            foreach (var host in request.StorageHosts.Where((h, i) => reachable.Contains(h.Name) && sizes[i] is not null))
            {
                Progress($"{host.Name}: disk write throughput");
                samples.AddRange(await CheckDiskWritesAsync(host, tools[host.Name], request, checks, cancellationToken).ConfigureAwait(false));
            }
        }

        Progress("estimates");
        var (latency, sync) = Estimate(request, checks, samples, rtt, pairSize, bothDisks);
        OperationContext.Reporter.Progress(new OperationProgress(activity, "Done", 100, ActivityId: 2, Completed: true));
        return new ReplicaTopologyTestResult
        {
            StorageHosts = request.StorageHosts.Select(h => h.Name).ToArray(),
            KvmHosts = request.KvmHosts.Select(h => h.Name).ToArray(),
            Checks = checks,
            RoundTripMs = rtt,
            BackingDiskSize = pairSize,
            EstimatedWriteLatencyUs = latency,
            EstimatedInitialSync = sync,
            ResyncRateMBps = request.ResyncRateMBps,
            DiskSamples = samples,
            Timestamp = DateTimeOffset.Now,
        };
    }

    /// <summary>Parses <see cref="ToolsScript"/>'s output into tool → version ("" when missing).</summary>
    public static IReadOnlyDictionary<string, string> ParseTools(string output)
    {
        var tools = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = line.IndexOf('=');
            if (eq > 0)
            {
                tools[line[..eq].Trim()] = line[(eq + 1)..].Trim();
            }
        }

        return tools;
    }

    /// <summary>Parses ping's summary: (mean RTT in ms or null, packet loss in percent).</summary>
    public static (double? AverageMs, double LossPercent) ParsePing(string output)
    {
        var loss = LossPattern().Match(output);
        var rtt = RttPattern().Match(output);
        return (rtt.Success ? double.Parse(rtt.Groups["avg"].Value, CultureInfo.InvariantCulture) : null,
            loss.Success ? double.Parse(loss.Groups["loss"].Value, CultureInfo.InvariantCulture) : 100);
    }

    /// <summary>The pre-flight as a self-contained HTML page.</summary>
    public static string ToHtml(ReplicaTopologyTestResult result)
    {
        var body = new StringBuilder();
        body.Append("<h2 class=\"").Append(result.Status).Append("\">Overall: ").Append(result.Status).Append("</h2><table><tr><th>Status</th><th>Check</th><th>Host</th><th>Reason</th></tr>");
        foreach (var check in result.Checks)
        {
            body.Append("<tr class=\"").Append(check.Status).Append("\"><td>").Append(check.Status).Append("</td><td>").Append(HtmlReport.Encode(check.Name))
                .Append("</td><td>").Append(HtmlReport.Encode(check.HostName)).Append("</td><td>").Append(HtmlReport.Encode(check.Reason)).Append("</td></tr>");
        }

        body.Append("</table><h2>Estimates</h2><table>")
            .Append("<tr><th>Round-trip time (ms)</th><td class=\"n\">").Append(HtmlReport.Number(result.RoundTripMs, "0.000")).Append("</td></tr>")
            .Append("<tr><th>Protocol C 4 KiB write latency (µs)</th><td class=\"n\">").Append(HtmlReport.Number(result.EstimatedWriteLatencyUs, "0")).Append("</td></tr>")
            .Append("<tr><th>Initial sync at ").Append(HtmlReport.Number(result.ResyncRateMBps, "0.#")).Append(" MB/s</th><td class=\"n\">")
            .Append(result.EstimatedInitialSync is { } sync ? HtmlReport.Encode(FormatDuration(sync)) : string.Empty).Append("</td></tr></table>");
        if (result.DiskSamples.Count > 0)
        {
            body.Append("<h2>Backing disk writes</h2>");
            foreach (var blockSize in result.DiskSamples.Select(s => s.BlockSize).Distinct().Order())
            {
                body.Append("<h3>").Append(BlockSizes.Label(blockSize)).Append("</h3>").Append(HtmlReport.BarChart(ThroughputTable.Build(result.DiskSamples.Where(s => s.BlockSize == blockSize)), blockSize));
            }
        }

        return HtmlReport.Page($"Replica topology: {string.Join(" / ", result.StorageHosts)}",
            $"Tested {result.Timestamp:yyyy-MM-dd HH:mm:ss zzz}; storage hosts {string.Join(", ", result.StorageHosts)}; KVM hosts {(result.KvmHosts.Count == 0 ? "none" : string.Join(", ", result.KvmHosts))}.",
            body.ToString());
    }

    /// <summary>"3 h 25 min", "12 min 5 s", "40 s".</summary>
    public static string FormatDuration(TimeSpan time) => time.TotalHours >= 1
        ? $"{(int)time.TotalHours} h {time.Minutes} min"
        : time.TotalMinutes >= 1 ? $"{(int)time.TotalMinutes} min {time.Seconds} s" : $"{Math.Ceiling(time.TotalSeconds)} s";

    private static async Task<IReadOnlyDictionary<string, string>?> CheckHostAsync(TopologyTestHost host, bool storage, List<TopologyCheck> checks, CancellationToken cancellationToken)
    {
        CommandResult uname;
        try
        {
            uname = await host.Host.RunAsync(new CommandSpec("uname", "-nsr") { Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
        }
        catch (ReplicaException ex) when (ex is not CommandCancelledException)
        {
            checks.Add(new TopologyCheck("Reachable", host.Name, TopologyCheckStatus.Fail, ex.Message));
            return null;
        }

        checks.Add(new TopologyCheck("Reachable", host.Name, TopologyCheckStatus.Pass, $"{uname.StandardOutput.Trim()} ({uname.Duration.TotalMilliseconds:0} ms for a command)."));
        var wanted = storage ? StorageTools : KvmTools;
        var arguments = new List<string> { "sh", "-c", ToolsScript, "sh" };
        arguments.AddRange(wanted);
        var tools = ParseTools((await host.Host.RunAsync(new CommandSpec(arguments) { Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false)).StandardOutput);
        string Describe(string tool) => tools.TryGetValue(tool, out var v) && v.Length > 0 ? $"{tool} {v}" : $"{tool} MISSING ({TargetProbe.PackageOf(tool)})";
        var missing = wanted.Where(t => !tools.TryGetValue(t, out var v) || v.Length == 0).ToList();
        var versions = string.Join(", ", wanted.Select(Describe));
        if (storage)
        {
            var required = missing.Where(t => t is "drbdadm" or "fio").ToList();
            var noExporter = missing.Contains("nbd-server") && missing.Contains("tgtd");
            checks.Add(required.Count > 0
                ? new TopologyCheck("Tools", host.Name, TopologyCheckStatus.Fail, $"{versions}. {string.Join(" and ", required)} {(required.Count > 1 ? "are" : "is")} required.", tools)
                : noExporter ? new TopologyCheck("Tools", host.Name, TopologyCheckStatus.Fail, $"{versions}. Install nbd-server or tgt to export the replicated disk.", tools)
                : missing.Contains("ping") ? new TopologyCheck("Tools", host.Name, TopologyCheckStatus.Warn, $"{versions}. Without ping the round-trip time cannot be measured.", tools)
                : new TopologyCheck("Tools", host.Name, TopologyCheckStatus.Pass, versions + ".", tools));
            if (!missing.Contains("drbdadm"))
            {
                var kernel = tools.TryGetValue("drbd-kernel", out var k) ? k : string.Empty;
                checks.Add(kernel is "" or "0"
                    ? new TopologyCheck("DrbdKernelModule", host.Name, TopologyCheckStatus.Fail,
                        "No DRBD kernel module is loaded or installed (drbdadm --version reports kernel version 0): install it (Ubuntu: linux-modules-extra-$(uname -r); elsewhere drbd-dkms) and 'modprobe drbd'.")
                    : new TopologyCheck("DrbdKernelModule", host.Name, TopologyCheckStatus.Pass, $"DRBD kernel module {kernel}.", kernel));
            }
        }
        else
        {
            var required = missing.Where(t => t is "qemu-img" or "qemu-system-x86_64").ToList();
            var drivers = tools.TryGetValue("qemu-drivers", out var d) ? d.Split(' ', StringSplitOptions.RemoveEmptyEntries) : Array.Empty<string>();
            var noDrivers = new[] { "nbd", "iscsi" }.Where(x => !drivers.Contains(x)).ToList();
            checks.Add(required.Count > 0
                ? new TopologyCheck("Tools", host.Name, TopologyCheckStatus.Fail, $"{versions}. {string.Join(" and ", required)} {(required.Count > 1 ? "are" : "is")} required.", tools)
                : noDrivers.Count > 0 && !missing.Contains("qemu-img")
                    ? new TopologyCheck("Tools", host.Name, TopologyCheckStatus.Warn, $"{versions}. QEMU lacks the {string.Join(" and ", noDrivers)} block driver{(noDrivers.Count > 1 ? "s" : string.Empty)} (install qemu-block-extra for iscsi).", tools)
                    : missing.Count > 0 ? new TopologyCheck("Tools", host.Name, TopologyCheckStatus.Warn, versions + ".", tools)
                    : new TopologyCheck("Tools", host.Name, TopologyCheckStatus.Pass, versions + "; QEMU block drivers nbd and iscsi present.", tools));
        }

        return tools;
    }

    private static async Task<long?> CheckBackingDiskAsync(TopologyTestHost host, List<TopologyCheck> checks, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(host.BackingDisk))
        {
            checks.Add(new TopologyCheck("BackingDisk", host.Name, TopologyCheckStatus.Warn, "Not checked: no backing disk given (-BackingDisk)."));
            return null;
        }

        var probe = await host.Host.RunAsync(new CommandSpec("sh", "-c", TargetProbe.PathScript, "sh", host.BackingDisk) { Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
        var facts = TargetProbe.ParsePathFacts(probe.StandardOutput);
        switch (facts.Kind)
        {
            case "device":
            case "file" when facts.Size > 0:
                checks.Add(new TopologyCheck("BackingDisk", host.Name, TopologyCheckStatus.Pass,
                    $"{host.BackingDisk} is a {(facts.Kind == "device" ? "block device" : "file")} of {Text.ByteSize.Format(facts.Size)}{(facts.ReadOnly ? ", but READ-ONLY" : string.Empty)}.", facts.Size));
                return facts.Size;
            default:
                checks.Add(new TopologyCheck("BackingDisk", host.Name, TopologyCheckStatus.Fail,
                    facts.Kind == "missing" ? $"{host.BackingDisk} does not exist." : $"{host.BackingDisk} is not a block device (or a non-empty file)."));
                return null;
        }
    }

    private static async Task<double?> CheckRoundTripAsync(TopologyTestHost from, TopologyTestHost to, IReadOnlyDictionary<string, string> tools, ReplicaTopologyTestRequest request, List<TopologyCheck> checks, CancellationToken cancellationToken)
    {
        var direction = $"{from.Name} -> {to.Name}";
        var address = to.ReplicationAddress;
        if (string.IsNullOrEmpty(address))
        {
            checks.Add(new TopologyCheck("RoundTrip", direction, TopologyCheckStatus.Warn, "Not measured: no replication address for " + to.Name + " (-ReplicationAddress)."));
            return null;
        }

        if (!tools.TryGetValue("ping", out var ping) || ping.Length == 0)
        {
            checks.Add(new TopologyCheck("RoundTrip", direction, TopologyCheckStatus.Warn, $"Not measured: ping is not installed on {from.Name} (iputils-ping)."));
            return null;
        }

        var result = await from.Host.RunAsync(new CommandSpec("ping", "-c", "10", "-i", "0.2", "-W", "2", "-n", "-q", "--", address)
        {
            Timeout = TimeSpan.FromSeconds(60),
            ThrowOnFailure = false,
        }, cancellationToken).ConfigureAwait(false);
        var (average, loss) = ParsePing(result.StandardOutput);
        if (average is not { } ms)
        {
            checks.Add(new TopologyCheck("RoundTrip", direction, TopologyCheckStatus.Fail,
                $"{to.Name}'s replication address {address} does not answer from {from.Name} ({loss:0}% loss{(result.StandardError.Length > 0 ? "; " + result.StandardError.Trim() : string.Empty)})."));
            return null;
        }

        var text = string.Create(CultureInfo.InvariantCulture, $"{ms:0.000} ms mean to {address} ({loss:0}% loss).");
        checks.Add(loss > 0
            ? new TopologyCheck("RoundTrip", direction, TopologyCheckStatus.Warn, text + " Lost packets on the replication link stall protocol C writes.", ms)
            : ms > request.RoundTripWarnMs
                ? new TopologyCheck("RoundTrip", direction, TopologyCheckStatus.Warn, text + string.Create(CultureInfo.InvariantCulture, $" Above {request.RoundTripWarnMs} ms: every protocol C write waits for it; consider protocol A or B across sites."), ms)
                : new TopologyCheck("RoundTrip", direction, TopologyCheckStatus.Pass, text, ms));
        return ms;
    }

    private static async Task<IReadOnlyList<ThroughputSample>> CheckDiskWritesAsync(TopologyTestHost host, IReadOnlyDictionary<string, string> tools, ReplicaTopologyTestRequest request, List<TopologyCheck> checks, CancellationToken cancellationToken)
    {
        if (!tools.TryGetValue("fio", out var fio) || fio.Length == 0)
        {
            checks.Add(new TopologyCheck("DiskWrites", host.Name, TopologyCheckStatus.Warn, "Not measured: fio is not installed."));
            return Array.Empty<ThroughputSample>();
        }

        var meter = new ThroughputMeter(host.Host);
        var spec = new ThroughputTargetSpec(host.BackingDisk!);
        var runs = new[]
        {
            (Name: "SequentialWrite", Request: new ThroughputRequest { BlockSizes = new long[] { 1 << 20 }, Operations = new[] { ThroughputOperation.Write }, DurationSeconds = request.DurationSeconds, Force = request.Force }),
            (Name: "RandomWrite4K", Request: new ThroughputRequest { BlockSizes = new long[] { 4096 }, Operations = new[] { ThroughputOperation.Write }, Pattern = AccessPattern.Random, DurationSeconds = request.DurationSeconds, Force = request.Force }),
        };
        var samples = new List<ThroughputSample>();
        var written = false;
        foreach (var (name, run) in runs)
        {
            ThroughputPlan plan;
            try
            {
                // Once this test has written its own data there, the next run may overwrite it.
                plan = await meter.PlanAsync(spec, written ? WithForce(run) : run, cancellationToken).ConfigureAwait(false);
            }
            catch (ReplicaException ex) when (ex.ErrorId is "TargetHoldsData" or "TargetReadOnly")
            {
                checks.Add(new TopologyCheck(name, host.Name, TopologyCheckStatus.Warn, $"Not measured: {ex.Message}"));
                continue;
            }
            catch (ReplicaException ex)
            {
                checks.Add(new TopologyCheck(name, host.Name, TopologyCheckStatus.Fail, $"Not measured: {ex.Message}"));
                continue;
            }

            if (request.ConfirmWrite is { } confirm && !confirm(host.Name, $"Write test data to {host.BackingDisk} for {request.DurationSeconds} s:{Environment.NewLine}{plan.Describe()}"))
            {
                checks.Add(new TopologyCheck(name, host.Name, TopologyCheckStatus.Warn, "Not measured: writing test data was not confirmed."));
                continue;
            }

            try
            {
                var sample = (await meter.RunAsync(plan, cancellationToken).ConfigureAwait(false)).Single();
                written = true;
                samples.Add(sample);
                checks.Add(new TopologyCheck(name, host.Name, TopologyCheckStatus.Pass, string.Create(CultureInfo.InvariantCulture,
                    $"{sample.MBps:0.0} MB/s, {sample.Iops:0} IOPS, mean latency {sample.LatencyAvgUs:0} µs, p99 {sample.LatencyP99Us:0} µs ({BlockSizes.Label(sample.BlockSize)} {sample.Pattern.ToString().ToLowerInvariant()}, queue depth 1{(sample.DirectIo ? ", direct I/O" : ", through the page cache")})."), sample.MBps));
            }
            catch (ReplicaException ex) when (ex is not CommandCancelledException)
            {
                checks.Add(new TopologyCheck(name, host.Name, TopologyCheckStatus.Fail, $"Measurement failed: {ex.Message}"));
            }
        }

        return samples;
    }

    private static ThroughputRequest WithForce(ThroughputRequest run) => new()
    {
        BlockSizes = run.BlockSizes,
        Operations = run.Operations,
        Pattern = run.Pattern,
        DurationSeconds = run.DurationSeconds,
        Force = true,
    };

    private static (double? Latency, TimeSpan? Sync) Estimate(ReplicaTopologyTestRequest request, List<TopologyCheck> checks, IReadOnlyList<ThroughputSample> samples, double? rtt, long? size, bool bothDisks)
    {
        double? latency = null;
        var random = samples.Where(s => s.Pattern == AccessPattern.Random && s.LatencyAvgUs is not null).ToList();
        if (rtt is { } ms && random.Count == 2)
        {
            var disk = random.Max(s => s.LatencyAvgUs!.Value);
            latency = disk + ms * 1000;
            var text = string.Create(CultureInfo.InvariantCulture, $"About {latency:0} µs per 4 KiB write: the slower disk's mean {disk:0} µs plus the {ms * 1000:0} µs round trip (a protocol C write completes when the peer's disk has it).");
            checks.Add(latency > request.WriteLatencyWarnUs
                ? new TopologyCheck("ProtocolCWriteLatency", null, TopologyCheckStatus.Warn, text + string.Create(CultureInfo.InvariantCulture, $" Above {request.WriteLatencyWarnUs:0} µs: latency-sensitive guests will notice."), latency)
                : new TopologyCheck("ProtocolCWriteLatency", null, TopologyCheckStatus.Pass, text, latency));
        }
        else
        {
            checks.Add(new TopologyCheck("ProtocolCWriteLatency", null, TopologyCheckStatus.Warn, "Not estimated: it needs the round-trip time and both disks' 4k random write latency."));
        }

        TimeSpan? sync = null;
        if (size is { } bytes && bothDisks)
        {
            var sequential = samples.Where(s => s.Pattern == AccessPattern.Sequential).ToList();
            var slowest = sequential.Count == 2 ? sequential.Min(s => s.MBps) : (double?)null;
            var rate = slowest is { } disk && disk < request.ResyncRateMBps ? disk : request.ResyncRateMBps;
            sync = TimeSpan.FromSeconds(bytes / (rate * 1e6));
            var text = string.Create(CultureInfo.InvariantCulture, $"About {FormatDuration(sync.Value)} for {Text.ByteSize.Format(bytes)} at {rate:0.#} MB/s.");
            checks.Add(slowest is { } limit && limit < request.ResyncRateMBps
                ? new TopologyCheck("InitialSync", null, TopologyCheckStatus.Warn, text + string.Create(CultureInfo.InvariantCulture, $" The slower disk writes only {limit:0.#} MB/s sequentially, less than -ResyncRateMBps {request.ResyncRateMBps:0.#}."), sync)
                : new TopologyCheck("InitialSync", null, TopologyCheckStatus.Pass, text + (slowest is null ? " (Disk speed not measured.)" : string.Empty), sync));
        }
        else
        {
            checks.Add(new TopologyCheck("InitialSync", null, TopologyCheckStatus.Warn, "Not estimated: both backing disks must be present."));
        }

        return (latency, sync);
    }

    [GeneratedRegex(@"(?<loss>[0-9.]+)% packet loss", RegexOptions.CultureInvariant)]
    private static partial Regex LossPattern();

    [GeneratedRegex(@"= [0-9.]+/(?<avg>[0-9.]+)/[0-9.]+/[0-9.]+ ms", RegexOptions.CultureInvariant)]
    private static partial Regex RttPattern();
}
