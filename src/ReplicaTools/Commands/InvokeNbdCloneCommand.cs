using System.Management.Automation;
using ReplicaTools.Core.Clone;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Invoke, "NbdClone", SupportsShouldProcess = true)]
[OutputType(typeof(CloneResult))]
public sealed class InvokeNbdCloneCommand : VmCmdlet
{
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

        var vm = OpenVm();
        var destinationSession = ResolveSession(DestinationSession, DestinationHostName, ReplicaSession.Local);
        NbdCloneOperation operation;
        try
        {
            operation = new NbdCloneOperation(new CloneRequest
            {
                VirtualMachine = vm,
                Drive = DriveOrNull,
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

        var target = $"{vm.DisplayName}, disk '{DriveOrNull ?? "(its only disk)"}' -> {destinationSession.Host.Name}:{Destination}";
        var action = $"{(Incremental ? "Incremental" : "Full")} clone over NBD, after checking for state an interrupted clone left{(Repair ? " (and repairing it)" : string.Empty)}:" +
                     $"{Environment.NewLine}  {string.Join(Environment.NewLine + "  ", operation.DescribePlan())}{Environment.NewLine}";
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
