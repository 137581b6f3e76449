using System.Management.Automation;
using ReplicaTools.Core.Clone;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Invoke, "NbdClone", SupportsShouldProcess = true)]
[OutputType(typeof(CloneResult))]
public sealed class InvokeNbdCloneCommand : HostCmdlet
{
    /// <summary>The libvirt domain whose disk is cloned.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Domain")]
    public string? VMName { get; set; }

    /// <summary>The QMP socket (on the VM host) of a bare QEMU whose disk is cloned.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? QmpSocket { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? LibvirtUri { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? Drive { get; set => field = Given(value); }

    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Destination { get; set; } = string.Empty;

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public ReplicaSession? DestinationSession { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? DestinationHostName { get; set; }

    [Parameter]
    public SwitchParameter Incremental { get; set; }

    [Parameter]
    public SwitchParameter Verify { get; set; }

    [Parameter]
    [ValidateRange(1, 64)]
    public int Connections { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? ExportAddress { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string ScratchDirectory { get; set; } = "/var/tmp";

    [Parameter]
    public SwitchParameter Repair { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    [ValidateRange(60, 604800)]
    public int TimeoutSeconds { get; set; } = 86400;

    protected override void ProcessRecord()
    {
        if (!HasArgument(Destination, nameof(Destination)))
        {
            return;
        }

        var session = ResolveSession();
        ReplicaSession destinationSession;
        NbdCloneOperation operation;
        try
        {
            destinationSession = HostResolver.Resolve(DestinationSession, DestinationHostName);
            operation = new NbdCloneOperation(new CloneRequest
            {
                VirtualMachine = VmParameters.Open(session, VMName, QmpSocket, LibvirtUri),
                Drive = Drive,
                Destination = Destination,
                DestinationSession = destinationSession,
                Incremental = Incremental,
                Verify = Verify,
                Connections = MyInvocation.BoundParameters.ContainsKey(nameof(Connections)) ? Connections : null,
                ExportAddress = ExportAddress,
                ScratchDirectory = ScratchDirectory,
                Repair = Repair,
                CopyTimeout = TimeSpan.FromSeconds(TimeoutSeconds),
            })
            {
                Force = Force,
            };
        }
        catch (Exception ex) when (IsReportable(ex))
        {
            ThrowTerminating(ex, Destination);
            return;
        }

        var vm = operation.Request.VirtualMachine;
        var target = $"{vm.DisplayName}, disk '{Drive ?? "(its only disk)"}' -> {destinationSession.Host.Name}:{Destination}";
        var action = $"{(Incremental ? "Incremental" : "Full")} clone over NBD:{Environment.NewLine}  {string.Join(Environment.NewLine + "  ", operation.DescribePlan())}{Environment.NewLine}";
        if (!ShouldProcess(target, action))
        {
            return;
        }

        var result = TryRun(token => operation.RunAsync(token), Destination);
        if (result is not null)
        {
            WriteObject(result);
        }
    }
}
