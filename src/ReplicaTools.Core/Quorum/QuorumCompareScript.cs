using System.Globalization;
using System.Text.Json;

namespace ReplicaTools.Core.Quorum;

/// <summary>
/// The python3-libnbd program Test-QuorumDisk runs on the VM host against QEMU's own read-only NBD exports of the quorum's
/// child nodes: one pass over all replicas at once. Ranges every replica reports as zero (NBD block status,
/// base:allocation, NBD_STATE_ZERO) are skipped; the rest is read in 4 MiB chunks. A chunk that differs is read again once
/// (a guest write may have landed between the replicas' reads), then voted on per 512-byte sector as QEMU's quorum
/// votes: the largest group of identical replicas wins if it has at least vote-threshold members, else the sector has no
/// majority (the guest's reads there fail with QUORUM_FAILURE). Run as <c>/usr/bin/python3 -c SCRIPT THRESHOLD URI...</c>.
/// </summary>
/// <remarks>
/// Output on standard output, one line each: <c>progress DONE TOTAL</c> (bytes, at most twice a second) and finally
/// <c>result {json}</c> (see <see cref="QuorumCompareResult"/>). Failures print a line starting with <c>replicatools:</c> on
/// standard error and exit with 3 (module nbd missing: package python3-libnbd) or 7 (NBD error).
/// </remarks>
public static class QuorumCompareScript
{
    public const int ExitModuleMissing = 3;
    public const int ExitNbdError = 7;

    public const string Source = """
import json, sys, time
try:
    import nbd
except ImportError as error:
    sys.stderr.write("replicatools: python3-libnbd is not installed (%s)\n" % error)
    sys.exit(3)

threshold = int(sys.argv[1])
uris = sys.argv[2:]
CHUNK = 4 << 20
SECTOR = 512
STATE_ZERO = 2


def fail(code, message):
    sys.stderr.write("replicatools: %s\n" % message)
    sys.exit(code)


def zero_everywhere(handles, offset, length):
    # True only when every replica reports the whole range as reading zeros; a partial answer means "read it".
    for handle in handles:
        if not handle.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
            return False
        seen = []

        def on_extents(metacontext, start, entries, error):
            if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
                position = start
                for i in range(0, len(entries), 2):
                    seen.append((position, entries[i], entries[i + 1]))
                    position += entries[i]
            return 0

        handle.block_status(length, offset, on_extents)
        covered = offset
        for start, count, flags in seen:
            if not flags & STATE_ZERO:
                return False
            covered = start + count
        if covered < offset + length:
            return False
    return True


def vote(blocks):
    # QEMU's quorum_vote: the largest group of identical versions wins (the first one on a tie).
    groups = {}
    for index, block in enumerate(blocks):
        groups.setdefault(block, []).append(index)
    ordered = sorted(groups.values(), key=lambda g: (-len(g), g[0]))
    return ordered[0], ordered


def main():
    handles = []
    for uri in uris:
        handle = nbd.NBD()
        handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        handle.connect_uri(uri)
        handles.append(handle)
    sizes = [h.get_size() for h in handles]
    size = min(sizes)
    n = len(handles)
    first = [None] * n
    differing = [0] * n
    regions = [0] * n
    open_region = [False] * n
    no_majority = {"first": None, "bytes": 0, "regions": 0, "groups": None}
    no_majority_open = False
    compared = 0
    skipped = 0
    last = 0.0
    offset = 0
    while offset < size:
        length = min(CHUNK, size - offset)
        if zero_everywhere(handles, offset, length):
            skipped += length
            open_region = [False] * n
            no_majority_open = False
        else:
            blocks = [h.pread(length, offset) for h in handles]
            compared += length
            if any(b != blocks[0] for b in blocks[1:]):
                blocks = [h.pread(length, offset) for h in handles]
            if all(b == blocks[0] for b in blocks[1:]):
                open_region = [False] * n
                no_majority_open = False
            else:
                views = [memoryview(b) for b in blocks]
                for sector in range(0, length, SECTOR):
                    parts = [bytes(v[sector:sector + SECTOR]) for v in views]
                    if all(p == parts[0] for p in parts[1:]):
                        open_region = [False] * n
                        no_majority_open = False
                        continue
                    winner, groups = vote(parts)
                    position = offset + sector
                    if len(winner) < threshold:
                        if no_majority["first"] is None:
                            no_majority["first"] = position
                            no_majority["groups"] = groups
                        no_majority["bytes"] += len(parts[0])
                        if not no_majority_open:
                            no_majority["regions"] += 1
                        no_majority_open = True
                        open_region = [False] * n
                        continue
                    no_majority_open = False
                    reference = parts[winner[0]]
                    for i in range(n):
                        if i in winner:
                            open_region[i] = False
                            continue
                        if first[i] is None:
                            first[i] = position + next(k for k in range(len(reference)) if parts[i][k] != reference[k])
                        differing[i] += len(reference)
                        if not open_region[i]:
                            regions[i] += 1
                        open_region[i] = True
        offset += length
        now = time.monotonic()
        if now - last >= 0.5:
            print("progress %d %d" % (offset, size), flush=True)
            last = now
    for handle in handles:
        handle.shutdown()
    replicas = [{"first": first[i], "bytes": differing[i], "regions": regions[i]} for i in range(n)]
    print("result " + json.dumps({"size": size, "sizes": sizes, "compared": compared, "skipped": skipped,
                                  "replicas": replicas, "no_majority": no_majority}), flush=True)


try:
    main()
except nbd.Error as error:
    fail(7, "NBD error: %s" % error)
""";

    /// <summary>Parses the script's <c>result</c> line.</summary>
    /// <exception cref="JsonException">The line is not the script's result.</exception>
    public static QuorumCompareResult ParseResult(string line)
    {
        const string prefix = "result ";
        if (!line.StartsWith(prefix, StringComparison.Ordinal))
        {
            throw new JsonException($"not a result line: {line}");
        }

        var root = JsonDocument.Parse(line[prefix.Length..]).RootElement;
        var replicas = root.GetProperty("replicas").EnumerateArray().Select(r => new QuorumCompareReplica(
            r.GetProperty("first").ValueKind == JsonValueKind.Number ? r.GetProperty("first").GetInt64() : null,
            r.GetProperty("bytes").GetInt64(),
            r.GetProperty("regions").GetInt32())).ToArray();
        var noMajority = root.GetProperty("no_majority");
        var groups = noMajority.GetProperty("groups").ValueKind == JsonValueKind.Array
            ? noMajority.GetProperty("groups").EnumerateArray().Select(g => (IReadOnlyList<int>)g.EnumerateArray().Select(i => i.GetInt32()).ToArray()).ToArray()
            : Array.Empty<IReadOnlyList<int>>();
        return new QuorumCompareResult(
            root.GetProperty("size").GetInt64(),
            root.GetProperty("sizes").EnumerateArray().Select(s => s.GetInt64()).ToArray(),
            root.GetProperty("compared").GetInt64(),
            root.GetProperty("skipped").GetInt64(),
            replicas,
            noMajority.GetProperty("first").ValueKind == JsonValueKind.Number ? noMajority.GetProperty("first").GetInt64() : null,
            noMajority.GetProperty("bytes").GetInt64(),
            noMajority.GetProperty("regions").GetInt32(),
            groups);
    }

    /// <summary>Parses a <c>progress DONE TOTAL</c> line; false for any other line.</summary>
    public static bool TryParseProgress(string line, out long done, out long total)
    {
        done = total = 0;
        var parts = line.Split(' ');
        return parts.Length == 3 && parts[0] == "progress"
            && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out done)
            && long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out total);
    }
}

/// <summary>One replica's comparison with the majority: first differing byte, differing bytes (in sectors), runs.</summary>
public sealed record QuorumCompareReplica(long? FirstDifference, long DifferingBytes, int DifferingRegions);

/// <summary>
/// What the comparison script found. <see cref="NoMajorityGroups"/> are the groups of identical replicas (indexes into
/// the replicas as given) at <see cref="NoMajorityAt"/>, largest first.
/// </summary>
public sealed record QuorumCompareResult(
    long Size,
    IReadOnlyList<long> Sizes,
    long ComparedBytes,
    long SkippedBytes,
    IReadOnlyList<QuorumCompareReplica> Replicas,
    long? NoMajorityAt,
    long NoMajorityBytes,
    int NoMajorityRegions,
    IReadOnlyList<IReadOnlyList<int>> NoMajorityGroups);
