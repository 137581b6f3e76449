using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Storage;

/// <summary>One side of a comparison: an image path (or nfs:// URL) and the host whose tools read it.</summary>
public sealed record ImageEndpoint(IReplicaHost Host, string Path, ReplicaSession? Session = null)
{
    public static ImageEndpoint For(ReplicaSession session, string path) => new(session.Host, path, session);

    public string HostName => Session?.HostName ?? Host.Name;
}

/// <summary>How Compare-DiskImage ran.</summary>
public sealed class CompareOptions
{
    public StorageOptions Storage { get; init; } = StorageOptions.Default;

    /// <summary>
    /// For images on two different hosts: the address the comparing host uses to reach the qemu-nbd export on the
    /// exporting host (default: the exporting host's SSH address). qemu-nbd binds to this address only.
    /// </summary>
    public string? NbdAddress { get; init; }
}

/// <summary>The answer of Compare-DiskImage.</summary>
public sealed class ImageComparison
{
    /// <summary>Same virtual size and the same content at every offset.</summary>
    public bool Identical { get; init; }

    /// <summary>
    /// The first byte offset whose content differs (exact: qemu-img reports the 512-byte sector, the bytes of that sector
    /// are then compared). When the sizes differ but the common part is identical, the size of the smaller image.
    /// Null when identical.
    /// </summary>
    public long? FirstDifferenceOffset { get; init; }

    public bool SizesDiffer => ReferenceSize != DifferenceSize;

    public required string ReferencePath { get; init; }

    public required string ReferenceHost { get; init; }

    public long ReferenceSize { get; init; }

    public string? ReferenceFormat { get; init; }

    public required string DifferencePath { get; init; }

    public required string DifferenceHost { get; init; }

    public long DifferenceSize { get; init; }

    public string? DifferenceFormat { get; init; }

    /// <summary>The host that ran qemu-img compare.</summary>
    public required string ComparedOn { get; init; }

    /// <summary>"qemu-img compare", or "qemu-img compare against a read-only qemu-nbd export on HOST".</summary>
    public required string Method { get; init; }

    /// <summary>True when an image was held by a running QEMU and read with force-share (-U): the answer may be stale.</summary>
    public bool ForceShared { get; init; }

    public required string Message { get; init; }

    public TimeSpan Duration { get; init; }

    /// <summary>The reference side's session, so the result pipes on.</summary>
    public ReplicaSession? Session { get; init; }

    public string HostName => ReferenceHost;

    public override string ToString() => Message;
}

/// <summary>
/// Compares two images' guest-visible content with <c>qemu-img compare</c>. Images one host can open (the same host, or
/// nfs:// URLs) are compared there; images on two hosts are compared by exporting one read-only with qemu-nbd (a random
/// port, a random export name, stopped afterwards) and running qemu-img compare on the other host against the nbd:// URL.
/// </summary>
/// <remarks>
/// Sizes: qemu-img compare is run without -s (strict), because strict mode also fails on different allocation (a
/// mirrored VDI or raw target is fully allocated while its qcow2 source is sparse: same content, different allocation).
/// Different virtual sizes are reported separately: such images are never Identical; FirstDifferenceOffset is the first
/// differing byte of the common part or, if that is equal, the smaller size.
/// </remarks>
public static partial class DiskImageComparer
{
    [GeneratedRegex(@"Content mismatch at offset (?<o>\d+)!", RegexOptions.CultureInvariant)]
    private static partial Regex MismatchPattern();

    public static async Task<ImageComparison> CompareAsync(ImageEndpoint reference, ImageEndpoint difference, CompareOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(difference);
        options ??= new CompareOptions();
        var started = DateTimeOffset.UtcNow;
        var referenceLocation = ImageLocation.Parse(reference.Path, "ReferencePath");
        var differenceLocation = ImageLocation.Parse(difference.Path, "DifferencePath");

        // Which host can open both? The same host; nfs:// URLs from any host; otherwise export one side over NBD.
        IReplicaHost runner;
        ImageEndpoint? exported = null;
        if (SameHost(reference.Host, difference.Host) || referenceLocation.IsNfsUrl && differenceLocation.IsNfsUrl)
        {
            runner = reference.Host;
        }
        else if (referenceLocation.IsNfsUrl)
        {
            runner = difference.Host;
        }
        else if (differenceLocation.IsNfsUrl)
        {
            runner = reference.Host;
        }
        else
        {
            // The machine running the module always reaches a remote host's SSH address, so export from the remote side when one side is local.
            exported = reference.Host.IsLocal && !difference.Host.IsLocal ? difference : reference;
            runner = ReferenceEquals(exported, reference) ? difference.Host : reference.Host;
        }

        var referenceService = new DiskImageService(ReferenceEquals(exported, reference) ? reference.Host : runner, reference.Session, options.Storage);
        var differenceService = new DiskImageService(ReferenceEquals(exported, difference) ? difference.Host : runner, difference.Session, options.Storage);
        var (referenceInfo, referenceLocks) = await referenceService.ReadInfoAsync(referenceLocation, true, cancellationToken).ConfigureAwait(false);
        var referenceInUse = referenceLocks.InUse;
        var (differenceInfo, differenceLocks) = await differenceService.ReadInfoAsync(differenceLocation, true, cancellationToken).ConfigureAwait(false);
        var differenceInUse = differenceLocks.InUse;
        var forceShare = referenceInUse || differenceInUse;

        NbdExport? export = null;
        try
        {
            var referenceOperand = new CompareOperand(referenceLocation.Text, referenceInfo.Format, referenceLocation.IsNfsUrl);
            var differenceOperand = new CompareOperand(differenceLocation.Text, differenceInfo.Format, differenceLocation.IsNfsUrl);
            var method = "qemu-img compare";
            if (exported is not null)
            {
                var exportedLocation = ReferenceEquals(exported, reference) ? referenceLocation : differenceLocation;
                var exportedInfo = ReferenceEquals(exported, reference) ? referenceInfo : differenceInfo;
                var exportedInUse = ReferenceEquals(exported, reference) ? referenceInUse : differenceInUse;
                export = await NbdExport.StartAsync(exported.Host, runner, exportedLocation, exportedInfo.Format, exportedInUse, options, cancellationToken).ConfigureAwait(false);
                var operand = new CompareOperand(export.Url, "raw", false);
                if (ReferenceEquals(exported, reference))
                {
                    referenceOperand = operand;
                }
                else
                {
                    differenceOperand = operand;
                }

                method = $"qemu-img compare against a read-only qemu-nbd export on '{exported.Host.Name}'";
            }

            var arguments = new List<string> { "qemu-img", "compare", "-p", "-f", referenceOperand.Format, "-F", differenceOperand.Format };
            if (forceShare)
            {
                arguments.Add("-U");
            }

            arguments.Add(referenceOperand.Text);
            arguments.Add(differenceOperand.Text);
            var touchesNfs = referenceOperand.IsNfs || differenceOperand.IsNfs;
            var spec = StorageCommands.ImageCommand(options.Storage, touchesNfs, options.Storage.LongCommandTimeout, arguments.ToArray());
            if (touchesNfs)
            {
                // The kill-timeout for nfs:// protects against a hung server; a whole-image compare needs the long timeout.
                spec = StorageCommands.ImageCommand(new StorageOptions { NfsTimeout = options.Storage.LongCommandTimeout }, true, options.Storage.LongCommandTimeout, arguments.ToArray());
            }

            var result = await StorageCommands.RunWithProgressAsync(runner, spec, "Compare-DiskImage", $"Comparing {reference.Path} with {difference.Path} on {runner.Name}", cancellationToken).ConfigureAwait(false);

            long? firstDifference = null;
            if (result.ExitCode == 1)
            {
                var match = MismatchPattern().Match(result.StandardOutput);
                if (!match.Success)
                {
                    throw CompareFailed(result, reference, difference);
                }

                var sector = long.Parse(match.Groups["o"].Value, CultureInfo.InvariantCulture);
                firstDifference = await RefineAsync(runner, referenceOperand, referenceInfo.VirtualSize, differenceOperand, differenceInfo.VirtualSize, sector, forceShare, options.Storage, cancellationToken).ConfigureAwait(false);
            }
            else if (result.ExitCode != 0)
            {
                var failing = result.StandardError.Contains(differenceOperand.Text, StringComparison.Ordinal) && !result.StandardError.Contains(referenceOperand.Text, StringComparison.Ordinal)
                    ? differenceLocation : referenceLocation;
                if (StorageCommands.IsNotFound(result.StandardError) || StorageCommands.IsNfsUnreachable(result.StandardError) || result.ExitCode == 137)
                {
                    throw StorageCommands.ImageError(result, failing, "comparing the image");
                }

                throw CompareFailed(result, reference, difference);
            }

            var sizesDiffer = referenceInfo.VirtualSize != differenceInfo.VirtualSize;
            var smaller = Math.Min(referenceInfo.VirtualSize, differenceInfo.VirtualSize);
            if (firstDifference is null && sizesDiffer)
            {
                firstDifference = smaller;
            }

            var identical = firstDifference is null;
            var sizes = sizesDiffer
                ? $"The virtual sizes differ: reference {Text.ByteSize.Format(referenceInfo.VirtualSize)} ({referenceInfo.VirtualSize} bytes), difference {Text.ByteSize.Format(differenceInfo.VirtualSize)} ({differenceInfo.VirtualSize} bytes). "
                : string.Empty;
            var message = identical
                ? $"The images are identical ({Text.ByteSize.Format(referenceInfo.VirtualSize)} compared on host '{runner.Name}')."
                : sizesDiffer && firstDifference == smaller
                    ? sizes + $"The first {Text.ByteSize.Format(smaller)} are identical and the rest of the larger image reads as zeros."
                    : sizes + $"The content differs first at byte offset {firstDifference} (0x{firstDifference:X}).";
            if (forceShare)
            {
                message += " A running QEMU holds one of the images: it was read with force-share, so the answer may already be stale.";
            }

            return new ImageComparison
            {
                Identical = identical,
                FirstDifferenceOffset = firstDifference,
                ReferencePath = reference.Path,
                ReferenceHost = reference.HostName,
                ReferenceSize = referenceInfo.VirtualSize,
                ReferenceFormat = referenceInfo.Format,
                DifferencePath = difference.Path,
                DifferenceHost = difference.HostName,
                DifferenceSize = differenceInfo.VirtualSize,
                DifferenceFormat = differenceInfo.Format,
                ComparedOn = runner.Name,
                Method = method,
                ForceShared = forceShare,
                Message = message,
                Duration = DateTimeOffset.UtcNow - started,
                Session = reference.Session,
            };
        }
        finally
        {
            if (export is not null)
            {
                await export.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    internal static bool SameHost(IReplicaHost a, IReplicaHost b) =>
        ReferenceEquals(a, b)
        || a.IsLocal && b.IsLocal
        || a is ISshHost sa && b is ISshHost sb
           && string.Equals(sa.Options.HostName, sb.Options.HostName, StringComparison.OrdinalIgnoreCase)
           && sa.Options.Port == sb.Options.Port
           && sa.Options.UserName == sb.Options.UserName;

    /// <summary>qemu-img reports the 512-byte sector of the first difference: read that sector of both images and find the byte.</summary>
    private static async Task<long> RefineAsync(IReplicaHost runner, CompareOperand reference, long referenceSize, CompareOperand difference, long differenceSize,
        long sector, bool forceShare, StorageOptions options, CancellationToken cancellationToken)
    {
        try
        {
            var referenceBytes = await ReadBytesAsync(runner, reference, referenceSize, sector, forceShare, options, cancellationToken).ConfigureAwait(false);
            var differenceBytes = await ReadBytesAsync(runner, difference, differenceSize, sector, forceShare, options, cancellationToken).ConfigureAwait(false);
            var length = Math.Max(referenceBytes.Length, differenceBytes.Length);
            for (var i = 0; i < length; i++)
            {
                var r = i < referenceBytes.Length ? referenceBytes[i] : (byte)0;
                var d = i < differenceBytes.Length ? differenceBytes[i] : (byte)0;
                if (r != d)
                {
                    return sector + i;
                }
            }
        }
        catch (ReplicaException ex)
        {
            OperationContext.Reporter.Warning($"On host '{runner.Name}', the exact byte of the first difference could not be read ({ex.Message}); reporting the start of its 512-byte sector.");
        }

        return sector;
    }

    private static async Task<byte[]> ReadBytesAsync(IReplicaHost host, CompareOperand operand, long size, long offset, bool forceShare, StorageOptions options, CancellationToken cancellationToken)
    {
        var length = Math.Min(512, size - offset);
        if (length <= 0)
        {
            return Array.Empty<byte>();
        }

        var arguments = new List<string> { "qemu-io", "-r", "-f", operand.Format };
        if (forceShare)
        {
            arguments.Add("-U");
        }

        arguments.AddRange(new[] { "-c", string.Create(CultureInfo.InvariantCulture, $"read -v {offset} {length}"), operand.Text });
        var result = await StorageCommands.RunAsync(host, StorageCommands.ImageCommand(options, operand.IsNfs, options.CommandTimeout, arguments.ToArray()), cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded || result.StandardOutput.Contains("read failed", StringComparison.Ordinal))
        {
            throw new CommandFailedException(result);
        }

        return ParseHexDump(result.StandardOutput, offset, (int)length);
    }

    /// <summary>Parses qemu-io's "read -v" dump: "0000c000:  00 01 ... 0f  ................", 16 bytes a line.</summary>
    internal static byte[] ParseHexDump(string dump, long offset, int length)
    {
        var bytes = new byte[length];
        var seen = 0;
        foreach (var line in dump.Split('\n'))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0 || !long.TryParse(line.AsSpan(0, colon), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var address))
            {
                continue;
            }

            for (var i = 0; i < 16; i++)
            {
                var position = colon + 3 + i * 3;
                if (position + 2 > line.Length || !byte.TryParse(line.AsSpan(position, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var value))
                {
                    break;
                }

                var index = address - offset + i;
                if (index >= 0 && index < length)
                {
                    bytes[index] = value;
                    seen++;
                }
            }
        }

        if (seen != length)
        {
            throw new ReplicaException(StorageErrorIds.CompareFailed, ReplicaErrorCategory.InvalidResult, $"qemu-io printed {seen} of {length} bytes at offset {offset}.");
        }

        return bytes;
    }

    private static ReplicaException CompareFailed(CommandResult result, ImageEndpoint reference, ImageEndpoint difference) =>
        new(StorageErrorIds.CompareFailed, ReplicaErrorCategory.InvalidResult,
            $"On host '{result.HostName}', comparing '{reference.Path}' (host '{reference.HostName}') with '{difference.Path}' (host '{difference.HostName}') failed with exit code {result.ExitCode}: " +
            StorageCommands.TrimQemuMessage(result.StandardError + " " + result.StandardOutput.Replace("\r", " ", StringComparison.Ordinal)),
            result.HostName, reference.Path);

    private sealed record CompareOperand(string Text, string Format, bool IsNfs);

    /// <summary>A read-only qemu-nbd export of one image, alive until disposed (then killed on its host).</summary>
    private sealed class NbdExport : IAsyncDisposable
    {
        private readonly IHostProcess process;

        private NbdExport(IHostProcess process, string url)
        {
            this.process = process;
            Url = url;
        }

        public string Url { get; }

        public static async Task<NbdExport> StartAsync(IReplicaHost exporter, IReplicaHost client, ImageLocation image, string format, bool forceShare, CompareOptions options, CancellationToken cancellationToken)
        {
            var address = options.NbdAddress ?? (exporter is ISshHost ssh ? ssh.Options.HostName : "127.0.0.1");
            var exportName = "rt-" + Convert.ToHexString(RandomNumberGenerator.GetBytes(8)).ToLowerInvariant();
            for (var attempt = 1; ; attempt++)
            {
                var port = Random.Shared.Next(20000, 60000).ToString(CultureInfo.InvariantCulture);
                var arguments = new List<string>
                {
                    "qemu-nbd", "--read-only", "--persistent", "--shared=8", $"--bind={address}", $"--port={port}", $"--export-name={exportName}",
                };
                if (forceShare)
                {
                    // qemu-nbd has no -U; the image options carry force-share.
                    arguments.AddRange(new[] { "--image-opts", $"driver={format},read-only=on,force-share=on,file.driver=file,file.filename={image.Text.Replace(",", ",,", StringComparison.Ordinal)}" });
                }
                else
                {
                    arguments.AddRange(new[] { $"--format={format}", image.Text });
                }

                var spec = new CommandSpec(arguments);
                OperationContext.Reporter.Verbose($"[{exporter.Name}] {spec.CommandLine}");

                // Guarded: a --persistent qemu-nbd would serve the image forever after a killed controller.
                var process = await exporter.StartAsync(ControllerGuard.Wrap(spec), cancellationToken).ConfigureAwait(false);
                var host = address.Contains(':', StringComparison.Ordinal) ? $"[{address}]" : address;
                var url = $"nbd://{host}:{port}/{exportName}";
                bool ready;
                try
                {
                    ready = await WaitReadyAsync(process, client, url, options.Storage, cancellationToken).ConfigureAwait(false);
                }
                catch
                {
                    await process.DisposeAsync().ConfigureAwait(false);
                    throw;
                }

                if (ready)
                {
                    return new NbdExport(process, url);
                }

                var stderr = process.StandardError;
                await process.DisposeAsync().ConfigureAwait(false);
                if (stderr.Contains("Address already in use", StringComparison.Ordinal) && attempt < 5)
                {
                    continue;
                }

                throw new ReplicaException(StorageErrorIds.NbdExportFailed, ReplicaErrorCategory.ConnectionError,
                    $"Exporting '{image.Text}' from host '{exporter.Name}' with qemu-nbd on {address}:{port} for host '{client.Name}' failed: " +
                    (stderr.Trim().Length > 0 ? StorageCommands.TrimQemuMessage(stderr) : $"host '{client.Name}' could not connect to {url} within 15 s."),
                    exporter.Name, image.Text)
                {
                    RecommendedAction = $"Check that '{client.Name}' reaches '{address}' on TCP ports 20000-60000, or give the exporting host's address with -NbdAddress.",
                };
            }
        }

        private static async Task<bool> WaitReadyAsync(IHostProcess process, IReplicaHost client, string url, StorageOptions options, CancellationToken cancellationToken)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
            while (DateTime.UtcNow < deadline)
            {
                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
                if (process.HasExited)
                {
                    return false;
                }

                var probe = new CommandSpec("timeout", "-s", "KILL", "10", "qemu-img", "info", "--output=json", url) { Timeout = TimeSpan.FromSeconds(25), ThrowOnFailure = false };
                var result = await StorageCommands.RunAsync(client, probe, cancellationToken).ConfigureAwait(false);
                if (result.Succeeded)
                {
                    return true;
                }
            }

            return false;
        }

        public async ValueTask DisposeAsync()
        {
            await process.KillAsync().ConfigureAwait(false);
            await process.DisposeAsync().ConfigureAwait(false);
        }
    }
}
