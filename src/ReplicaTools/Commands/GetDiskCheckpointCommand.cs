using System.Management.Automation;
using ReplicaTools.Core.Clone;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "DiskCheckpoint")]
[OutputType(typeof(DiskCheckpoint))]
public sealed class GetDiskCheckpointCommand : VmCmdlet
{
    /// <summary>Checkpoint names; wildcards allowed.</summary>
    [Parameter(Position = 1)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[]? Name { get; set; }

    /// <summary>Only the checkpoints Invoke-NbdClone created (rtclone-CHAIN-GENERATION).</summary>
    [Parameter]
    public SwitchParameter CloneOnly { get; set; }

    protected override void ProcessRecord()
    {
        var vm = OpenVm();
        var checkpoints = TryRun(token => DiskCheckpointManager.ListAsync(vm, DriveOrNull, token), vm.Name);
        if (checkpoints is null)
        {
            return;
        }

        var selection = new WildcardSelection(Name, "CheckpointNotFound",
            name => $"{vm.DisplayName} has no checkpoint '{name}'{(DriveOrNull is null ? string.Empty : $" on disk '{DriveOrNull}'")}. Get-DiskCheckpoint lists them.");
        WriteObject(selection.Select(this, checkpoints, c => c.Name).Where(c => !CloneOnly || c.IsCloneCheckpoint), enumerateCollection: true);
    }
}
