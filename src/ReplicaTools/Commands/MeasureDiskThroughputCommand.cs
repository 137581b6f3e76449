using System.Management.Automation;
using ReplicaTools.Core.Bench;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

/// <summary>
/// Measures MB/s, IOPS and latency of files, block devices, NBD exports and iSCSI LUNs from one host, one sample per
/// target, block size and operation; -ReportPath writes the HTML report of the whole run.
/// </summary>
[Cmdlet(VerbsDiagnostic.Measure, "DiskThroughput", SupportsShouldProcess = true)]
[OutputType(typeof(ThroughputSample))]
public sealed class MeasureDiskThroughputCommand : HostCmdlet
{
    private readonly List<ThroughputSample> measured = new();

    /// <summary>Paths or URLs. From the pipeline: an object's Uri, Device or Path property (the first that is set).</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Uri", "Device", "Path", "FullName")]
    [AllowNull]
    [AllowEmptyString]
    [AllowEmptyCollection]
    public string[]? Target { get; set; }

    /// <summary>A piped string (a path or URL) or object (NbdExport, DiskImage, IscsiTarget, ReplicatedDisk ...).</summary>
    [Parameter(ValueFromPipeline = true)]
    public PSObject? InputObject { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public long[] BlockSize { get; set; } = ThroughputRequest.DefaultBlockSizes.ToArray();

    [Parameter]
    [ValidateNotNullOrEmpty]
    public ThroughputOperation[] Operation { get; set; } = { ThroughputOperation.Read, ThroughputOperation.Write };

    [Parameter]
    public AccessPattern Pattern { get; set; } = AccessPattern.Sequential;

    [Parameter]
    [ValidateRange(1, 4096)]
    public int QueueDepth { get; set; } = 1;

    [Parameter]
    [ValidateRange(1, 86400)]
    public int DurationSeconds { get; set; } = ThroughputRequest.DefaultDurationSeconds;

    [Parameter]
    public ThroughputEngine Engine { get; set; } = ThroughputEngine.Auto;

    [Parameter]
    [ValidateSet("libaio", "io_uring")]
    public string IoEngine { get; set; } = "libaio";

    [Parameter]
    public SwitchParameter Buffered { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    [ValidateRange(1L << 20, long.MaxValue)]
    public long ScratchSize { get; set; } = ThroughputRequest.DefaultScratchSize;

    [Parameter]
    public SwitchParameter KeepScratch { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? ReportPath { get; set; }

    private bool hostOnCommandLine;
    private ReplicaSession? commandLineSession;
    private string? commandLineHostName;

    protected override void BeginProcessing()
    {
        // Only command-line parameters are bound before the first record.
        hostOnCommandLine = MyInvocation.BoundParameters.ContainsKey(nameof(Session)) || MyInvocation.BoundParameters.ContainsKey(nameof(HostName));
        (commandLineSession, commandLineHostName) = (Session, HostName);
    }

    protected override void ProcessRecord()
    {
        // A piped export carries its own host (Session, HostName); -Session or -HostName on the command line choose the
        // load-generating host instead (a KVM host measuring a storage host's export), so the piped values yield.
        if (hostOnCommandLine)
        {
            (Session, HostName) = (commandLineSession, commandLineHostName);
        }

        var session = ResolveSession();
        var targets = TargetsOfThisRecord(session);
        if (targets.Count == 0)
        {
            ThrowTerminating(new ArgumentException(
                "Give -Target (a path or an nbd:// or iscsi:// URL) or pipe objects with a Uri, Device or Path property (New-NbdExport, Get-DiskImage ...).", nameof(Target)));
        }

        var request = new ThroughputRequest
        {
            BlockSizes = BlockSize,
            Operations = Operation,
            Pattern = Pattern,
            QueueDepth = QueueDepth,
            DurationSeconds = DurationSeconds,
            Engine = Engine,
            IoEngine = IoEngine,
            Buffered = Buffered,
            Force = Force,
            ScratchSize = ScratchSize,
            KeepScratch = KeepScratch,
        };
        var meter = new ThroughputMeter(session.Host);
        foreach (var spec in targets)
        {
            // Planning only reads (what the target is, whether it holds data), so -WhatIf can list the exact commands.
            var plan = TryRun(token => meter.PlanAsync(spec, request, token), spec.Location);
            if (plan is null)
            {
                continue;
            }

            var operations = plan.Writes ? (plan.Steps.Any(s => s.Operation == ThroughputOperation.Read) ? "reads and writes" : "writes") : "reads";
            var what = plan.Target.IsScratch ? $"Create a scratch file, measure {operations}{(plan.Cleanup.Count > 0 ? ", remove it" : string.Empty)}"
                : plan.Writes ? $"Measure {operations}, OVERWRITING its contents" : "Measure reads";
            if (!ShouldProcess($"{spec.Location} on {session.Host.Name}", $"{what} with these commands:{Environment.NewLine}{plan.Describe()}"))
            {
                continue;
            }

            foreach (var note in plan.Notes)
            {
                WriteWarning(note);
            }

            var samples = TryRun(token => meter.RunAsync(plan, token), spec.Location);
            if (samples is null)
            {
                continue;
            }

            measured.AddRange(samples);
            WriteObject(samples, enumerateCollection: true);
        }
    }

    protected override void EndProcessing()
    {
        if (ReportPath is null || measured.Count == 0)
        {
            return;
        }

        WriteReport(ReportPath, HtmlReport.Throughput(measured, "Disk throughput", DateTimeOffset.Now));
    }

    private List<ThroughputTargetSpec> TargetsOfThisRecord(ReplicaSession session)
    {
        var specs = new List<ThroughputTargetSpec>();
        var piped = InputObject?.BaseObject;
        if (piped is string text)
        {
            specs.Add(new ThroughputTargetSpec(Resolve(session, text)));
        }
        else if (piped is not null && piped is not ReplicaSession)
        {
            // Optional properties may be present but empty (an export without a URI yet): take the first one set.
            var location = new[] { "Uri", "Device", "Path", "FullName" }
                .Select(name => InputObject!.Properties[name]?.Value?.ToString())
                .FirstOrDefault(value => !string.IsNullOrEmpty(value));
            if (location is not null)
            {
                specs.Add(new ThroughputTargetSpec(Resolve(session, location))
                {
                    ReadOnly = InputObject!.Properties["ReadOnly"]?.Value is true,
                    Server = ServerLabel(InputObject.Properties["Server"]?.Value, piped),
                });
            }
        }

        if (specs.Count == 0)
        {
            specs.AddRange((Target ?? Array.Empty<string>()).Where(t => !string.IsNullOrEmpty(t)).Select(t => new ThroughputTargetSpec(Resolve(session, t))));
        }

        return specs;
    }

    private string Resolve(ReplicaSession session, string location) => StorageCmdletHelpers.ResolvePath(this, session, location);

    /// <summary>The server's program name for the table: qemu-nbd, nbd-server, tgt.</summary>
    private static string? ServerLabel(object? server, object source)
    {
        var name = server?.ToString();
        return name switch
        {
            "QemuNbd" => "qemu-nbd",
            "NbdServer" => "nbd-server",
            null or "" when source.GetType().Name.Contains("Iscsi", StringComparison.OrdinalIgnoreCase) => "tgt",
            null or "" => null,
            "Tgt" => "tgt",
            _ => name,
        };
    }
}
