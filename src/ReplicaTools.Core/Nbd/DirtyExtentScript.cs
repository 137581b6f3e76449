namespace ReplicaTools.Core.Nbd;

/// <summary>
/// The python3-libnbd program that applies the dirty extents of a <c>qemu:dirty-bitmap:NAME</c> meta context to an
/// existing destination (file or block device). Run on the destination host as
/// <c>/usr/bin/python3 -c SCRIPT URI CONTEXT DEST</c>; /usr/bin/python3 because a python3 earlier on PATH (pyenv,
/// venv) may lack the Debian module.
/// </summary>
/// <remarks>
/// <para>
/// Dirty extents that read as zero are never copied as data: the program asks for the <c>base:allocation</c> context
/// alongside the bitmap and zeroes the dirty parts the server reports as NBD_STATE_ZERO (NBD protocol, "base:allocation
/// metadata context") without reading them; of what it reads, every 4 KiB block of zeros is zeroed instead of written
/// (the same block size nbdcopy's sparse detection uses, so the destination ends up as sparse as a fresh full copy).
/// Zeroing punches a hole (fallocate PUNCH_HOLE|KEEP_SIZE: deallocated in a file, discarded-and-zeroed on a block
/// device), else FALLOC_FL_ZERO_RANGE, else writes zeros.
/// </para>
/// <para>
/// Output on standard output, one line each: <c>progress DONE TOTAL</c> (bytes, at most twice a second) and finally
/// <c>result {"size":..,"extents":..,"bytes":..,"zeroed":..,"resized":..}</c>: bytes = read from the export and written,
/// zeroed = dirty bytes that read as zero and were zeroed. Failures print a line starting with <c>replicatools:</c> on
/// standard error and exit with: 3 module nbd missing (package python3-libnbd), 4 context not offered, 5 no block
/// status, 6 destination too small or missing, 7 NBD error.
/// </para>
/// </remarks>
public static class DirtyExtentScript
{
    public const int ExitModuleMissing = 3;
    public const int ExitContextNotOffered = 4;
    public const int ExitNoBlockStatus = 5;
    public const int ExitBadDestination = 6;
    public const int ExitNbdError = 7;

    public const string Source = """
import ctypes, errno, json, os, stat, sys, time
try:
    import nbd
except ImportError as error:
    sys.stderr.write("replicatools: python3-libnbd is not installed (%s)\n" % error)
    sys.exit(3)

uri, context, destination = sys.argv[1:4]
ALLOCATION = "base:allocation"
STATE_ZERO = 2           # base:allocation flag NBD_STATE_ZERO: the extent reads as zeros
CHUNK = 4 << 20          # bytes per read; the NBD maximum request is 32 MiB
BLOCK = 4096             # zero detection block (nbdcopy's sparse default)
STATUS_SPAN = 1 << 30    # block status length per request (the count is 32-bit)
DEPTH = 16               # reads in flight
ZEROS = bytes(CHUNK)
ZERO_BLOCK = bytes(BLOCK)


def fail(code, message):
    sys.stderr.write("replicatools: %s\n" % message)
    sys.exit(code)


def add(ranges, start, length):
    # Appends (start, length) to a sorted list of ranges, merging it with the last one when they touch or overlap.
    if ranges and ranges[-1][0] + ranges[-1][1] >= start:
        last = ranges[-1]
        ranges[-1] = (last[0], max(last[0] + last[1], start + length) - last[0])
    else:
        ranges.append((start, length))


def extents(handle, size, zero_known):
    # (dirty, zero): merged ranges whose dirty bit (bit 0 of the bitmap context) is set, and ranges base:allocation
    # reports as reading zero. Servers may answer less than asked, so loop; zero ranges are kept only where the
    # bitmap context answered too (the rest is read, and zero detection covers it).
    dirty, zero, offset = [], [], 0
    while offset < size:
        seen = {context: [], ALLOCATION: []}

        def on_extents(metacontext, start, entries, error):
            if metacontext in seen:
                position = start
                for i in range(0, len(entries), 2):
                    seen[metacontext].append((position, entries[i], entries[i + 1]))
                    position += entries[i]
            return 0

        handle.block_status(min(size - offset, STATUS_SPAN), offset, on_extents)
        end = offset
        for start, length, flags in seen[context]:
            length = min(length, size - start)
            if length <= 0:
                continue
            if flags & 1:
                add(dirty, start, length)
            end = max(end, start + length)
        if end <= offset:
            fail(5, "the server returned no block status for %s at offset %d" % (context, offset))
        if zero_known:
            for start, length, flags in seen[ALLOCATION]:
                stop = min(start + length, end)
                if flags & STATE_ZERO and stop > start:
                    add(zero, start, stop - start)
        offset = end
    return dirty, zero


def split(dirty, zero):
    # The dirty ranges cut at the zero ranges (both sorted and merged): [(offset, length, reads_as_zero)].
    pieces, j = [], 0
    for start, length in dirty:
        position, end = start, start + length
        while position < end:
            while j < len(zero) and zero[j][0] + zero[j][1] <= position:
                j += 1
            if j < len(zero) and zero[j][0] <= position:
                stop = min(end, zero[j][0] + zero[j][1])
                pieces.append((position, stop - position, True))
            else:
                stop = min(end, zero[j][0]) if j < len(zero) else end
                pieces.append((position, stop - position, False))
            position = stop
    return pieces


def zero_runs(data, offset):
    # [(offset, length, is_zero)] runs of data read at offset: zero detection by whole, aligned 4 KiB blocks.
    if data == ZEROS[:len(data)]:
        return [(offset, len(data), True)]
    if ZERO_BLOCK not in data:
        return [(offset, len(data), False)]
    runs, view, position, end = [], memoryview(data), offset, offset + len(data)
    while position < end:
        block_end = min(end, (position // BLOCK + 1) * BLOCK)
        is_zero = block_end - position == BLOCK and view[position - offset:block_end - offset] == ZERO_BLOCK
        if runs and runs[-1][2] == is_zero:
            runs[-1] = (runs[-1][0], runs[-1][1] + block_end - position, is_zero)
        else:
            runs.append((position, block_end - position, is_zero))
        position = block_end
    return runs


class Zeroer:
    # Makes a range of the destination read as zeros without writing data where the kernel can: punch a hole
    # (PUNCH_HOLE|KEEP_SIZE; on a block device a discard that guarantees zeros), else ZERO_RANGE, else write zeros.
    PUNCH_HOLE, KEEP_SIZE, ZERO_RANGE = 0x02, 0x01, 0x10

    def __init__(self, fd):
        self.fd = fd
        self.modes = [self.PUNCH_HOLE | self.KEEP_SIZE, self.ZERO_RANGE | self.KEEP_SIZE]
        libc = ctypes.CDLL(None, use_errno=True)
        self.fallocate = getattr(libc, "fallocate64", libc.fallocate)
        self.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]

    def zero(self, offset, length):
        while self.modes:
            if self.fallocate(self.fd, self.modes[0], offset, length) == 0:
                return
            code = ctypes.get_errno()
            if code not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
                raise OSError(code, os.strerror(code))
            self.modes.pop(0)   # this destination cannot; do not ask again
        while length > 0:
            written = os.pwrite(self.fd, ZEROS[:min(length, CHUNK)], offset)
            offset += written
            length -= written


def main():
    handle = nbd.NBD()
    handle.add_meta_context(context)
    handle.add_meta_context(ALLOCATION)
    handle.connect_uri(uri)
    if not handle.can_meta_context(context):
        fail(4, "the server at %s does not offer the metadata context %s" % (uri, context))
    size = handle.get_size()
    dirty, zero = extents(handle, size, handle.can_meta_context(ALLOCATION))
    total = sum(length for _, length in dirty)

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
    zeroer = Zeroer(fd)

    # Dirty parts the server says read as zero are zeroed without reading them; the rest is read with up to DEPTH
    # requests in flight (aio_pread; many extents are small: a 4 KiB guest write dirties a 64 KiB granule) and each
    # chunk is written, its zero blocks zeroed, as soon as it arrives.
    requests, copied, zeroed = [], 0, 0
    for start, length, reads_as_zero in split(dirty, zero):
        if reads_as_zero:
            zeroer.zero(start, length)
            zeroed += length
            continue
        position, end = start, start + length
        while position < end:
            count = min(CHUNK, end - position)
            requests.append((position, count))
            position += count
    requests.reverse()
    pending = {}
    last = 0.0

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
            data = buffer.to_bytearray()
            for run_start, run_length, is_zero in zero_runs(data, position):
                if is_zero:
                    zeroer.zero(run_start, run_length)
                    zeroed += run_length
                    continue
                view = memoryview(data)[run_start - position:run_start - position + run_length]
                at = run_start
                while view:
                    written = os.pwrite(fd, view, at)
                    view = view[written:]
                    at += written
                copied += run_length
            if requests:
                submit()
        now = time.monotonic()
        if now - last >= 0.5:
            print("progress %d %d" % (copied + zeroed, total), flush=True)
            last = now
    os.fsync(fd)
    os.close(fd)
    handle.shutdown()
    print("result " + json.dumps({"size": size, "extents": len(dirty), "bytes": copied, "zeroed": zeroed, "resized": resized}), flush=True)


try:
    main()
except nbd.Error as error:
    fail(7, "NBD error: %s" % error)
""";
}
