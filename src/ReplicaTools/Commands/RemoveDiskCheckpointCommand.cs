using System.Management.Automation;
using ReplicaTools.Core.Clone;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Remove, "DiskCheckpoint", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
public sealed class RemoveDiskCheckpointCommand : HostCmdlet
{
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("Domain")]
    public string? VMName { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? QmpSocket { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? LibvirtUri { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? Drive { get; set => field = Given(value); }

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Name { get; set; } = string.Empty;

    protected override void ProcessRecord()
    {
        if (!HasArgument(Name, nameof(Name)))
        {
            return;
        }

        var session = ResolveSession();
        Core.Qemu.VirtualMachine vm;
        try
        {
            vm = VmParameters.Open(session, VMName, QmpSocket, LibvirtUri);
        }
        catch (ArgumentException ex)
        {
            WriteError(ToErrorRecord(ex, Name));
            return;
        }

        if (ShouldProcess($"checkpoint '{Name}' of {vm.DisplayName}{(Drive is null ? string.Empty : $", disk '{Drive}'")}", $"Delete checkpoint ({DiskCheckpointManager.DescribeRemoval(vm, Name)})"))
        {
            TryRun(token => DiskCheckpointManager.RemoveAsync(vm, Drive, Name, token), Name);
        }
    }
}
