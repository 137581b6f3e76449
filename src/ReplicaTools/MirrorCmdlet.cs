using System.Management.Automation;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools;

/// <summary>
/// A cmdlet that acts on one VM's disk: -VMName (libvirt domain) or -QmpSocket (bare QEMU) on the host of
/// -Session/-HostName, and -Drive. All bind by property name, so mirror jobs and Start-ReplicaVM results pipe in.
/// </summary>
public abstract class MirrorCmdlet : HostCmdlet
{
    /// <summary>The libvirt domain. Null/empty when -QmpSocket names a bare QEMU.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("Domain")]
    public string? VMName { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string? QmpSocket { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string? LibvirtUri { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string? Drive { get; set; }

    protected string? DriveOrNull => string.IsNullOrEmpty(Drive) ? null : Drive;

    /// <summary>How -WhatIf and errors name the VM and drive.</summary>
    protected string TargetName(ReplicaSession session) =>
        $"{(string.IsNullOrEmpty(VMName) ? QmpSocket : VMName)}{(DriveOrNull is null ? string.Empty : ":" + Drive)} on {session.Host.Name}";

    /// <summary>The VM's mirror backend; a parameter mistake terminates with a clear error.</summary>
    protected DriveMirrorBackend OpenBackend(ReplicaSession session)
    {
        try
        {
            return VirtualMachine.Open(session, VMName, QmpSocket, LibvirtUri).CreateMirrorBackend();
        }
        catch (ArgumentException ex)
        {
            ThrowTerminating(ex, VMName ?? QmpSocket);
            throw;
        }
    }

    /// <summary>Failed and stalled jobs are shown, and said out loud.</summary>
    protected void WarnIfUnhealthy(DriveMirrorJob job)
    {
        if (job.State is DriveMirrorState.Failed or DriveMirrorState.Stalled)
        {
            WriteWarning($"The mirror of {job.VM}:{job.Drive} on host '{job.HostName}' to {job.Destination} is {job.State}: {job.Error}");
        }
    }
}
