using System.Management.Automation;
using ReplicaTools.Core.Clone;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Remove, "DiskCheckpoint", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
public sealed class RemoveDiskCheckpointCommand : VmCmdlet
{
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Name { get; set; } = string.Empty;

    protected override void ProcessRecord()
    {
        if (!HasArgument(Name, nameof(Name)))
        {
            return;
        }

        var vm = OpenVm();
        if (ShouldProcess($"checkpoint '{Name}' of {vm.DisplayName}{(DriveOrNull is null ? string.Empty : $", disk '{DriveOrNull}'")}", $"Delete checkpoint ({DiskCheckpointManager.PlanRemoval(vm, DriveOrNull, Name)})"))
        {
            TryRun(token => DiskCheckpointManager.RemoveAsync(vm, DriveOrNull, Name, token), Name);
        }
    }
}
