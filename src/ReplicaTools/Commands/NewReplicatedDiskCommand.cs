using System.Globalization;
using System.Management.Automation;
using System.Security;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.New, "ReplicatedDisk", SupportsShouldProcess = true)]
[OutputType(typeof(ReplicatedDisk))]
public sealed class NewReplicatedDiskCommand : ReplicaCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Name { get; set; } = string.Empty;

    /// <summary>The storage host that becomes primary: a session, host name or topology host.</summary>
    [Parameter(Mandatory = true)]
    [ReplicaHost]
    [ValidateNotNull]
    public ReplicaSession PrimaryHost { get; set; } = null!;

    [Parameter(Mandatory = true)]
    [ReplicaHost]
    [ValidateNotNull]
    public ReplicaSession SecondaryHost { get; set; } = null!;

    /// <summary>The backing device: one path for both hosts, or the primary's and the secondary's.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateCount(1, 2)]
    [ValidateNotNullOrEmpty]
    public string[] Disk { get; set; } = Array.Empty<string>();

    /// <summary>/dev/drbdN (or N); default the lowest minor free on both hosts.</summary>
    [Parameter]
    [ValidatePattern(@"^(/dev/drbd)?\d{1,7}$")]
    public string? Device { get; set; }

    [Parameter]
    [ValidateRange(1, 65535)]
    public int Port { get; set; } = 7788;

    [Parameter]
    public DrbdProtocol Protocol { get; set; } = DrbdProtocol.C;

    [Parameter(Mandatory = true)]
    [AllowEmptyString]
    public SecureString SharedSecret { get; set; } = null!;

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string HmacAlgorithm { get; set; } = "sha256";

    [Parameter]
    [ValidateRange(1, 4000000)]
    public int? ResyncRateMBps { get; set; }

    /// <summary>The hosts' addresses on the replication network: the primary's and the secondary's.</summary>
    [Parameter]
    [ValidateCount(2, 2)]
    public string[]? ReplicationAddress { get; set; }

    [Parameter]
    [ValidateRange(0, 1000000)]
    public int WaitForConnectionSeconds { get; set; } = 15;

    [Parameter]
    [ValidateRange(0, 1000000)]
    public int DegradedWaitSeconds { get; set; } = 60;

    [Parameter]
    public ReplicatedDiskExport Export { get; set; } = ReplicatedDiskExport.None;

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? ExportName { get; set; }

    [Parameter]
    [ValidateRange(1, 65535)]
    public int NbdPort { get; set; } = ReplicatedDiskRequest.DefaultNbdPort;

    /// <summary>Where the NBD export listens: one address for both hosts' exports, or the primary's and the secondary's.</summary>
    [Parameter]
    [ValidateCount(1, 2)]
    public string[]? ExportAddress { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Iqn { get; set; }

    [Parameter]
    [ValidateRange(1, 255)]
    public int Lun { get; set; } = 1;

    [Parameter]
    public string[] InitiatorName { get; set; } = Array.Empty<string>();

    [Parameter]
    public string[] InitiatorAddress { get; set; } = Array.Empty<string>();

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? SourceImage { get; set; }

    [Parameter]
    public SwitchParameter UseExistingMetadata { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Name, nameof(Name)))
        {
            return;
        }

        var request = new ReplicatedDiskRequest
        {
            Name = Name,
            Primary = PrimaryHost,
            Secondary = SecondaryHost,
            PrimaryDisk = Disk[0],
            SecondaryDisk = Disk[^1],
            Minor = Device is null ? null : int.Parse(Device.Replace("/dev/drbd", string.Empty, StringComparison.Ordinal), CultureInfo.InvariantCulture),
            Port = Port,
            Protocol = Protocol,
            SharedSecret = SharedSecret,
            HmacAlgorithm = HmacAlgorithm,
            ResyncRateMBps = ResyncRateMBps,
            WaitForConnectionSeconds = WaitForConnectionSeconds,
            DegradedWaitSeconds = DegradedWaitSeconds,
            PrimaryAddress = ReplicationAddress?[0],
            SecondaryAddress = ReplicationAddress?[1],
            Export = Export,
            ExportName = ExportName,
            NbdPort = NbdPort,
            PrimaryExportAddress = ExportAddress?[0],
            SecondaryExportAddress = ExportAddress?[^1],
            Iqn = Iqn,
            Lun = Lun,
            InitiatorName = InitiatorName,
            InitiatorAddress = InitiatorAddress,
            SourceImage = SourceImage,
            UseExistingMetadata = UseExistingMetadata,
        };
        var manager = new ReplicatedDiskManager();
        var plan = TryRun(token => manager.PlanNewAsync(request, token), Name);
        if (plan is null)
        {
            return;
        }

        foreach (var warning in plan.Warnings)
        {
            WriteWarning(warning.ToString());
        }

        if (plan.IsEmpty)
        {
            WriteWarning($"Replicated disk '{Name}' already exists on {PrimaryHost.Host.Name} and {SecondaryHost.Host.Name} exactly as requested; nothing was changed.");
        }
        else if (!ShouldProcess($"replicated disk '{Name}' on {PrimaryHost.Host.Name} (primary) and {SecondaryHost.Host.Name} (secondary)", $"Set up the replicated disk with these files and commands:{Environment.NewLine}{plan.Describe()}"))
        {
            return;
        }

        var disk = TryRun(token => manager.ExecuteAsync(plan, token), Name);
        if (disk is not null)
        {
            WriteObject(disk);
        }
    }
}
