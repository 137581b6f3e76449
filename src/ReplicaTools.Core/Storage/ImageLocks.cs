using System.Text.Json;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Storage;

/// <summary>
/// What QEMU's image locks on one file say: which permissions a QEMU process holds and which it refuses to share.
/// </summary>
/// <remarks>
/// QEMU's file driver (block/file-posix.c, raw_apply_lock_bytes) takes shared OFD byte-range locks on every image file it
/// opens, whatever the format on top and however it was opened (-drive, -blockdev, libvirt, qemu-nbd,
/// qemu-storage-daemon): one byte at offset 100 + i for each permission bit i it holds, and one at 200 + i for each it
/// does not share. Bits (include/block/block-common.h): 0 consistent-read, 1 write, 2 write-unchanged, 3 resize,
/// 4 graph-mod (QEMU before 6.1). A QEMU started with <c>file.locking=off</c> takes none and cannot be seen; nfs:// URLs
/// (libnfs) take none either.
/// </remarks>
public sealed class ImageLockState
{
    /// <summary>The path as probed.</summary>
    public required string Path { get; init; }

    public bool Exists { get; init; }

    /// <summary>Permissions some process holds on the file (bytes 100+), by QEMU's names: consistent-read, write, ...</summary>
    public IReadOnlyList<string> Held { get; init; } = Array.Empty<string>();

    /// <summary>Permissions some process refuses to share (bytes 200+): e.g. write, for a VM's disk.</summary>
    public IReadOnlyList<string> Unshared { get; init; } = Array.Empty<string>();

    /// <summary>The processes holding the locks, where the probe may look (/proc/PID/fdinfo; all of them as root).</summary>
    public IReadOnlyList<ImageLockHolder> Holders { get; init; } = Array.Empty<ImageLockHolder>();

    /// <summary>True when any process holds any of QEMU's lock bytes on the file: a QEMU has it open.</summary>
    public bool InUse => Held.Count > 0 || Unshared.Count > 0;

    /// <summary>True when the holder may write to it (write or resize held).</summary>
    public bool HeldForWriting => Held.Contains("write") || Held.Contains("resize");

    /// <summary>"qemu-system-x86_64 (pid 12891) holds consistent-read, write and does not share write", for messages.</summary>
    public string Describe()
    {
        var who = Holders.Count == 0 ? "a process" : string.Join(", ", Holders.Select(h => $"{h.Program} (pid {h.ProcessId})"));
        var what = Held.Count > 0 ? $"holds {string.Join(", ", Held)}" : "holds QEMU's lock";
        return Unshared.Count > 0 ? $"{who} {what} and does not share {string.Join(", ", Unshared)}" : $"{who} {what}";
    }
}

/// <summary>A process that holds QEMU image locks on a file.</summary>
public sealed record ImageLockHolder(int ProcessId, string Program);

/// <summary>
/// The one in-use probe: reads QEMU's image locks with fcntl(F_OFD_GETLK) from python3 on the host that has the file
/// (a remote host over SSH needs only Debian's python3). Every cmdlet that deletes, overwrites or exports an image
/// writable asks it first, for every format: qemu-img's own lock error only appears for some formats and openers (a
/// raw image held by a VM reads fine with qemu-img info).
/// </summary>
public static class ImageLocks
{
    /// <summary>Exit code of the probe when python3 lacks what it needs (never on Debian 12's python3).</summary>
    public const int ExitUnsupported = 3;

    /// <summary>
    /// The probe program: <c>/usr/bin/python3 -c SOURCE PATH...</c>. A directory argument is walked (regular files only,
    /// symbolic links not followed). Prints one JSON object per file on standard output:
    /// <c>{"path":..,"exists":bool,"held":[..],"unshared":[..],"holders":[{"pid":..,"program":..}],"error":..}</c>.
    /// </summary>
    public const string Source = """
import fcntl, json, os, stat, struct, sys

F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)  # Linux 3.15+; the constant is in Python 3.9+
PERMS = ["consistent-read", "write", "write-unchanged", "resize", "graph-mod"]
FLOCK = "hhqqi"                                  # struct flock: l_type, l_whence, l_start, l_len, l_pid
PAD = b"\0" * 16


def locked(fd, offset, length, base):
    # A conflicting lock inside QEMU's byte range; a lock reaching outside it (a pidfile-style whole-file lock) is not QEMU's.
    request = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, length, 0) + PAD
    answer = fcntl.fcntl(fd, F_OFD_GETLK, request)
    kind, _, start, size, _ = struct.unpack(FLOCK, answer[:struct.calcsize(FLOCK)])
    return kind != fcntl.F_UNLCK and start >= base and 0 < size and start + size <= base + 32


def holders(st):
    # Processes with the file open whose open file description carries OFD locks (fdinfo lists a file's locks per fd).
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                other = os.stat("/proc/%s/fd/%s" % (pid, fd))
                if other.st_ino != st.st_ino or other.st_dev != st.st_dev:
                    continue
                with open("/proc/%s/fdinfo/%s" % (pid, fd)) as info:
                    if "OFDLCK" not in info.read():
                        continue
                with open("/proc/%s/cmdline" % pid, "rb") as cmdline:
                    program = os.path.basename(cmdline.read().split(b"\0")[0].decode("utf-8", "replace"))
                found[int(pid)] = program or "?"
            except OSError:
                continue
    return [{"pid": p, "program": found[p]} for p in sorted(found)]


def probe(path):
    result = {"path": path, "exists": True, "held": [], "unshared": [], "holders": []}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)   # O_NONBLOCK: never hang on a FIFO
    except FileNotFoundError:
        result["exists"] = False
        return result
    except OSError as error:
        result["error"] = "cannot open it to read its locks: %s" % error.strerror
        return result
    try:
        st = os.fstat(fd)
        for base, key in ((100, "held"), (200, "unshared")):
            result[key] = [PERMS[i] if i < len(PERMS) else "bit %d" % i for i in range(32) if locked(fd, base + i, 1, base)]
    except OSError as error:
        result["error"] = "F_OFD_GETLK failed: %s" % error.strerror
        return result
    finally:
        os.close(fd)
    if result["held"] or result["unshared"]:
        result["holders"] = holders(st)
    return result


for argument in sys.argv[1:]:
    if os.path.isdir(argument) and not os.path.islink(argument):
        for directory, _, names in os.walk(argument):
            for name in sorted(names):
                path = os.path.join(directory, name)
                if stat.S_ISREG(os.lstat(path).st_mode):
                    print(json.dumps(probe(path)), flush=True)
    else:
        print(json.dumps(probe(argument)), flush=True)
""";

    /// <summary>The probe's command line for <paramref name="paths"/> (absolute paths on the host; directories are walked).</summary>
    public static CommandSpec BuildCommand(IEnumerable<string> paths) =>
        new(new[] { Nbd.NbdCopier.PythonProgram, "-c", Source }.Concat(paths)) { Timeout = TimeSpan.FromMinutes(2) };

    /// <summary>Reads the locks of one file on <paramref name="host"/>. nfs:// URLs carry no locks: they are reported free.</summary>
    /// <exception cref="ReplicaException">python3 is missing on the host, or the file cannot be opened to read its locks.</exception>
    public static async Task<ImageLockState> ProbeAsync(IReplicaHost host, string path, CancellationToken cancellationToken = default) =>
        (await ProbeManyAsync(host, new[] { path }, cancellationToken).ConfigureAwait(false)).Single();

    /// <summary>Reads the locks of several files (or every regular file below a directory) in one command.</summary>
    public static async Task<IReadOnlyList<ImageLockState>> ProbeManyAsync(IReplicaHost host, IReadOnlyCollection<string> paths, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        var nfs = paths.Where(p => p.StartsWith("nfs://", StringComparison.OrdinalIgnoreCase)).ToList();
        var local = paths.Except(nfs).ToList();
        var states = nfs.Select(p => new ImageLockState { Path = p, Exists = true }).ToList();
        if (local.Count == 0)
        {
            return states;
        }

        CommandResult result;
        try
        {
            result = await host.RunAsync(BuildCommand(local), cancellationToken).ConfigureAwait(false);
        }
        catch (ProgramNotFoundException ex)
        {
            throw new ReplicaException(StorageErrorIds.ImageLockProbeFailed, ReplicaErrorCategory.NotInstalled,
                $"On host '{host.Name}', whether a running QEMU holds '{string.Join("', '", local)}' cannot be told: {Nbd.NbdCopier.PythonProgram} is missing ({ex.Message}). Nothing was changed.",
                host.Name, local[0], ex)
            {
                RecommendedAction = $"Install python3 on '{host.Name}' (apt-get install python3): the in-use probe reads QEMU's image locks with it.",
            };
        }

        foreach (var line in result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var state = Parse(line);
            if (state.Error is { } error)
            {
                throw new ReplicaException(StorageErrorIds.ImageLockProbeFailed, ReplicaErrorCategory.ReadError,
                    $"On host '{host.Name}', whether a running QEMU holds '{state.State.Path}' cannot be told: {error}. Nothing was changed.", host.Name, state.State.Path)
                {
                    RecommendedAction = "Connect as a user that may read the file (root, or the owner of the VM's images).",
                };
            }

            states.Add(state.State);
        }

        return states;
    }

    /// <summary>Parses one line of the probe's output (see <see cref="Source"/>).</summary>
    public static (ImageLockState State, string? Error) Parse(string jsonLine)
    {
        using var document = JsonDocument.Parse(jsonLine);
        var root = document.RootElement;
        static string[] Names(JsonElement root, string key) =>
            root.TryGetProperty(key, out var list) ? list.EnumerateArray().Select(e => e.GetString()!).ToArray() : Array.Empty<string>();
        var holders = root.TryGetProperty("holders", out var h)
            ? h.EnumerateArray().Select(e => new ImageLockHolder(e.GetProperty("pid").GetInt32(), e.GetProperty("program").GetString()!)).ToArray()
            : Array.Empty<ImageLockHolder>();
        var state = new ImageLockState
        {
            Path = root.GetProperty("path").GetString()!,
            Exists = root.GetProperty("exists").GetBoolean(),
            Held = Names(root, "held"),
            Unshared = Names(root, "unshared"),
            Holders = holders,
        };
        return (state, root.TryGetProperty("error", out var error) ? error.GetString() : null);
    }

    /// <summary>
    /// Throws <see cref="StorageErrorIds.ImageInUse"/> when a running QEMU holds the file; <paramref name="what"/> says what
    /// would have happened ("removing it", "overwriting it with a clone", ...). Returns the state otherwise.
    /// </summary>
    public static async Task<ImageLockState> EnsureNotInUseAsync(IReplicaHost host, string path, string what, CancellationToken cancellationToken = default)
    {
        var state = await ProbeAsync(host, path, cancellationToken).ConfigureAwait(false);
        if (state.InUse)
        {
            throw InUse(host.Name, state, what);
        }

        return state;
    }

    /// <summary>The ImageInUse error for a file that <paramref name="state"/> shows held.</summary>
    public static ReplicaException InUse(string hostName, ImageLockState state, string what, string? recommendedAction = null) =>
        new(StorageErrorIds.ImageInUse, ReplicaErrorCategory.ResourceUnavailable,
            $"On host '{hostName}', '{state.Path}' is in use: {state.Describe()} (QEMU's image locks). Refusing {what}; nothing was changed.", hostName, state.Path)
        {
            RecommendedAction = recommendedAction ?? "Stop or detach the VM (or qemu-nbd, qemu-storage-daemon) that has the image open first.",
        };
}
