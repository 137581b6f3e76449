using System.Management.Automation;
using ReplicaTools.Core.Bench;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Topology;

namespace ReplicaTools.Commands;

/// <summary>
/// Pre-flight for a replication pair: two storage hosts (and optional KVM hosts) as sessions, host names or topology
/// hosts; every check passes, warns or fails with a reason. Writing test data to the backing disks asks ShouldProcess.
/// </summary>
[Cmdlet(VerbsDiagnostic.Test, "ReplicaTopology", SupportsShouldProcess = true)]
[OutputType(typeof(ReplicaTopologyTestResult))]
public sealed class TestReplicaTopologyCommand : ReplicaCmdlet
{
    private readonly List<object> storageHosts = new();
    private readonly List<object> kvmHosts = new();

    /// <summary>The two storage hosts: sessions, host names or topology hosts (piped topology hosts with only the kvm role count as KVM hosts).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    [ValidateNotNullOrEmpty]
    public object[] StorageHost { get; set; } = Array.Empty<object>();

    [Parameter]
    [ValidateNotNull]
    public object[] KvmHost { get; set; } = Array.Empty<object>();

    /// <summary>The DRBD backing disk: one path for both hosts, or one per storage host in order.</summary>
    [Parameter]
    [ValidateCount(1, 2)]
    [ValidateNotNullOrEmpty]
    public string[]? BackingDisk { get; set; }

    /// <summary>The storage hosts' addresses on the replication network, in order; default their SSH addresses.</summary>
    [Parameter]
    [ValidateCount(2, 2)]
    [ValidateNotNullOrEmpty]
    public string[]? ReplicationAddress { get; set; }

    [Parameter]
    [ValidateRange(0.001, 100000)]
    public double ResyncRateMBps { get; set; } = ReplicaTopologyTestRequest.DefaultResyncRateMBps;

    [Parameter]
    [ValidateRange(1, 3600)]
    public int DurationSeconds { get; set; } = 5;

    [Parameter]
    public SwitchParameter SkipDiskTest { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? ReportPath { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var item in StorageHost)
        {
            var value = item is PSObject wrapped ? wrapped.BaseObject : item;
            var isKvmOnly = value is TopologyHost topologyHost && MyInvocation.ExpectingInput
                && topologyHost.Roles.Contains("kvm", StringComparer.OrdinalIgnoreCase) && !topologyHost.Roles.Contains("storage", StringComparer.OrdinalIgnoreCase);
            (isKvmOnly ? kvmHosts : storageHosts).Add(value);
        }
    }

    protected override void EndProcessing()
    {
        kvmHosts.AddRange(KvmHost.Select(k => k is PSObject wrapped ? wrapped.BaseObject : k));
        if (storageHosts.Count != 2)
        {
            ThrowTerminating(new ArgumentException($"-StorageHost needs exactly two storage hosts (the replicating pair), but got {storageHosts.Count}: {string.Join(", ", storageHosts)}.", nameof(StorageHost)));
        }

        var storage = storageHosts.Select((h, i) => ToTestHost(h, i)).ToArray();
        var kvm = kvmHosts.Select(h => ToTestHost(h, -1)).ToArray();

        // ShouldProcess must run on the pipeline thread: ask for every disk before the checks start.
        var confirmed = new HashSet<string>(StringComparer.Ordinal);
        if (!SkipDiskTest)
        {
            foreach (var host in storage.Where(h => h.BackingDisk is not null))
            {
                var preview = new ThroughputTarget { Location = host.BackingDisk!, Protocol = "Direct", DirectIo = true };
                var commands = new[] { (1L << 20, AccessPattern.Sequential), (4096L, AccessPattern.Random) }
                    .Select(c => $"[{host.Name}] {FioJob.Build(preview, new ThroughputRequest { Pattern = c.Item2 }, c.Item1, ThroughputOperation.Write, DurationSeconds).CommandLine}");
                var what = Force ? "Write test data (destroying what the disk holds)" : "Write test data if the disk holds no data";
                if (ShouldProcess($"{host.BackingDisk} on {host.Name}", $"{what} with:{Environment.NewLine}{string.Join(Environment.NewLine, commands)}"))
                {
                    confirmed.Add(host.Name);
                }
            }
        }

        var request = new ReplicaTopologyTestRequest
        {
            StorageHosts = storage,
            KvmHosts = kvm,
            ResyncRateMBps = ResyncRateMBps,
            DurationSeconds = DurationSeconds,
            Force = Force,
            SkipDiskTest = SkipDiskTest,
            ConfirmWrite = (host, _) => confirmed.Contains(host),
        };
        var result = TryRun(token => ReplicaTopologyTester.RunAsync(request, token));
        if (result is null)
        {
            return;
        }

        if (ReportPath is not null)
        {
            WriteReport(ReportPath, ReplicaTopologyTester.ToHtml(result));
        }

        WriteObject(result);
    }

    private TopologyTestHost ToTestHost(object value, int storageIndex)
    {
        ReplicaSession session;
        string? address;
        try
        {
            (session, address) = value switch
            {
                ReplicaSession s => (HostResolver.Resolve(s, null), s.IsLocal ? "127.0.0.1" : s.HostName),
                TopologyHost t => (t.Session, t.HostName),
                string name when !string.IsNullOrWhiteSpace(name) => (HostResolver.Resolve(null, name), name),
                _ => throw new ArgumentException($"'{value}' is not a host: give a session (New-ReplicaSession), a host name, or a topology host (Import-ReplicaTopology).", storageIndex >= 0 ? nameof(StorageHost) : nameof(KvmHost)),
            };
        }
        catch (Exception ex) when (IsReportable(ex))
        {
            ThrowTerminating(ex, value);
            throw;
        }

        if (storageIndex < 0)
        {
            return new TopologyTestHost(session.Name, session.Host);
        }

        var disk = BackingDisk is null ? null : BackingDisk.Length == 1 ? BackingDisk[0] : BackingDisk[storageIndex];
        return new TopologyTestHost(session.Name, session.Host, ReplicationAddress?[storageIndex] ?? address, disk);
    }
}
