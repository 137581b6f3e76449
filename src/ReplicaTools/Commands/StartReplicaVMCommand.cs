using System.Management.Automation;
using ReplicaTools.Core.Failover;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

/// <summary>
/// Starts a VM from the first usable copy of its disk. The VM parameters come from <see cref="VmCmdlet"/>: -QmpSocket
/// (set Qmp) is the socket to create, -VMName (set Libvirt) the domain to create, -Drive the disk to attach.
/// </summary>
[Cmdlet(VerbsLifecycle.Start, "ReplicaVM", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(ReplicaVmStartResult))]
public sealed class StartReplicaVMCommand : VmCmdlet
{
    /// <summary>The VM's name: QEMU's -name, or the libvirt domain's name when -VMName is not given.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? Name { get; set => field = Given(value); }

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

    [Parameter(ParameterSetName = QmpSet)]
    [ValidateNotNullOrEmpty]
    public string? PidFile { get; set; }

    [Parameter(ParameterSetName = QmpSet)]
    [ValidateNotNullOrEmpty]
    public string Machine { get; set; } = "pc,accel=kvm:tcg";

    [Parameter(ParameterSetName = QmpSet)]
    [ValidateNotNull]
    public string[] QemuArgument { get; set; } = Array.Empty<string>();

    [Parameter(ParameterSetName = QmpSet)]
    [ValidateNotNullOrEmpty]
    public string QemuBinary { get; set; } = "qemu-system-x86_64";

    /// <summary>The libvirt domain definition to start from (for example Get-Content -Raw vm1.xml, or virsh dumpxml output).</summary>
    [Parameter(Mandatory = true, ParameterSetName = LibvirtSet)]
    [ValidateNotNullOrEmpty]
    public string DomainXml { get; set; } = string.Empty;

    [Parameter(ParameterSetName = LibvirtSet)]
    public SwitchParameter Persistent { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(DiskPath, nameof(DiskPath)))
        {
            return;
        }

        var session = ResolveSession();
        ReplicaVmRequest request;
        try
        {
            request = new ReplicaVmRequest
            {
                Name = VmName(),
                Copies = DiskPath.Select(p => ImageLocation.Parse(p, "DiskPath")).ToArray(),
                Format = Format,
                MemoryMB = MemoryMB > 0 ? MemoryMB : null,
                CpuCount = CpuCount > 0 ? CpuCount : null,
                Paused = Paused,
                ProbeTimeout = TimeSpan.FromSeconds(ProbeTimeoutSeconds),
                QmpSocket = ParameterSetName == QmpSet ? QmpSocket : null,
                PidFile = PidFile,
                Machine = Machine,
                QemuArguments = QemuArgument,
                QemuBinary = QemuBinary,
                DomainXml = ParameterSetName == LibvirtSet ? DomainXml : null,
                LibvirtUri = LibvirtUri,
                Persistent = Persistent,
                Drive = DriveOrNull,
            };
        }
        catch (ArgumentException ex)
        {
            WriteError(ToErrorRecord(ex, DiskPath));
            return;
        }

        var launcher = new ReplicaVmLauncher(session);
        var plan = TryRun(token => launcher.PlanAsync(request, token), request.Name);
        if (plan is null)
        {
            return;
        }

        var action = plan.Candidate < 0
            ? $"Start VM '{request.Name}': no copy is usable:{Environment.NewLine}{plan.Describe()}"
            : $"Start VM '{request.Name}' from copy #{plan.Candidate + 1} {plan.Copies[plan.Candidate].Location}:{Environment.NewLine}{plan.Describe()}";
        if (!ShouldProcess($"{request.Name} on {session.Host.Name}", action))
        {
            return;
        }

        var result = TryRun(token => launcher.StartAsync(plan, token), request.Name);
        if (result is not null)
        {
            WriteObject(result);
        }
    }

    /// <summary>The VM's name: -VMName or -Name for a domain (they must agree), -Name or the socket's file name for a bare QEMU.</summary>
    private string VmName()
    {
        if (ParameterSetName == LibvirtSet)
        {
            if (!string.IsNullOrEmpty(VMName) && Name is not null && !string.Equals(VMName, Name, StringComparison.Ordinal))
            {
                throw new ArgumentException($"-VMName '{VMName}' and -Name '{Name}' differ; for a libvirt domain give one of them.", nameof(Name));
            }

            return string.IsNullOrEmpty(VMName) ? Name ?? throw new ArgumentException("Name the domain to start: -VMName (or -Name).", nameof(VMName)) : VMName;
        }

        return Name ?? System.IO.Path.GetFileNameWithoutExtension(QmpSocket ?? string.Empty);
    }
}
