using System.Globalization;
using System.Text;
using System.Text.Json;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// INTERIM copier, kept deliberately minimal and separate: the full NBD copier (nbdcopy / qemu-img convert with
/// progress) and the python3-libnbd dirty-extent copier are being built on branch feature/nbd (src/ReplicaTools.Core/Nbd/).
/// When that lands, <see cref="NbdCloneOperation"/> switches to it and this file goes away.
/// </summary>
public sealed class InterimNbdCopier : ICloneCopier
{
    public const string Python = "/usr/bin/python3";

    public async Task<CopyOutcome> CopyFullAsync(IReplicaHost host, NbdExportAddress source, string target, bool targetIsBlockDevice, int? connections,
        TimeSpan timeout, Action<double> progress, CancellationToken cancellationToken)
    {
        var dataBytes = await AllocatedBytesAsync(host, source, cancellationToken).ConfigureAwait(false);
        var nbdcopy = new List<string> { "nbdcopy", "--progress=1", "--flush" };
        if (connections is { } n)
        {
            // nbdcopy caps connections at its thread count (default: the number of cores).
            nbdcopy.AddRange(new[] { "-C", n.ToString(CultureInfo.InvariantCulture), "-T", n.ToString(CultureInfo.InvariantCulture) });
        }

        nbdcopy.AddRange(new[] { "--", source.Uri, target });
        try
        {
            var result = await StreamingCommand.RunAsync(host, nbdcopy, timeout, line => ParseFraction(line, progress), null, cancellationToken).ConfigureAwait(false);
            if (result.ExitCode != 0)
            {
                throw new CommandFailedException(result);
            }

            return new CopyOutcome(dataBytes, "nbdcopy");
        }
        catch (ProgramNotFoundException)
        {
            OperationContext.Reporter.Warning($"nbdcopy is not installed on host '{host.Name}' (package libnbd-bin); copying with qemu-img convert, which is slower.");
        }

        var convert = new List<string> { "qemu-img", "convert", "-p", "-f", "raw", "-O", "raw" };
        if (targetIsBlockDevice)
        {
            convert.Add("-n");
        }

        if (connections is { } m)
        {
            convert.AddRange(new[] { "-m", Math.Min(m, 16).ToString(CultureInfo.InvariantCulture), "-W" });
        }

        convert.AddRange(new[] { source.Uri, target });
        var converted = await StreamingCommand.RunAsync(host, convert, timeout, line => ParseFraction(line, progress), null, cancellationToken).ConfigureAwait(false);
        if (converted.ExitCode != 0)
        {
            throw new CommandFailedException(converted);
        }

        await host.RunAsync(new CommandSpec("sync", target) { Timeout = TimeSpan.FromMinutes(30) }, cancellationToken).ConfigureAwait(false);
        return new CopyOutcome(dataBytes, "qemu-img convert");
    }

    public async Task<CopyOutcome> CopyDirtyAsync(IReplicaHost host, NbdExportAddress source, string metaContext, string target,
        TimeSpan timeout, Action<double> progress, CancellationToken cancellationToken)
    {
        var result = await StreamingCommand.RunAsync(host, new[] { Python, "-", source.Uri, metaContext, target }, timeout,
            line => ParseFraction(line, progress), Encoding.UTF8.GetBytes(DirtyCopyScript), cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            if (result.StandardError.Contains("No module named 'nbd'", StringComparison.Ordinal))
            {
                throw new ProgramNotFoundException(host.Name, "python3-libnbd", result.StandardError);
            }

            throw new CommandFailedException(result);
        }

        var summary = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault(l => l.StartsWith('{'))
            ?? throw new CommandFailedException(result);
        using var json = JsonDocument.Parse(summary);
        return new CopyOutcome(json.RootElement.GetProperty("bytes").GetInt64(), "dirty-extent copier (python3-libnbd)", json.RootElement.GetProperty("extents").GetInt32());
    }

    /// <summary>Bytes that are neither holes nor zeros in the export (base:allocation), i.e. what a sparse copier transfers.</summary>
    private static async Task<long> AllocatedBytesAsync(IReplicaHost host, NbdExportAddress source, CancellationToken cancellationToken)
    {
        var totals = await host.RunAsync(new CommandSpec("nbdinfo", "--map", "--totals", "--", source.Uri) { Timeout = TimeSpan.FromMinutes(10), ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (totals.ExitCode != 0)
        {
            OperationContext.Reporter.Verbose($"[{host.Name}] nbdinfo --map --totals failed; the clone result counts every byte as copied: {totals.StandardError.Trim()}");
            return -1;
        }

        long data = 0;
        foreach (var line in totals.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // "  2147483648  50.0%   3 hole,zero"
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length >= 3 && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var bytes)
                && int.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out var type) && (type & 2) == 0)
            {
                data += bytes;
            }
        }

        return data;
    }

    /// <summary>Progress from nbdcopy ("37/100"), qemu-img ("(37.50/100%)") and the scripts ("progress 37.5").</summary>
    internal static void ParseFraction(string line, Action<double> progress)
    {
        var text = line.Trim().TrimStart('(').Replace("%)", string.Empty, StringComparison.Ordinal);
        if (text.StartsWith("progress ", StringComparison.Ordinal))
        {
            text = text["progress ".Length..] + "/100";
        }

        var slash = text.IndexOf("/100", StringComparison.Ordinal);
        if (slash > 0 && double.TryParse(text[..slash], NumberStyles.Float, CultureInfo.InvariantCulture, out var percent))
        {
            progress(Math.Clamp(percent, 0, 100));
        }
    }

    /// <summary>python3-libnbd: copies the extents the meta context marks dirty (bit 0) into an existing file or device, in place.</summary>
    internal const string DirtyCopyScript = """
        import json, os, sys
        import nbd
        uri, ctx, dest = sys.argv[1:4]
        h = nbd.NBD()
        h.add_meta_context(ctx)
        h.connect_uri(uri)
        if not h.can_meta_context(ctx):
            sys.exit("the NBD server does not offer the meta context " + ctx)
        size = h.get_size()
        extents, off = [], 0
        while off < size:
            got = []
            def cb(mc, o, entries, err):
                if mc == ctx:
                    for i in range(0, len(entries), 2):
                        got.append((o, entries[i], entries[i + 1])); o += entries[i]
                return 0
            h.block_status(min(size - off, 2**31 - 2**20), off, cb)
            if not got:
                sys.exit("the NBD server returned no extents at offset %d" % off)
            for o, ln, fl in got:
                ln = min(ln, size - o)
                if fl & 1:
                    if extents and extents[-1][0] + extents[-1][1] == o:
                        extents[-1] = (extents[-1][0], extents[-1][1] + ln)
                    else:
                        extents.append((o, ln))
            off = got[-1][0] + got[-1][1]
        total = sum(l for _, l in extents)
        fd = os.open(dest, os.O_WRONLY)
        if os.lseek(fd, 0, os.SEEK_END) < size:
            sys.exit("the destination %s is smaller than the export (%d bytes)" % (dest, size))
        done, last = 0, -1.0
        for o, ln in extents:
            p = o
            while p < o + ln:
                n = min(8 << 20, o + ln - p)
                os.pwrite(fd, h.pread(n, p), p)
                p += n; done += n
                pct = round(100.0 * done / total, 1) if total else 100.0
                if pct - last >= 1:
                    print("progress %.1f" % pct, flush=True); last = pct
        os.fsync(fd)
        os.close(fd)
        h.shutdown()
        print(json.dumps({"extents": len(extents), "bytes": total, "size": size}), flush=True)
        """;
}
