using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Nbd;

/// <summary>Which program performs a full copy.</summary>
public enum NbdCopyTool
{
    /// <summary>nbdcopy when installed and the target is raw, else qemu-img convert.</summary>
    Auto,

    /// <summary>nbdcopy (package libnbd-bin): multi-connection, sparse-aware, raw targets only.</summary>
    NbdCopy,

    /// <summary>qemu-img convert (package qemu-utils): any target format, sparse-aware.</summary>
    QemuImg,
}

public enum NbdCopyKind
{
    Full,
    Incremental,
}

/// <summary>A full copy of an NBD export to a file or block device on the copier's host.</summary>
public sealed class NbdFullCopyRequest
{
    /// <summary>The export to read, e.g. <c>nbd://10.0.0.5:10809/vm1</c> (reachable from the destination host).</summary>
    public required string SourceUri { get; init; }

    /// <summary>Absolute path of the destination file or block device on the copier's host.</summary>
    public required string DestinationPath { get; init; }

    /// <summary>True when the destination is a block device: written in place (no temporary file, no rename).</summary>
    public bool DestinationIsDevice { get; init; }

    /// <summary>The destination's image format; anything but raw needs qemu-img.</summary>
    public string TargetFormat { get; init; } = "raw";

    /// <summary>NBD connections and worker threads for nbdcopy (-C N -T N).</summary>
    public int Connections { get; init; } = 4;

    public NbdCopyTool Tool { get; init; } = NbdCopyTool.Auto;

    /// <summary>Copy into a temporary file beside the destination and rename it only when the copy completed (files only).</summary>
    public bool ViaTemporaryFile { get; init; } = true;

    /// <summary>Replace an existing destination file; when false an existing one is an error.</summary>
    public bool Overwrite { get; init; }

    /// <summary>How long the copy may run; infinite by default (the caller's cancellation token still stops it).</summary>
    public TimeSpan Timeout { get; init; } = System.Threading.Timeout.InfiniteTimeSpan;
}

/// <summary>Applies the extents a dirty bitmap marks to an existing copy (the previous full or incremental copy).</summary>
public sealed class NbdIncrementalCopyRequest
{
    /// <summary>The export, offering the bitmap as a meta context (qemu-nbd -B NAME, or QEMU's NBD server with bitmaps).</summary>
    public required string SourceUri { get; init; }

    /// <summary>The bitmap name, or its full context <c>qemu:dirty-bitmap:NAME</c>.</summary>
    public required string Bitmap { get; init; }

    /// <summary>Absolute path of the existing destination file or block device.</summary>
    public required string DestinationPath { get; init; }

    /// <summary>
    /// Apply to a copy of the destination (cp --reflink=auto, instant on btrfs/XFS, a full local copy elsewhere) and rename it
    /// over the destination when done, so a failure leaves the previous state intact. When false the destination is patched
    /// in place: a failure leaves it between the old and new state (the bitmap still covers every extent, so a retry repairs it).
    /// </summary>
    public bool ViaTemporaryCopy { get; init; }

    public TimeSpan Timeout { get; init; } = System.Threading.Timeout.InfiniteTimeSpan;
}

/// <summary>What a copy did.</summary>
public sealed class NbdCopyResult
{
    public required string HostName { get; init; }

    public required string SourceUri { get; init; }

    /// <summary>The final destination path (after any rename).</summary>
    public required string Destination { get; set; }

    public NbdCopyKind Kind { get; init; }

    /// <summary>"nbdcopy", "qemu-img" or "python3-libnbd".</summary>
    public required string Tool { get; init; }

    /// <summary>Virtual size of the export in bytes.</summary>
    public long Size { get; init; }

    /// <summary>Bytes read from the export and written as data (data extents for a full copy, dirty extents for an incremental one).</summary>
    public long BytesCopied { get; init; }

    /// <summary>
    /// Incremental copies: dirty bytes that read as zero (NBD_STATE_ZERO, or 4 KiB blocks of zeros in what was read) and
    /// were zeroed on the destination (a punched hole where it can) instead of written as data. 0 for full copies.
    /// </summary>
    public long BytesZeroed { get; init; }

    /// <summary>Bytes not written at all: holes and zeros (full copy) or clean extents (incremental). Copied + zeroed + skipped = size.</summary>
    public long BytesSkipped { get; init; }

    /// <summary>Number of dirty extents applied (incremental copies only).</summary>
    public int? Extents { get; init; }

    /// <summary>True when an incremental copy had to resize the destination file to the export's size.</summary>
    public bool DestinationResized { get; init; }

    public TimeSpan Duration { get; init; }

    /// <summary>Bytes copied per second.</summary>
    public double BytesPerSecond => Duration > TimeSpan.Zero ? BytesCopied / Duration.TotalSeconds : 0;

    public override string ToString() =>
        $"{Kind} copy {SourceUri} -> {HostName}:{Destination} with {Tool}: {BytesCopied} B copied, {BytesZeroed} B zeroed, {BytesSkipped} B skipped in {Duration.TotalSeconds:0.00} s";
}

/// <summary>
/// Copies NBD exports to files or block devices, run on the DESTINATION host: full copies with nbdcopy (or qemu-img
/// convert when nbdcopy is missing or the target is not raw) and incremental copies of dirty-bitmap extents with
/// python3-libnbd. Progress goes to <see cref="OperationContext.Reporter"/>. A full copy to a file goes to a temporary
/// file that is renamed only when complete, so a failed or killed copy never leaves a destination that looks complete.
/// </summary>
public sealed partial class NbdCopier
{
    public const string PythonProgram = "/usr/bin/python3";

    /// <summary>Marks temporary files: <c>DIR/.NAME.rt-partial-XXXXXXXX</c>. Leftovers (the controlling process died) can be deleted.</summary>
    public const string TemporaryMarker = ".rt-partial-";

    public NbdCopier(IReplicaHost host)
    {
        ArgumentNullException.ThrowIfNull(host);
        Host = host;
    }

    /// <summary>The destination host, where the copy runs.</summary>
    public IReplicaHost Host { get; }

    /// <summary>
    /// The <see cref="RemoteLock"/> (on this host) of the run the copies belong to, or null: each copy runs under the
    /// <see cref="ControllerGuard"/>, so it ends with its controller, and with this set the lock stays held until it has.
    /// </summary>
    public string? RunLock { get; init; }

    /// <summary>Test hook: the nbdcopy program to look for (a missing one exercises the qemu-img fallback).</summary>
    internal string NbdCopyProgram { get; set; } = "nbdcopy";

    /// <summary>Test hook: the interpreter command for the dirty-extent script (e.g. with -S, the module is not found).</summary>
    internal IReadOnlyList<string> PythonCommand { get; set; } = new[] { PythonProgram };

    /// <summary>A temporary name beside <paramref name="destinationPath"/> (same directory, so the final rename is atomic).</summary>
    public static string TemporaryPathFor(string destinationPath)
    {
        var slash = destinationPath.LastIndexOf('/');
        var directory = slash <= 0 ? (slash == 0 ? "/" : ".") : destinationPath[..slash];
        var name = destinationPath[(slash + 1)..];
        return $"{(directory == "/" ? string.Empty : directory)}/.{name}{TemporaryMarker}{Guid.NewGuid().ToString("N")[..8]}";
    }

    /// <summary>The nbdcopy command line: <c>nbdcopy -C N -T N --flush --progress=1 -- SOURCE DEST</c> (progress on standard output).</summary>
    public CommandSpec BuildNbdCopyCommand(string sourceUri, string destination, int connections, TimeSpan? timeout = null)
    {
        var count = Math.Clamp(connections, 1, 64).ToString(CultureInfo.InvariantCulture);
        return new CommandSpec(NbdCopyProgram, "-C", count, "-T", count, "--flush", "--progress=1", "--", sourceUri, destination)
        {
            Timeout = timeout ?? System.Threading.Timeout.InfiniteTimeSpan,
        };
    }

    /// <summary>The qemu-img fallback: <c>qemu-img convert -p -f raw -O FORMAT [-n] SOURCE DEST</c> (-n for an existing device).</summary>
    public static CommandSpec BuildQemuImgCommand(string sourceUri, string destination, string targetFormat, bool destinationIsDevice, TimeSpan? timeout = null)
    {
        var arguments = new List<string> { "qemu-img", "convert", "-p", "-f", "raw", "-O", targetFormat };
        if (destinationIsDevice)
        {
            arguments.Add("-n");
        }

        arguments.Add(sourceUri);
        arguments.Add(destination);
        return new CommandSpec(arguments) { Timeout = timeout ?? System.Threading.Timeout.InfiniteTimeSpan };
    }

    /// <summary>The incremental copy: <c>/usr/bin/python3 -c SCRIPT URI CONTEXT DEST</c>.</summary>
    public CommandSpec BuildDirtyExtentCommand(string sourceUri, string context, string destination, TimeSpan? timeout = null) =>
        new(PythonCommand.Concat(new[] { "-c", DirtyExtentScript.Source, sourceUri, context, destination }))
        {
            Timeout = timeout ?? System.Threading.Timeout.InfiniteTimeSpan,
        };

    /// <summary>Which tool <see cref="CopyAsync"/> would use for <paramref name="request"/> on this host.</summary>
    public async Task<NbdCopyTool> ResolveToolAsync(NbdFullCopyRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Tool != NbdCopyTool.Auto)
        {
            return request.Tool;
        }

        if (request.TargetFormat != "raw")
        {
            return NbdCopyTool.QemuImg;
        }

        var probe = await Host.RunAsync(new CommandSpec("sh", "-c", "command -v \"$1\"", "sh", NbdCopyProgram) { Timeout = TimeSpan.FromSeconds(60), ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (probe.ExitCode == 0)
        {
            return NbdCopyTool.NbdCopy;
        }

        OperationContext.Reporter.Verbose($"[{Host.Name}] {NbdCopyProgram} is not installed (package libnbd-bin); copying with qemu-img convert instead.");
        return NbdCopyTool.QemuImg;
    }

    /// <summary>
    /// Copies the whole export to the destination. A file destination is written under a temporary name and renamed when
    /// complete (unless <see cref="NbdFullCopyRequest.ViaTemporaryFile"/> is false); a device is written in place.
    /// </summary>
    public async Task<NbdCopyResult> CopyAsync(NbdFullCopyRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ValidateUri(request.SourceUri);
        ValidateDestination(request.DestinationPath);
        if (request.TargetFormat != "raw" && request.Tool == NbdCopyTool.NbdCopy)
        {
            throw new ReplicaException("NbdCopyInvalidArgument", ReplicaErrorCategory.InvalidArgument,
                $"nbdcopy writes raw images only; the target format '{request.TargetFormat}' needs qemu-img (Tool = QemuImg or Auto).", Host.Name, request.TargetFormat);
        }

        var tool = await ResolveToolAsync(request, cancellationToken).ConfigureAwait(false);
        if (request.DestinationIsDevice || !request.ViaTemporaryFile)
        {
            if (!request.DestinationIsDevice && !request.Overwrite)
            {
                await EnsureAbsentAsync(request.DestinationPath, cancellationToken).ConfigureAwait(false);
            }

            return await CopyCoreAsync(request, tool, request.DestinationPath, cancellationToken).ConfigureAwait(false);
        }

        var result = await CopyToTemporaryThenRenameAsync(request.DestinationPath, (temporary, token) => CopyCoreAsync(request, tool, temporary, token),
            seedFromDestination: false, overwrite: request.Overwrite, cancellationToken).ConfigureAwait(false);
        result.Destination = request.DestinationPath;
        return result;
    }

    /// <summary>
    /// Reads the dirty extents of the bitmap's meta context and writes just those into the existing destination
    /// (python3-libnbd on this host). The destination must hold the state the bitmap started from.
    /// </summary>
    public async Task<NbdCopyResult> ApplyDirtyExtentsAsync(NbdIncrementalCopyRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ValidateUri(request.SourceUri);
        ValidateDestination(request.DestinationPath);
        var context = NbdContexts.DirtyBitmap(request.Bitmap);
        if (!request.ViaTemporaryCopy)
        {
            return await ApplyCoreAsync(request, context, request.DestinationPath, cancellationToken).ConfigureAwait(false);
        }

        var result = await CopyToTemporaryThenRenameAsync(request.DestinationPath, (temporary, token) => ApplyCoreAsync(request, context, temporary, token),
            seedFromDestination: true, overwrite: true, cancellationToken).ConfigureAwait(false);
        result.Destination = request.DestinationPath;
        return result;
    }

    /// <summary>
    /// The building block for copies that must never leave a destination that looks complete: runs
    /// <paramref name="copy"/> against a temporary path beside <paramref name="destinationPath"/> (seeded with a reflink
    /// copy of the destination if asked), then flushes it and renames it over the destination. If the copy fails, is
    /// cancelled or its process is killed, the temporary file is deleted and the destination is untouched.
    /// </summary>
    public async Task<T> CopyToTemporaryThenRenameAsync<T>(string destinationPath, Func<string, CancellationToken, Task<T>> copy,
        bool seedFromDestination = false, bool overwrite = true, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(copy);
        ValidateDestination(destinationPath);
        if (!overwrite)
        {
            await EnsureAbsentAsync(destinationPath, cancellationToken).ConfigureAwait(false);
        }

        var temporary = TemporaryPathFor(destinationPath);
        try
        {
            if (seedFromDestination)
            {
                await Host.RunAsync(HostFiles.Reflink(destinationPath, temporary, required: false), cancellationToken).ConfigureAwait(false);
            }

            var result = await copy(temporary, cancellationToken).ConfigureAwait(false);
            var finish = await Host.RunAsync(HostFiles.Promote(temporary, destinationPath, overwrite), cancellationToken).ConfigureAwait(false);
            if (finish.ExitCode == HostFiles.DestinationExists)
            {
                throw DestinationExists(destinationPath);
            }

            return result;
        }
        catch
        {
            await DeleteQuietlyAsync(temporary).ConfigureAwait(false);
            throw;
        }
    }

    private async Task<NbdCopyResult> CopyCoreAsync(NbdFullCopyRequest request, NbdCopyTool tool, string destination, CancellationToken cancellationToken)
    {
        var stopwatch = Stopwatch.StartNew();

        // The allocation only feeds the result's byte counts: measure it alongside the copy rather than before it
        // (mapping an export costs a full NBD handshake, ~0.1 s against QEMU's server).
        var measuring = tool == NbdCopyTool.NbdCopy
            ? MeasureWithNbdInfoAsync(request.SourceUri, cancellationToken)
            : MeasureWithQemuImgAsync(request.SourceUri, cancellationToken);
        var command = tool == NbdCopyTool.NbdCopy
            ? BuildNbdCopyCommand(request.SourceUri, destination, request.Connections, request.Timeout)
            : BuildQemuImgCommand(request.SourceUri, destination, request.TargetFormat, request.DestinationIsDevice, request.Timeout);
        var toolName = tool == NbdCopyTool.NbdCopy ? "nbdcopy" : "qemu-img";
        var progress = new ProgressTracker($"Copying {request.SourceUri} to {Host.Name}:{request.DestinationPath}", 0);

        try
        {
            await Host.RunAsync(ControllerGuard.Wrap(command, RunLock).WithOutputLines(line =>
            {
                var match = PercentLine().Match(line);
                if (match.Success)
                {
                    progress.Report(double.Parse(match.Groups["percent"].Value, CultureInfo.InvariantCulture) / 100);
                }
            }), cancellationToken).ConfigureAwait(false);
        }
        catch (ProgramNotFoundException ex)
        {
            Observe(measuring);
            throw tool == NbdCopyTool.NbdCopy
                ? new NbdToolMissingException(Host.Name, NbdCopyProgram, "libnbd-bin", ex.Message)
                : new NbdToolMissingException(Host.Name, "qemu-img", "qemu-utils", ex.Message);
        }
        catch
        {
            Observe(measuring);
            throw;
        }
        finally
        {
            progress.Complete();
        }

        var (size, allocation) = await measuring.ConfigureAwait(false);
        return new NbdCopyResult
        {
            HostName = Host.Name,
            SourceUri = request.SourceUri,
            Destination = destination,
            Kind = NbdCopyKind.Full,
            Tool = toolName,
            Size = size,
            BytesCopied = allocation?.DataBytes ?? size,
            BytesSkipped = allocation?.ZeroBytes ?? 0,
            Duration = stopwatch.Elapsed,
        };
    }

    private async Task<NbdCopyResult> ApplyCoreAsync(NbdIncrementalCopyRequest request, string context, string destination, CancellationToken cancellationToken)
    {
        var stopwatch = Stopwatch.StartNew();
        var progress = new ProgressTracker($"Applying {context} from {request.SourceUri} to {Host.Name}:{request.DestinationPath}", 0);
        string? resultJson = null;
        var command = BuildDirtyExtentCommand(request.SourceUri, context, destination, request.Timeout);
        try
        {
            await Host.RunAsync(ControllerGuard.Wrap(command, RunLock).WithOutputLines(line =>
            {
                if (line.StartsWith("progress ", StringComparison.Ordinal))
                {
                    var parts = line.Split(' ');
                    var done = long.Parse(parts[1], CultureInfo.InvariantCulture);
                    var total = long.Parse(parts[2], CultureInfo.InvariantCulture);
                    progress.Report(total > 0 ? (double)done / total : 1, total);
                }
                else if (line.StartsWith("result ", StringComparison.Ordinal))
                {
                    resultJson = line["result ".Length..];
                }
            }), cancellationToken).ConfigureAwait(false);
        }
        catch (ProgramNotFoundException ex)
        {
            throw new NbdToolMissingException(Host.Name, PythonCommand[0], "python3-libnbd", ex.Message);
        }
        catch (CommandFailedException ex) when (ex.StandardError.Contains("replicatools:", StringComparison.Ordinal))
        {
            var line = ex.StandardError.Split('\n').First(l => l.Contains("replicatools:", StringComparison.Ordinal));
            var detail = line[(line.IndexOf("replicatools:", StringComparison.Ordinal) + "replicatools:".Length)..].Trim();
            throw ex.ExitCode switch
            {
                DirtyExtentScript.ExitModuleMissing => new NbdToolMissingException(Host.Name, $"the Python 3 module 'nbd' for {PythonCommand[0]}", "python3-libnbd", detail),
                DirtyExtentScript.ExitContextNotOffered => new ReplicaException("NbdContextNotOffered", ReplicaErrorCategory.InvalidArgument,
                    $"On host '{Host.Name}': {detail}. Export the image with its bitmap (New-NbdExport -Server QemuNbd -Format qcow2 -Bitmap NAME, i.e. qemu-nbd -B NAME) and check the bitmap name.",
                    Host.Name, context, ex),
                DirtyExtentScript.ExitBadDestination => new ReplicaException("NbdIncrementalDestinationUnusable", ReplicaErrorCategory.InvalidArgument,
                    $"On host '{Host.Name}': {detail}.", Host.Name, request.DestinationPath, ex),
                _ => new ReplicaException("NbdIncrementalCopyFailed", ReplicaErrorCategory.ReadError,
                    $"On host '{Host.Name}', applying {context} from {request.SourceUri} to '{request.DestinationPath}' failed: {detail}", Host.Name, request.DestinationPath, ex),
            };
        }
        finally
        {
            progress.Complete();
        }

        if (resultJson is null)
        {
            throw new ReplicaException("NbdIncrementalCopyFailed", ReplicaErrorCategory.InvalidResult,
                $"On host '{Host.Name}', the dirty-extent copy to '{request.DestinationPath}' exited without printing its result line.", Host.Name, request.DestinationPath);
        }

        using var document = JsonDocument.Parse(resultJson);
        var root = document.RootElement;
        var size = root.GetProperty("size").GetInt64();
        var bytes = root.GetProperty("bytes").GetInt64();
        var zeroed = root.GetProperty("zeroed").GetInt64();
        var resized = root.GetProperty("resized").GetBoolean();
        if (resized)
        {
            OperationContext.Reporter.Warning($"On host '{Host.Name}', '{request.DestinationPath}' did not have the export's size ({size} bytes) and was resized before the dirty extents were applied.");
        }

        return new NbdCopyResult
        {
            HostName = Host.Name,
            SourceUri = request.SourceUri,
            Destination = destination,
            Kind = NbdCopyKind.Incremental,
            Tool = "python3-libnbd",
            Size = size,
            BytesCopied = bytes,
            BytesZeroed = zeroed,
            BytesSkipped = size - bytes - zeroed,
            Extents = root.GetProperty("extents").GetInt32(),
            DestinationResized = resized,
            Duration = stopwatch.Elapsed,
        };
    }

    /// <summary>A measurement abandoned because the copy failed: its own failure must not surface as an unobserved task exception.</summary>
    private static void Observe(Task task) => task.ContinueWith(t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);

    private async Task<(long Size, NbdAllocation? Allocation)> MeasureWithNbdInfoAsync(string uri, CancellationToken cancellationToken)
    {
        try
        {
            var allocation = await NbdInfo.GetAllocationAsync(Host, uri, cancellationToken).ConfigureAwait(false);
            if (allocation is not null)
            {
                return (allocation.Size, allocation);
            }

            var info = await NbdInfo.GetAsync(Host, uri, cancellationToken).ConfigureAwait(false);
            return (info.Size, null);
        }
        catch (NbdToolMissingException)
        {
            // nbdinfo ships with nbdcopy; if only nbdcopy is there, copy without knowing the allocation.
            return (0, null);
        }
    }

    private async Task<(long Size, NbdAllocation? Allocation)> MeasureWithQemuImgAsync(string uri, CancellationToken cancellationToken)
    {
        CommandResult map;
        try
        {
            map = await Host.RunAsync(new CommandSpec("qemu-img", "map", "-f", "raw", "--output=json", uri) { Timeout = TimeSpan.FromMinutes(10) }, cancellationToken).ConfigureAwait(false);
        }
        catch (ProgramNotFoundException ex)
        {
            throw new NbdToolMissingException(Host.Name, "qemu-img", "qemu-utils", ex.Message);
        }

        long data = 0, zero = 0;
        using var document = JsonDocument.Parse(map.StandardOutput);
        foreach (var extent in document.RootElement.EnumerateArray())
        {
            var length = extent.GetProperty("length").GetInt64();
            var isData = extent.TryGetProperty("data", out var value) && value.ValueKind == JsonValueKind.True;
            if (isData)
            {
                data += length;
            }
            else
            {
                zero += length;
            }
        }

        return (data + zero, new NbdAllocation(data, zero));
    }

    private async Task EnsureAbsentAsync(string destinationPath, CancellationToken cancellationToken)
    {
        var test = await Host.RunAsync(new CommandSpec("test", "-e", destinationPath) { Timeout = TimeSpan.FromSeconds(60), ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (test.ExitCode == 0)
        {
            throw DestinationExists(destinationPath);
        }
    }

    private ReplicaException DestinationExists(string destinationPath) =>
        new("NbdCopyDestinationExists", ReplicaErrorCategory.ResourceExists,
            $"On host '{Host.Name}', the copy destination '{destinationPath}' already exists. Remove it, choose another path, or allow overwriting.", Host.Name, destinationPath);

    private async Task DeleteQuietlyAsync(string path)
    {
        try
        {
            await Host.RunAsync(new CommandSpec("rm", "-f", "--", path) { Timeout = TimeSpan.FromSeconds(60) }, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ReplicaException or IOException or InvalidOperationException or TimeoutException)
        {
            OperationContext.Reporter.Warning($"On host '{Host.Name}', the temporary copy '{path}' of a failed copy could not be deleted: {ex.Message}. Delete it by hand.");
        }
    }

    private void ValidateDestination(string path)
    {
        if (string.IsNullOrEmpty(path) || !path.StartsWith('/') || path.EndsWith('/') || path.Contains('\0'))
        {
            throw new ReplicaException("NbdCopyInvalidArgument", ReplicaErrorCategory.InvalidArgument,
                $"The copy destination '{path}' on host '{Host.Name}' must be an absolute path of a file or device.", Host.Name, path);
        }
    }

    private void ValidateUri(string uri)
    {
        if (string.IsNullOrEmpty(uri) || !uri.StartsWith("nbd", StringComparison.Ordinal) || !uri.Contains("://", StringComparison.Ordinal))
        {
            throw new ReplicaException("NbdCopyInvalidArgument", ReplicaErrorCategory.InvalidArgument,
                $"'{uri}' is not an NBD URI (nbd://HOST:PORT/EXPORT, nbds://..., nbd+unix:///EXPORT?socket=PATH).", Host.Name, uri);
        }
    }

    // nbdcopy --progress=FD prints "N/100"; qemu-img convert -p prints "    (12.50/100%)".
    [GeneratedRegex(@"^\s*\(?\s*(?<percent>\d+(?:\.\d+)?)/100%?\)?\s*$")]
    private static partial Regex PercentLine();

    /// <summary>Turns fractions into Write-Progress records with an estimate of the time left; reports only changes.</summary>
    private sealed class ProgressTracker(string activity, long size)
    {
        private readonly Stopwatch stopwatch = Stopwatch.StartNew();
        private int lastPercent = -1;

        public void Report(double fraction, long? total = null)
        {
            var percent = (int)Math.Clamp(Math.Floor(fraction * 100), 0, 100);
            if (percent == lastPercent)
            {
                return;
            }

            lastPercent = percent;
            var bytes = total ?? size;
            var remaining = fraction > 0.01 ? (int)(stopwatch.Elapsed.TotalSeconds * (1 - fraction) / fraction) : -1;
            var status = bytes > 0 ? $"{percent}% of {FormatBytes(bytes)}" : $"{percent}%";
            OperationContext.Reporter.Progress(new OperationProgress(activity, status, percent, remaining));
        }

        public void Complete() => OperationContext.Reporter.Progress(new OperationProgress(activity, "Done", 100, 0, Completed: true));

        private static string FormatBytes(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):0.0} GiB" : $"{bytes / (double)(1L << 20):0.0} MiB";
    }
}
