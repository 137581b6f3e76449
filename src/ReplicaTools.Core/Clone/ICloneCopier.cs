using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>An NBD export as the destination reaches it.</summary>
public sealed record NbdExportAddress(string Address, int Port, string ExportName)
{
    public string Uri => NbdUri.Build(Address, Port, ExportName);

    public override string ToString() => Uri;
}

/// <summary>What a copy step did: bytes written as data, and (incremental) dirty bytes that read as zero and were zeroed instead.</summary>
public sealed record CopyOutcome(long BytesCopied, string Copier, int Extents = 0, long BytesZeroed = 0);

/// <summary>
/// The copy step of a clone, run on the destination host against the VM host's export. Full copies are sparse-aware
/// and multi-connection; dirty copies patch only the extents a dirty-bitmap meta context marks into an existing image.
/// </summary>
/// <remarks><c>runLock</c>: the run's lock on the destination host; the copier runs under <see cref="ControllerGuard"/> with it, so it ends
/// with its controller and the lock is not free before it has.</remarks>
public interface ICloneCopier
{
    Task<CopyOutcome> CopyFullAsync(IReplicaHost host, NbdExportAddress source, string target, bool targetIsBlockDevice, int? connections,
        TimeSpan timeout, string? runLock, Action<double> progress, CancellationToken cancellationToken);

    Task<CopyOutcome> CopyDirtyAsync(IReplicaHost host, NbdExportAddress source, string metaContext, string target,
        TimeSpan timeout, string? runLock, Action<double> progress, CancellationToken cancellationToken);
}
