using ReplicaTools.Core.Mirror;

namespace ReplicaTools;

/// <summary>A cmdlet on a VM disk's live mirror (the VM parameters come from <see cref="VmCmdlet"/>).</summary>
public abstract class MirrorCmdlet : VmCmdlet
{
    /// <summary>The VM's mirror back end; a parameter mistake terminates with a clear error.</summary>
    protected DriveMirrorBackend OpenBackend() => OpenVm().CreateMirrorBackend();

    /// <summary>Failed and stalled jobs are shown, and said out loud.</summary>
    protected void WarnIfUnhealthy(DriveMirrorJob job)
    {
        if (job.State is DriveMirrorState.Failed or DriveMirrorState.Stalled)
        {
            WriteWarning($"The mirror of {job.VM}:{job.Drive} on host '{job.HostName}' to {job.Destination} is {job.State}: {job.Error}");
        }
    }
}
