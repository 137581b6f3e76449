using System.Globalization;
using System.Text;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>The checksum -Verify compares: SHA-256 over the SHA-256 digests of the image's 1 MiB chunks.</summary>
public sealed record ImageDigest(string Checksum, long Size);

/// <summary>
/// Checksums a disk image the same way on both sides: an NBD export (python3-libnbd, holes and zero extents from
/// base:allocation are not read) or a file/block device (holes found with SEEK_DATA/SEEK_HOLE are not read). A chunk
/// that is a hole gets the digest of a zero chunk, so sparse and allocated-zero images compare equal, as their content does.
/// </summary>
public static class ImageChecksum
{
    /// <param name="length">Checksum only the first LENGTH bytes (a block device may be larger than the disk it holds); null for all.</param>
    public static async Task<ImageDigest> ComputeAsync(IReplicaHost host, string source, long? length, TimeSpan timeout, Action<double>? progress, CancellationToken cancellationToken,
        string? runLock = null)
    {
        // Guarded: a checksum of a whole disk outlives a killed controller by hours otherwise.
        var command = ControllerGuard.Wrap(new CommandSpec(NbdCloneCopier.Python, "-c", Script, source, (length ?? -1).ToString(CultureInfo.InvariantCulture)) { Timeout = timeout, ThrowOnFailure = false }, runLock);
        var result = await host.RunAsync(command.WithOutputLines(line =>
        {
            if (line.StartsWith("progress ", StringComparison.Ordinal) && double.TryParse(line["progress ".Length..], NumberStyles.Float, CultureInfo.InvariantCulture, out var percent))
            {
                progress?.Invoke(percent);
            }
        }), cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            if (result.StandardError.Contains("No module named 'nbd'", StringComparison.Ordinal))
            {
                throw new ProgramNotFoundException(host.Name, "python3-libnbd", "-Verify checksums the point-in-time export on the VM host with python3-libnbd");
            }

            throw new CommandFailedException(result);
        }

        var line = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .LastOrDefault(l => l.StartsWith("sha256-1m:", StringComparison.Ordinal)) ?? throw new CommandFailedException(result);
        var parts = line.Split(' ');
        return new ImageDigest(parts[0], long.Parse(parts[1], CultureInfo.InvariantCulture));
    }

    internal const string Script = """
        import hashlib, os, sys
        CH = 1 << 20
        src = sys.argv[1]
        limit = int(sys.argv[2]) if len(sys.argv) > 2 else -1
        zeros = []
        if src.startswith("nbd://") or src.startswith("nbd+unix://"):
            import nbd
            h = nbd.NBD()
            h.add_meta_context("base:allocation")
            h.connect_uri(src)
            size = h.get_size()
            off = 0
            while off < size:
                got = []
                def cb(mc, o, entries, err):
                    if mc == "base:allocation":
                        for i in range(0, len(entries), 2):
                            got.append((o, entries[i], entries[i + 1])); o += entries[i]
                    return 0
                h.block_status(min(size - off, 2**31 - 2**20), off, cb)
                if not got:
                    break
                for o, ln, fl in got:
                    if fl & 2:
                        zeros.append((o, min(o + ln, size)))
                off = got[-1][0] + got[-1][1]
            read = lambda o, n: h.pread(n, o)
        else:
            fd = os.open(src, os.O_RDONLY)
            size = os.lseek(fd, 0, os.SEEK_END)
            if os.path.isfile(src):
                pos = 0
                while pos < size:
                    try:
                        data = os.lseek(fd, pos, os.SEEK_DATA)
                    except OSError:
                        data = size
                    if data > pos:
                        zeros.append((pos, data))
                    if data >= size:
                        break
                    try:
                        pos = os.lseek(fd, data, os.SEEK_HOLE)
                    except OSError:
                        pos = size
            read = lambda o, n: os.pread(fd, n, o)
        if 0 <= limit < size:
            size = limit
        outer = hashlib.sha256()
        zero_digest = {}
        zi, off, last = 0, 0, -1
        while off < size:
            n = min(CH, size - off)
            while zi < len(zeros) and zeros[zi][1] <= off:
                zi += 1
            if zi < len(zeros) and zeros[zi][0] <= off and zeros[zi][1] >= off + n:
                if n not in zero_digest:
                    zero_digest[n] = hashlib.sha256(bytes(n)).digest()
                outer.update(zero_digest[n])
            else:
                outer.update(hashlib.sha256(read(off, n)).digest())
            off += n
            pct = int(100 * off / size)
            if pct != last:
                print("progress %d" % pct, flush=True); last = pct
        print("sha256-1m:%s %d" % (outer.hexdigest(), size), flush=True)
        """;
}
