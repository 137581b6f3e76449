using System.Diagnostics;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Benchmarks;

/// <summary>
/// Time for a live mirror of a 4 GiB image (50% random data, 50% holes) from NFS1 to NFS2 to reach sync, against
/// qemu-img convert of the same image to the same server, in the same run. The image is generated once and cached.
/// </summary>
public static class MirrorBenchmark
{
    private const long MiB = 1024 * 1024;

    public static async Task<int> RunAsync(int sizeGiB, string[] formats, int runs)
    {
        var cache = Path.Combine(Environment.GetEnvironmentVariable("REPLICATOOLS_BENCH_CACHE") ?? "/var/tmp/replicatools-bench", $"mirror-{sizeGiB}g-50pct.raw");
        EnsureImage(cache, sizeGiB * 1024L);
        var directory = Path.Combine("/tmp", "rtbench-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(directory);
        await using var nfs = await NfsLab.StartAsync(new NfsLabOptions { VolumeSize = Math.Max(16L, sizeGiB * 4L) << 30 });
        var (nfs1, nfs2) = (nfs[0], nfs[1]);
        var table = new Table("format", "destination", "runs", "qemu-img convert s", "mirror to ready s", "convert MiB/s", "mirror MiB/s", "ratio", "ratio per run", "allocated convert/mirror MiB");
        var ratios = new List<(string Format, double Ratio)>();
        var load = File.ReadAllText("/proc/loadavg").Split(' ')[..3];
        try
        {
            foreach (var format in formats)
            {
                var source = $"bench.{format}";
                var setup = Stopwatch.StartNew();
                Tool.Run("qemu-img", new[] { "convert", "-f", "raw", "-O", format, cache, nfs1.Url(source) }, TimeSpan.FromMinutes(30));
                Console.Error.WriteLine($"{format}: source written to NFS1 in {setup.Elapsed.TotalSeconds:0.0} s");

                foreach (var reuse in new[] { false, true })
                {
                    var converts = new List<double>();
                    var mirrors = new List<double>();
                    var allocated = string.Empty;
                    for (var run = 0; run < runs; run++)
                    {
                        var convertTarget = $"convert-{reuse}.{format}";
                        var mirrorTarget = $"mirror-{reuse}.{format}";
                        if (reuse)
                        {
                            Tool.Run("qemu-img", "create", "-q", "-f", format, nfs2.Url(mirrorTarget), $"{sizeGiB}G");
                        }

                        // Both read the same source through the same page cache: alternate who goes first.
                        if (run % 2 == 0)
                        {
                            converts.Add(Convert(format, nfs1.Url(source), nfs2.Url(convertTarget)));
                            mirrors.Add((await MirrorAsync(directory, nfs1.Url(source), format, nfs2.Url(mirrorTarget), reuse)).TotalSeconds);
                        }
                        else
                        {
                            mirrors.Add((await MirrorAsync(directory, nfs1.Url(source), format, nfs2.Url(mirrorTarget), reuse)).TotalSeconds);
                            converts.Add(Convert(format, nfs1.Url(source), nfs2.Url(convertTarget)));
                        }

                        allocated = $"{Allocated(nfs2.LocalPath(convertTarget))} / {Allocated(nfs2.LocalPath(mirrorTarget))}";
                        Console.Error.WriteLine($"{format} {(reuse ? "reuse" : "create")} run {run + 1}: convert {converts[^1]:0.0} s, mirror {mirrors[^1]:0.0} s");
                        nfs2.DeleteFile(convertTarget);
                        nfs2.DeleteFile(mirrorTarget);
                    }

                    var bytes = sizeGiB * 1024.0;
                    var convert = Stats.Percentile(converts, 50);
                    var mirror = Stats.Percentile(mirrors, 50);
                    var perRun = converts.Zip(mirrors, (c, m) => c / m).ToArray();
                    var ratio = Stats.Percentile(perRun, 50);
                    if (!reuse)
                    {
                        ratios.Add((format, ratio));
                    }

                    table.Add(format, reuse ? "pre-created (-ReuseExisting)" : "created by QEMU (default)", runs, convert, mirror, bytes / convert, bytes / mirror,
                        Fixed(ratio), string.Join(" ", perRun.Select(Fixed)), allocated);
                }

                nfs1.DeleteFile(source);
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }

        Console.WriteLine($"Mirror NFS1 -> NFS2 (nfs-ganesha on loopback, btrfs on loop devices) of a {sizeGiB} GiB image, 50% random data in 1 MiB stripes; load average at start {string.Join(" ", load)}:");
        Console.WriteLine("mirror = Start-DriveMirror's drive-mirror until READY; convert = qemu-img convert -f F -O F nfs://NFS1/... nfs://NFS2/...; times are medians; ratio = median of per-run (convert time / mirror time) = mirror throughput / convert throughput");
        table.Print(Console.Out);
        var met = ratios.All(r => r.Ratio >= 0.8);
        foreach (var (format, ratio) in ratios)
        {
            Console.WriteLine($"{format}: mirror throughput / qemu-img convert throughput = {ratio:0.00} (target >= 0.80): {(ratio >= 0.8 ? "met" : "NOT met")}");
        }

        return met ? 0 : 1;
    }

    private static string Fixed(double value) => value.ToString("0.00", System.Globalization.CultureInfo.InvariantCulture);

    private static double Convert(string format, string source, string target)
    {
        var stopwatch = Stopwatch.StartNew();
        Tool.Run("qemu-img", new[] { "convert", "-f", format, "-O", format, source, target }, TimeSpan.FromMinutes(30));
        return stopwatch.Elapsed.TotalSeconds;
    }

    private static async Task<TimeSpan> MirrorAsync(string directory, string source, string format, string destination, bool reuse)
    {
        await using var vm = await QemuVm.StartAsync(directory, "bench" + Guid.NewGuid().ToString("N")[..4], new LabDisk("virtio0", source, format));
        var mirror = VirtualMachine.Open(ReplicaSession.Local, null, vm.SocketPath).CreateMirrorBackend();
        var plan = await mirror.PlanStartAsync(new MirrorStartRequest { Destination = ImageLocation.Parse(destination), ReuseExisting = reuse });
        var stopwatch = Stopwatch.StartNew();
        await mirror.StartAsync(plan);
        await mirror.WaitAsync(null, new MirrorWaitOptions { PollInterval = TimeSpan.FromMilliseconds(100), StallTimeout = TimeSpan.FromMinutes(5) });
        stopwatch.Stop();
        await mirror.StopAsync(await mirror.PlanStopAsync(null, pivot: false, force: false), TimeSpan.FromMinutes(5));
        return stopwatch.Elapsed;
    }

    /// <summary>A sparse raw image: random data in every even MiB, holes in every odd one. Kept between runs.</summary>
    private static void EnsureImage(string path, long sizeMiB)
    {
        if (File.Exists(path) && new FileInfo(path).Length == sizeMiB * MiB)
        {
            return;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var stopwatch = Stopwatch.StartNew();
        var temporary = path + ".partial";
        using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write))
        {
            file.SetLength(sizeMiB * MiB);
            var buffer = new byte[MiB];
            for (long i = 0; i < sizeMiB; i += 2)
            {
                Random.Shared.NextBytes(buffer);
                file.Position = i * MiB;
                file.Write(buffer);
            }
        }

        File.Move(temporary, path, overwrite: true);
        Console.Error.WriteLine($"generated {path} in {stopwatch.Elapsed.TotalSeconds:0.0} s");
    }

    private static long Allocated(string path) => File.Exists(path)
        ? long.Parse(Tool.Run("du", "-B1", "--", path).Split('\t')[0], System.Globalization.CultureInfo.InvariantCulture) / MiB
        : -1;
}
