using System.Globalization;
using ReplicaTools.Core;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Storage;

/// <summary>
/// Field report (issue 9, case 1): a raw image that a running QEMU opened with -blockdev was reported free, and
/// Remove-DiskImage deleted it. The in-use probe reads QEMU's own image locks, so it must see every format and every
/// way QEMU opens a file; every operation that deletes, overwrites or exports writable must refuse, and keep the file.
/// </summary>
public sealed class ImageInUseTests : IDisposable
{
    private readonly string directory = Path.Combine("/tmp", $"rtinuse-{Guid.NewGuid().ToString("N")[..8]}");
    private readonly DiskImageService service = new(LocalHost.Instance);

    public ImageInUseTests() => Directory.CreateDirectory(directory);

    public void Dispose() => Directory.Delete(directory, recursive: true);

    /// <summary>How the holder opens the image; {0} is the image path, {1} a pid file, {2} a free TCP port.</summary>
    public static TheoryData<string, string, string, string> Openers => new()
    {
        // The field report: -blockdev driver=raw over file.driver=file, attached to a virtio-blk device.
        { "blockdev raw + virtio-blk", "raw", "qemu-system-x86_64", "-machine pc,accel=tcg -S -nodefaults -display none -blockdev driver=raw,node-name=d1,file.driver=file,file.filename={0} -device virtio-blk-pci,drive=d1 -daemonize -pidfile {1}" },
        { "drive raw, no device (read-only use)", "raw", "qemu-system-x86_64", "-machine none -S -nodefaults -display none -drive if=none,id=d0,format=raw,file={0} -daemonize -pidfile {1}" },
        { "drive qcow2 if=virtio", "qcow2", "qemu-system-x86_64", "-machine pc,accel=tcg -S -nodefaults -display none -drive if=virtio,format=qcow2,file={0} -daemonize -pidfile {1}" },
        { "drive vdi if=virtio", "vdi", "qemu-system-x86_64", "-machine pc,accel=tcg -S -nodefaults -display none -drive if=virtio,format=vdi,file={0} -daemonize -pidfile {1}" },
        { "qemu-nbd writable raw", "raw", "qemu-nbd", "-f raw --bind=127.0.0.1 --port={2} --persistent --fork --pid-file={1} {0}" },
        { "qemu-nbd read-only qcow2", "qcow2", "qemu-nbd", "-f qcow2 --read-only --bind=127.0.0.1 --port={2} --persistent --fork --pid-file={1} {0}" },
        { "qemu-storage-daemon writable NBD export of raw", "raw", "qemu-storage-daemon", "--blockdev driver=file,node-name=f0,filename={0} --blockdev driver=raw,node-name=r0,file=f0 --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port={2} --export type=nbd,id=e0,node-name=r0,writable=on --daemonize --pidfile {1}" },
    };

    [Theory]
    [MemberData(nameof(Openers))]
    public async Task AnImageHeldByQemu_IsInUse_AndIsNeitherRemovedNorReplacedNorExportedWritable(string opener, string format, string program, string arguments)
    {
        Tool.Require(program);
        var path = Path.Combine(directory, "disk." + format);
        Tool.Run("qemu-img", "create", "-q", "-f", format, path, "64M");
        var before = Identity(path);
        using (var holder = ProcessHolder.Start(program, arguments, path))
        {
            await AssertHeldAndUntouchedAsync(path, program, opener);
        }

        // The holder is gone: the same probe says free, and the operations it blocked now work.
        var free = await ImageLocks.ProbeAsync(LocalHost.Instance, path);
        Assert.False(free.InUse, opener);
        Assert.False((await service.GetAsync(path)).InUse, opener);
        Assert.Equal(before, Identity(path));
        await service.RemoveAsync(path);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task TheBackingFileOfARunningVmsOverlay_IsInUse()
    {
        // qemu-img info reads a backing file that a VM holds read-only without complaint; deleting it breaks the VM.
        var backing = Path.Combine(directory, "base.raw");
        var overlay = Path.Combine(directory, "overlay.qcow2");
        Tool.Run("qemu-img", "create", "-q", "-f", "raw", backing, "64M");
        Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", overlay);
        using var holder = ProcessHolder.Start("qemu-system-x86_64",
            "-machine pc,accel=tcg -S -nodefaults -display none -drive if=virtio,format=qcow2,file={0} -daemonize -pidfile {1}", overlay);

        var locks = await ImageLocks.ProbeAsync(LocalHost.Instance, backing);
        Assert.Equal(new[] { "consistent-read" }, locks.Held);
        Assert.Contains("write", locks.Unshared);
        await AssertHeldAndUntouchedAsync(backing, "qemu-system-x86_64", "backing file");
    }

    [Fact]
    public async Task ARawDiskOfALibvirtDomain_IsInUse()
    {
        await using var lab = await LibvirtLab.StartAsync();
        var path = Path.Combine(lab.Directory, "vda.raw");
        Tool.Run("qemu-img", "create", "-q", "-f", "raw", path, "64M");
        var domain = lab.CreateDomain(lab.UniqueName("inuse"), persistent: false, (path, "raw"));

        await AssertHeldAndUntouchedAsync(path, "qemu-system-x86_64", "libvirt domain " + domain);
        lab.Destroy(domain);
        Assert.False((await ImageLocks.ProbeAsync(LocalHost.Instance, path)).InUse);
    }

    [Fact]
    public async Task ALockThatIsNotQemus_DoesNotCountAsInUse_AndAFileThatIsMissingIsReportedAsSuch()
    {
        // A pid-file style whole-file POSIX lock covers QEMU's bytes too, but is not a QEMU holding an image.
        var path = Path.Combine(directory, "plain.raw");
        Tool.Run("qemu-img", "create", "-q", "-f", "raw", path, "1M");
        using var locker = ProcessHolder.StartForeground("flock", "--exclusive", path, "sleep", "60");
        var state = await ImageLocks.ProbeAsync(LocalHost.Instance, path);
        Assert.True(state.Exists);
        Assert.False(state.InUse); // flock(2) locks are a different kind; QEMU's are fcntl OFD byte ranges

        var pidLocked = Path.Combine(directory, "q.pid");
        using var qemu = ProcessHolder.Start("qemu-system-x86_64", "-machine none -S -nodefaults -display none -daemonize -pidfile {1}", pidLocked, pidFileIsTarget: true);
        Assert.False((await ImageLocks.ProbeAsync(LocalHost.Instance, pidLocked)).InUse); // QEMU's whole-file pid-file lock

        var missing = await ImageLocks.ProbeAsync(LocalHost.Instance, Path.Combine(directory, "none.raw"));
        Assert.False(missing.Exists);
        Assert.False(missing.InUse);
    }

    [Fact]
    public void ProbeOutput_IsParsed()
    {
        var (state, error) = ImageLocks.Parse("""{"path": "/x/d.raw", "exists": true, "held": ["consistent-read", "write"], "unshared": ["write"], "holders": [{"pid": 12891, "program": "qemu-system-x86_64"}]}""");
        Assert.Null(error);
        Assert.True(state.InUse);
        Assert.True(state.HeldForWriting);
        Assert.Equal("qemu-system-x86_64 (pid 12891) holds consistent-read, write and does not share write", state.Describe());
        var (_, failed) = ImageLocks.Parse("""{"path": "/x/d.raw", "exists": true, "held": [], "unshared": [], "holders": [], "error": "cannot open it to read its locks: Permission denied"}""");
        Assert.Contains("Permission denied", failed);
    }

    private async Task AssertHeldAndUntouchedAsync(string path, string program, string opener)
    {
        var before = Identity(path);
        var locks = await ImageLocks.ProbeAsync(LocalHost.Instance, path);
        Assert.True(locks.InUse, opener);
        Assert.Contains(locks.Holders, h => h.Program == program);

        var image = await service.GetAsync(path);
        Assert.True(image.InUse, opener);
        Assert.Contains(program, image.InUseBy);

        var remove = await Assert.ThrowsAsync<ReplicaException>(() => service.RemoveAsync(path));
        Assert.Equal(StorageErrorIds.ImageInUse, remove.ErrorId);
        Assert.Contains(program, remove.Message);
        var replace = await Assert.ThrowsAsync<ReplicaException>(() => service.CreateAsync(path, 64L << 20, DiskImageFormat.Raw, force: true));
        Assert.Equal(StorageErrorIds.ImageInUse, replace.ErrorId);

        var state = Path.Combine(directory, "nbd-state");
        var export = await Assert.ThrowsAsync<ReplicaException>(() => new NbdExportManager(LocalHost.Instance, state).PlanAsync(new NbdExportRequest
        {
            Name = "inuse",
            Path = path,
            Server = NbdServerKind.NbdServer,
        }));
        Assert.Equal(StorageErrorIds.ImageInUse, export.ErrorId);

        Assert.Equal(before, Identity(path));
    }

    /// <summary>Inode, size and modification time: the file is the same one, unchanged.</summary>
    private static string Identity(string path)
    {
        var info = new FileInfo(path);
        return $"{Tool.Run("stat", "-c", "%i", path).Trim()}:{info.Length}:{info.LastWriteTimeUtc.Ticks}";
    }

    /// <summary>A process that opens the image (daemonising with a pid file, or in the foreground) until disposed.</summary>
    private sealed class ProcessHolder : IDisposable
    {
        private readonly int pid;
        private readonly string? pidFile;
        private readonly System.Diagnostics.Process? foreground;

        private ProcessHolder(int pid, string? pidFile, System.Diagnostics.Process? foreground)
        {
            this.pid = pid;
            this.pidFile = pidFile;
            this.foreground = foreground;
        }

        public static ProcessHolder Start(string program, string arguments, string image, bool pidFileIsTarget = false)
        {
            var pidFile = pidFileIsTarget ? image : image + ".holder.pid";
            var port = Ports.Free("127.0.0.1").ToString(CultureInfo.InvariantCulture);
            var words = arguments.Split(' ').Select(w => string.Format(CultureInfo.InvariantCulture, w, image, pidFile, port));
            Tool.Run(program, words, TimeSpan.FromSeconds(60));
            for (var i = 0; i < 100 && !(File.Exists(pidFile) && File.ReadAllText(pidFile).Trim().Length > 0); i++)
            {
                Thread.Sleep(50);
            }

            return new ProcessHolder(int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture), pidFileIsTarget ? null : pidFile, null);
        }

        public static ProcessHolder StartForeground(string program, params string[] arguments)
        {
            var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(program, arguments) { RedirectStandardInput = true })!;
            Thread.Sleep(300);
            return new ProcessHolder(process.Id, null, process);
        }

        public void Dispose()
        {
            try
            {
                System.Diagnostics.Process.GetProcessById(pid).Kill();
            }
            catch (ArgumentException)
            {
            }

            foreground?.WaitForExit(10_000);
            for (var i = 0; i < 1200 && File.Exists($"/proc/{pid}/stat") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z", StringComparison.Ordinal); i++)
            {
                Thread.Sleep(25);
            }

            if (pidFile is not null)
            {
                File.Delete(pidFile);
            }
        }
    }
}
