using System.Management.Automation;
using ReplicaTools.Core.Quorum;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "QuorumDisk")]
[OutputType(typeof(QuorumDisk))]
public sealed class GetQuorumDiskCommand : QuorumCmdlet
{
    /// <summary>Skip probing each replica's storage from the VM host (health then comes from QEMU's events only).</summary>
    [Parameter]
    public SwitchParameter NoProbe { get; set; }

    protected override void ProcessRecord()
    {
        var manager = OpenManager();
        var target = TargetName(manager.Vm.Target);
        var disks = TryRun(token => manager.GetAsync(DriveOrNull, !NoProbe, token), target);
        if (disks is null)
        {
            return;
        }

        foreach (var disk in disks)
        {
            WarnIfUnhealthy(disk);
            WriteObject(disk);
        }
    }
}
