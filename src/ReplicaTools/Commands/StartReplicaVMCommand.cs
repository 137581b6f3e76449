using System.Management.Automation;
using ReplicaTools.Core.Failover;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Start, "ReplicaVM", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = QemuSet)]
[OutputType(typeof(ReplicaVmStartResult))]
public sealed class StartReplicaVMCommand : HostCmdlet
{
    private const string QemuSet = "Qemu";
    private const string LibvirtSet = "Libvirt";

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("VMName")]
    public string Name { get; set; } = string.Empty;

    /// <summary>The copies of the disk in order of preference: the primary first, then the mirror copies.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    [Alias("Copies", "Path")]
    public string[] DiskPath { get; set; } = Array.Empty<string>();

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? Format { get; set => field = Given(value); }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(16, 16 * 1024 * 1024)]
    public int MemoryMB { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 1024)]
    public int CpuCount { get; set; }

    /// <summary>Start with the CPUs stopped (QEMU -S, virsh start --paused).</summary>
    [Parameter]
    public SwitchParameter Paused { get; set; }

    [Parameter]
    [ValidateRange(1, 3600)]
    public int ProbeTimeoutSeconds { get; set; } = 10;

    [Parameter(Mandatory = true, ParameterSetName = QemuSet, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string QmpSocket { get; set; } = string.Empty;

    [Parameter(ParameterSetName = QemuSet)]
    [ValidateNotNullOrEmpty]
    public string? PidFile { get; set; }

    [Parameter(ParameterSetName = QemuSet)]
    [ValidateNotNullOrEmpty]
    public string Machine { get; set; } = "pc,accel=kvm:tcg";

    [Parameter(ParameterSetName = QemuSet)]
    [ValidateNotNull]
    public string[] QemuArgument { get; set; } = Array.Empty<string>();

    [Parameter(ParameterSetName = QemuSet)]
    [ValidateNotNullOrEmpty]
    public string QemuBinary { get; set; } = "qemu-system-x86_64";

    /// <summary>The libvirt domain definition to start from (for example Get-Content -Raw vm1.xml, or virsh dumpxml output).</summary>
    [Parameter(Mandatory = true, ParameterSetName = LibvirtSet)]
    [ValidateNotNullOrEmpty]
    public string DomainXml { get; set; } = string.Empty;

    [Parameter(ParameterSetName = LibvirtSet)]
    [ValidateNotNullOrEmpty]
    public string? LibvirtUri { get; set; }

    [Parameter(ParameterSetName = LibvirtSet)]
    public SwitchParameter Persistent { get; set; }

    /// <summary>The target of the template's disk to replace (default its first disk).</summary>
    [Parameter(ParameterSetName = LibvirtSet)]
    [ValidateNotNullOrEmpty]
    public string? Drive { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Name, nameof(Name)) || !HasArgument(DiskPath, nameof(DiskPath)) || (ParameterSetName == QemuSet && !HasArgument(QmpSocket, nameof(QmpSocket))))
        {
            return;
        }

        var session = ResolveSession();
        ReplicaVmRequest request;
        try
        {
            request = new ReplicaVmRequest
            {
                Name = Name,
                Copies = DiskPath.Select(p => ImageLocation.Parse(p, "DiskPath")).ToArray(),
                Format = Format,
                MemoryMB = MemoryMB > 0 ? MemoryMB : null,
                CpuCount = CpuCount > 0 ? CpuCount : null,
                Paused = Paused,
                ProbeTimeout = TimeSpan.FromSeconds(ProbeTimeoutSeconds),
                QmpSocket = ParameterSetName == QemuSet ? QmpSocket : null,
                PidFile = PidFile,
                Machine = Machine,
                QemuArguments = QemuArgument,
                QemuBinary = QemuBinary,
                DomainXml = ParameterSetName == LibvirtSet ? DomainXml : null,
                LibvirtUri = LibvirtUri,
                Persistent = Persistent,
                Drive = Drive,
            };
        }
        catch (ArgumentException ex)
        {
            WriteError(ToErrorRecord(ex, DiskPath));
            return;
        }

        var launcher = new ReplicaVmLauncher(session);
        var plan = TryRun(token => launcher.PlanAsync(request, token), Name);
        if (plan is null)
        {
            return;
        }

        var action = plan.Candidate < 0
            ? $"Start VM '{Name}': no copy is usable:{Environment.NewLine}{plan.Describe()}"
            : $"Start VM '{Name}' from copy #{plan.Candidate + 1} {plan.Copies[plan.Candidate].Location}:{Environment.NewLine}{plan.Describe()}";
        if (!ShouldProcess($"{Name} on {session.Host.Name}", action))
        {
            return;
        }

        var result = TryRun(token => launcher.StartAsync(plan, token), Name);
        if (result is not null)
        {
            WriteObject(result);
        }
    }
}
