using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// The clone's copy step on the shared NBD copier (<see cref="NbdCopier"/>): nbdcopy (qemu-img convert when nbdcopy is
/// missing) for full copies, the python3-libnbd dirty-extent program for incrementals. The clone decides the target
/// path itself (NAME.rtclone-partial, renamed after verification), so the copier writes straight to it.
/// </summary>
public sealed class NbdCloneCopier : ICloneCopier
{
    /// <summary>The interpreter the dirty-extent copier and the checksum run with (a python3 earlier on PATH may lack python3-libnbd).</summary>
    public const string Python = NbdCopier.PythonProgram;

    public async Task<CopyOutcome> CopyFullAsync(IReplicaHost host, NbdExportAddress source, string target, bool targetIsBlockDevice, int? connections,
        TimeSpan timeout, string? runLock, Action<double> progress, CancellationToken cancellationToken)
    {
        var request = new NbdFullCopyRequest
        {
            SourceUri = source.Uri,
            DestinationPath = target,
            DestinationIsDevice = targetIsBlockDevice,
            Connections = connections ?? Math.Max(2, Environment.ProcessorCount),
            ViaTemporaryFile = false,
            Overwrite = true,
            Timeout = timeout,
        };
        using (OperationContext.Use(new ProgressRelay(OperationContext.Reporter, progress)))
        {
            var result = await new NbdCopier(host) { RunLock = runLock }.CopyAsync(request, cancellationToken).ConfigureAwait(false);
            return new CopyOutcome(result.BytesCopied, result.Tool);
        }
    }

    public async Task<CopyOutcome> CopyDirtyAsync(IReplicaHost host, NbdExportAddress source, string metaContext, string target,
        TimeSpan timeout, string? runLock, Action<double> progress, CancellationToken cancellationToken)
    {
        var request = new NbdIncrementalCopyRequest
        {
            SourceUri = source.Uri,
            Bitmap = metaContext,
            DestinationPath = target,
            ViaTemporaryCopy = false, // the clone manages the partial file and the rename
            Timeout = timeout,
        };
        using (OperationContext.Use(new ProgressRelay(OperationContext.Reporter, progress)))
        {
            var result = await new NbdCopier(host) { RunLock = runLock }.ApplyDirtyExtentsAsync(request, cancellationToken).ConfigureAwait(false);
            return new CopyOutcome(result.BytesCopied, "python3-libnbd dirty extents", result.Extents ?? 0, result.BytesZeroed);
        }
    }

    /// <summary>Turns the copier's own progress records into the clone's single progress bar; everything else passes through.</summary>
    private sealed class ProgressRelay(IOperationReporter outer, Action<double> progress) : IOperationReporter
    {
        public void Verbose(string message) => outer.Verbose(message);

        public void Warning(string message) => outer.Warning(message);

        public void Progress(OperationProgress record)
        {
            if (!record.Completed && record.PercentComplete >= 0)
            {
                progress(record.PercentComplete);
            }
        }
    }
}
