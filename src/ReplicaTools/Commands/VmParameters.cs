using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

/// <summary>The VM parameters of the clone and checkpoint cmdlets: -VMName (libvirt) or -QmpSocket (bare QEMU).</summary>
internal static class VmParameters
{
    /// <summary>
    /// Objects of a bare QEMU (clone results, checkpoints) carry the socket path in both VMName and QmpSocket, so they
    /// pipe into the next cmdlet; equal values therefore mean the QMP socket.
    /// </summary>
    public static VirtualMachine Open(ReplicaSession session, string? vmName, string? qmpSocket, string? libvirtUri)
    {
        if (!string.IsNullOrEmpty(qmpSocket) && string.Equals(vmName, qmpSocket, StringComparison.Ordinal))
        {
            vmName = null;
        }

        return VirtualMachine.Open(session, vmName, qmpSocket, libvirtUri);
    }
}
