using System.Management.Automation;
using ReplicaTools.Core.Quorum;

namespace ReplicaTools;

/// <summary>A cmdlet on the quorum disks of a running VM (the VM parameters come from <see cref="VmCmdlet"/>).</summary>
public abstract class QuorumCmdlet : VmCmdlet
{
    /// <summary>How long a replica probe may take, in seconds (qemu-img or a connection under a kill timeout).</summary>
    [Parameter]
    [ValidateRange(1, 3600)]
    public int ProbeTimeoutSeconds { get; set; } = 10;

    /// <summary>The VM's quorum disks; a parameter mistake terminates with a clear error.</summary>
    protected QuorumDiskManager OpenManager() => new(OpenVm()) { ProbeTimeout = TimeSpan.FromSeconds(ProbeTimeoutSeconds) };

    /// <summary>Replicas that are not healthy, and a disk without quorum, are said out loud.</summary>
    protected void WarnIfUnhealthy(QuorumDisk disk)
    {
        foreach (var replica in disk.Replicas.Where(r => r.Health != QuorumReplicaHealth.Healthy))
        {
            WriteWarning($"Replica {replica.NodeName} ({replica.Location}) of quorum disk '{disk.Drive}' on {disk.VM} is {replica.Health}: {replica.Reason}");
        }

        if (disk.State == QuorumDiskState.NoQuorum)
        {
            WriteWarning($"Quorum disk '{disk.Drive}' on {disk.VM} has {disk.HealthyReplicas} healthy replica(s), fewer than its vote threshold {disk.VoteThreshold}: reads where the others disagree fail.");
        }
    }
}
