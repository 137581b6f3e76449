namespace ReplicaTools.Core.Nbd;

/// <summary>
/// The python3-libnbd program that applies the dirty extents of a <c>qemu:dirty-bitmap:NAME</c> meta context to an
/// existing destination (file or block device). Run on the destination host as
/// <c>/usr/bin/python3 -c SCRIPT URI CONTEXT DEST</c>; /usr/bin/python3 because a python3 earlier on PATH (pyenv,
/// venv) may lack the Debian module.
/// </summary>
/// <remarks>
/// Output on standard output, one line each: <c>progress DONE TOTAL</c> (bytes, at most twice a second) and finally
/// <c>result {"size":..,"extents":..,"bytes":..,"resized":..}</c>. Failures print a line starting with
/// <c>replicatools:</c> on standard error and exit with: 3 module nbd missing (package python3-libnbd), 4 context not
/// offered, 5 no block status, 6 destination too small or missing, 7 NBD error.
/// </remarks>
public static class DirtyExtentScript
{
    public const int ExitModuleMissing = 3;
    public const int ExitContextNotOffered = 4;
    public const int ExitNoBlockStatus = 5;
    public const int ExitBadDestination = 6;
    public const int ExitNbdError = 7;

    public const string Source = """
import json, os, stat, sys, time
try:
    import nbd
except ImportError as error:
    sys.stderr.write("replicatools: python3-libnbd is not installed (%s)\n" % error)
    sys.exit(3)

uri, context, destination = sys.argv[1:4]
CHUNK = 4 << 20          # bytes per read; the NBD maximum request is 32 MiB
STATUS_SPAN = 1 << 30    # block status length per request (the count is 32-bit)
DEPTH = 16               # reads in flight


def fail(code, message):
    sys.stderr.write("replicatools: %s\n" % message)
    sys.exit(code)


def dirty_extents(handle, size):
    # Merged (offset, length) ranges whose dirty bit (bit 0) is set; servers may answer less than asked, so loop.
    extents, offset = [], 0
    while offset < size:
        seen = []

        def on_extents(metacontext, start, entries, error):
            if metacontext == context:
                position = start
                for i in range(0, len(entries), 2):
                    seen.append((position, entries[i], entries[i + 1]))
                    position += entries[i]
            return 0

        handle.block_status(min(size - offset, STATUS_SPAN), offset, on_extents)
        end = offset
        for start, length, flags in seen:
            length = min(length, size - start)
            if length <= 0:
                continue
            if flags & 1:
                if extents and extents[-1][0] + extents[-1][1] == start:
                    extents[-1] = (extents[-1][0], extents[-1][1] + length)
                else:
                    extents.append((start, length))
            end = max(end, start + length)
        if end <= offset:
            fail(5, "the server returned no block status for %s at offset %d" % (context, offset))
        offset = end
    return extents


def main():
    handle = nbd.NBD()
    handle.add_meta_context(context)
    handle.connect_uri(uri)
    if not handle.can_meta_context(context):
        fail(4, "the server at %s does not offer the metadata context %s" % (uri, context))
    size = handle.get_size()
    extents = dirty_extents(handle, size)
    total = sum(length for _, length in extents)

    try:
        fd = os.open(destination, os.O_WRONLY)   # never created here: an incremental patches a previous copy
    except FileNotFoundError:
        fail(6, "the destination %s does not exist; an incremental copy needs the previous full copy" % destination)
    resized = False
    if stat.S_ISREG(os.fstat(fd).st_mode):
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
            resized = True
    elif os.lseek(fd, 0, os.SEEK_END) < size:
        fail(6, "the destination %s holds fewer bytes than the source (%d)" % (destination, size))

    # Many extents are small (a 4 KiB guest write dirties one 64 KiB granule): keep up to DEPTH reads in flight
    # (aio_pread) instead of paying one round trip each; each chunk is written as soon as it arrives.
    requests = []
    for start, length in extents:
        position, end = start, start + length
        while position < end:
            count = min(CHUNK, end - position)
            requests.append((position, count))
            position += count
    requests.reverse()
    pending = {}
    done, last = 0, 0.0

    def submit():
        position, count = requests.pop()
        buffer = nbd.Buffer(count)
        pending[handle.aio_pread(buffer, position)] = (buffer, position)

    while requests and len(pending) < DEPTH:
        submit()
    while pending:
        handle.poll(-1)
        for cookie in [c for c in pending if handle.aio_command_completed(c)]:
            buffer, position = pending.pop(cookie)
            view = memoryview(buffer.to_bytearray())
            while view:
                written = os.pwrite(fd, view, position)
                view = view[written:]
                position += written
                done += written
            if requests:
                submit()
        now = time.monotonic()
        if now - last >= 0.5:
            print("progress %d %d" % (done, total), flush=True)
            last = now
    os.fsync(fd)
    os.close(fd)
    handle.shutdown()
    print("result " + json.dumps({"size": size, "extents": len(extents), "bytes": total, "resized": resized}), flush=True)


try:
    main()
except nbd.Error as error:
    fail(7, "NBD error: %s" % error)
""";
}
