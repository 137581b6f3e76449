using System.Diagnostics;
using System.Globalization;
using ReplicaTools.Core;
using ReplicaTools.Core.Clone;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Benchmarks;

/// <summary>
/// Invoke-NbdClone against the field's tools on one point-in-time export of a running (bare QEMU) VM: a 4 GiB qcow2,
/// 50% allocated with random data in 32 MiB stripes. Full clone vs nbdcopy and qemu-img convert run by hand against the
/// same kind of export (target: at least 0.9 of the better), vs a plain sequential dd-style copy (qemu-img dd bs=4M,
/// target: at least 2x); every copy is made durable (nbdcopy --flush, fsync after qemu-img), as the clone's is; then an incremental after 1% of the disk is dirtied (target: at most 5% of the full clone's time).
/// Each full-copy row is the best of <c>--runs</c> (default 3) interleaved rounds; the destination is deleted between runs.
/// </summary>
public static class CloneBenchmark
{
    private const long MiB = 1 << 20;

    public static async Task<int> RunAsync(long sizeGiB, int runs = 3)
    {
        var size = sizeGiB << 30;
        var directory = Path.Combine("/tmp", $"rtbench-clone-{Guid.NewGuid().ToString("N")[..6]}");
        Directory.CreateDirectory(directory);
        QemuVm? vm = null;
        try
        {
            Console.Error.WriteLine($"Preparing a {sizeGiB} GiB qcow2, 50% random data, in {directory} ...");
            var image = Path.Combine(directory, "disk.qcow2");
            CreateHalfRandomImage(Path.Combine(directory, "seed.raw"), image, size);
            vm = await QemuVm.StartAsync(directory, "benchvm", new LabDisk("virtio0", image, "qcow2"));
            var machine = new QmpVirtualMachine(ReplicaSession.Local, vm.SocketPath);
            var destination = Path.Combine(directory, "clone.raw");
            var table = new Table("copy", "tool", "best s", "virtual MiB/s", "data MiB", "vs clone");

            // Rounds interleave the tools and the clone, so that load from other jobs on the machine hits them alike.
            // The tools run by hand against a point-in-time export of the same disk; the clone makes its own.
            var byHand = new Dictionary<string, double> { ["nbdcopy"] = double.MaxValue, ["qemu-img convert"] = double.MaxValue, ["qemu-img dd bs=4M"] = double.MaxValue };
            var fullTimes = new List<double>();
            CloneResult? full = null;
            for (var round = 0; round < runs; round++)
            {
                await using (var source = new QmpPointInTime(machine, directory))
                {
                    await source.OpenAsync("virtio0", CancellationToken.None);
                    var export = await source.StartAsync(CloneNames.NewRunId(), null, null, "127.0.0.1", (10900, 11899), CancellationToken.None);
                    var uri = export.Address.Uri;
                    Keep(byHand, "nbdcopy", Time(destination, () => Tool.Run("nbdcopy", new[] { "--flush", "--", uri, destination }, TimeSpan.FromMinutes(30))));
                    Keep(byHand, "qemu-img convert", Time(destination, () => Flushed(destination, () => Tool.Run("qemu-img", new[] { "convert", "-f", "raw", "-O", "raw", uri, destination }, TimeSpan.FromMinutes(30)))));
                    Keep(byHand, "qemu-img dd bs=4M", Time(destination, () => Flushed(destination, () => Tool.Run("qemu-img", new[] { "dd", "-f", "raw", "-O", "raw", "bs=4M", $"if={uri}", $"of={destination}" }, TimeSpan.FromMinutes(30)))));
                    await source.StopAsync(CancellationToken.None);
                }

                DeleteClone(destination);
                Tool.Run("sync");
                full = await CloneAsync(machine, destination, incremental: false, directory);
                fullTimes.Add(full.Duration.TotalSeconds);
            }

            var fullBest = fullTimes.Min();
            var dirtyBytes = await DirtyOnePercentAsync(vm, size);

            // The floor of an incremental: the dirty-extent copier alone, by hand, against an incremental export of the
            // same kind (its throw-away bitmap is merged back afterwards, so the clone's own incremental is unaffected).
            var handCopy = Path.Combine(directory, "hand.raw");
            Tool.Run("cp", "--sparse=always", destination, handCopy);
            Tool.Run("sync", handCopy); // else the copier's fsync would flush the whole copy
            double byHandIncremental;
            await using (var source = new QmpPointInTime(machine, directory))
            {
                await source.OpenAsync("virtio0", CancellationToken.None);
                var export = await source.StartAsync(CloneNames.NewRunId(), CloneNames.Checkpoint("0bench00", 1), full!.Checkpoint, "127.0.0.1", (10900, 11899), CancellationToken.None);
                Tool.Run("sync");
                var stopwatch = Stopwatch.StartNew();
                Tool.Run(NbdCloneCopier.Python, new[] { "-c", ReplicaTools.Core.Nbd.DirtyExtentScript.Source, export.Address.Uri, export.DirtyMetaContext!, handCopy }, TimeSpan.FromMinutes(10));
                byHandIncremental = stopwatch.Elapsed.TotalSeconds;
                await source.StopAsync(CancellationToken.None);
                await source.RollbackCheckpointAsync(CancellationToken.None);
            }

            File.Delete(handCopy);
            Tool.Run("sync");
            var incremental = await CloneAsync(machine, destination, incremental: true, directory);
            if (incremental.Mode != CloneMode.Incremental)
            {
                Console.Error.WriteLine($"The incremental fell back to a full clone: {incremental.FallbackReason}");
                return 2;
            }

            var dataMiB = full.BytesCopied / (double)MiB;
            table.Add("full", "Invoke-NbdClone (QMP fleecing + nbdcopy)", S(fullBest), Rate(size, fullBest), dataMiB, "1.00");
            foreach (var (tool, seconds) in byHand)
            {
                table.Add("full", $"{tool} by hand", S(seconds), Rate(size, seconds), tool.Contains("dd", StringComparison.Ordinal) ? size / (double)MiB : dataMiB,
                    (seconds / fullBest).ToString("0.00", CultureInfo.InvariantCulture));
            }

            var incSeconds = incremental.Duration.TotalSeconds;
            table.Add("incremental (1% dirty)", "Invoke-NbdClone -Incremental", S(incSeconds), Rate(size, incSeconds), incremental.BytesCopied / (double)MiB,
                (incSeconds / fullBest).ToString("0.000", CultureInfo.InvariantCulture));

            table.Add("incremental (1% dirty)", "dirty-extent copier by hand (python3-libnbd)", S(byHandIncremental), Rate(size, byHandIncremental), dirtyBytes / (double)MiB,
                (byHandIncremental / fullBest).ToString("0.000", CultureInfo.InvariantCulture));

            Console.WriteLine($"Clone of a running VM's {sizeGiB} GiB qcow2 disk (50% random data), export on 127.0.0.1, destination on ext4; best of {runs} runs; " +
                              $"{Environment.ProcessorCount} cores. 'vs clone' = tool time / full clone time.");
            table.Print(Console.Out);
            var better = Math.Min(byHand["nbdcopy"], byHand["qemu-img convert"]);
            var relative = better / fullBest;
            var vsDd = byHand["qemu-img dd bs=4M"] / fullBest;
            var incShare = incSeconds / fullBest;
            var ok1 = relative >= 0.9;
            var ok2 = vsDd >= 2;
            var ok3 = incShare <= 0.05;
            Console.WriteLine($"full clone throughput / better by-hand tool = {relative:0.00} (target >= 0.90): {(ok1 ? "met" : "NOT met")}");
            Console.WriteLine($"full clone throughput / dd-style copy = {vsDd:0.00}x (target >= 2x): {(ok2 ? "met" : "NOT met")}");
            Console.WriteLine($"incremental ({incremental.BytesCopied / (double)MiB:0.0} MiB of {dirtyBytes / (double)MiB:0.0} MiB dirtied) time / full clone time = {incShare:0.000} (target <= 0.05): {(ok3 ? "met" : "NOT met")}");
            return ok1 && ok2 && ok3 ? 0 : 1;
        }
        finally
        {
            if (vm is not null)
            {
                await vm.DisposeAsync();
            }

            Directory.Delete(directory, recursive: true);
        }
    }

    private static string S(double seconds) => seconds.ToString("0.00", CultureInfo.InvariantCulture);

    private static string Rate(long bytes, double seconds) => (bytes / (double)MiB / seconds).ToString("0", CultureInfo.InvariantCulture);

    private static async Task<CloneResult> CloneAsync(QmpVirtualMachine machine, string destination, bool incremental, string directory)
    {
        var operation = new NbdCloneOperation(new CloneRequest
        {
            VirtualMachine = machine,
            Drive = "virtio0",
            Destination = destination,
            DestinationSession = ReplicaSession.Local,
            Incremental = incremental,
            ScratchDirectory = directory,
            LockDirectory = directory,
        });
        if (Environment.GetEnvironmentVariable("REPLICATOOLS_BENCH_TRACE") == "1")
        {
            using (OperationContext.Use(new TraceReporter()))
            {
                return await operation.RunAsync(CancellationToken.None);
            }
        }

        return await operation.RunAsync(CancellationToken.None);
    }

    /// <summary>REPLICATOOLS_BENCH_TRACE=1: every step with its time since the start, to see where a run spends it.</summary>
    private sealed class TraceReporter : IOperationReporter
    {
        private readonly Stopwatch clock = Stopwatch.StartNew();

        public void Verbose(string message) => Console.Error.WriteLine($"{clock.Elapsed.TotalMilliseconds,8:0} ms  {message}");

        public void Warning(string message) => Console.Error.WriteLine($"{clock.Elapsed.TotalMilliseconds,8:0} ms  WARNING {message}");

        public void Progress(OperationProgress progress)
        {
            if (progress.PercentComplete is 0 or 1 or 2 or 5 or 90 or 97 or 100)
            {
                Console.Error.WriteLine($"{clock.Elapsed.TotalMilliseconds,8:0} ms  [{progress.PercentComplete}%] {progress.Status}");
            }
        }
    }

    /// <summary>The copy, then fsync of its output: qemu-img writes with cache=unsafe by default, while the clone (nbdcopy --flush) makes its copy durable.</summary>
    private static void Flushed(string destination, Action copy)
    {
        copy();
        Tool.Run("sync", destination);
    }

    /// <summary>Times one copy from a clean start: no destination, and no dirty pages of earlier runs left to write back during it.</summary>
    private static double Time(string destination, Action copy)
    {
        DeleteClone(destination);
        Tool.Run("sync");
        var stopwatch = Stopwatch.StartNew();
        copy();
        var seconds = stopwatch.Elapsed.TotalSeconds;
        DeleteClone(destination);
        return seconds;
    }

    private static void Keep(Dictionary<string, double> best, string tool, double seconds) => best[tool] = Math.Min(best[tool], seconds);

    private static void DeleteClone(string destination)
    {
        foreach (var path in new[] { destination, destination + CloneDestination.SidecarSuffix, destination + CloneDestination.PartialSuffix })
        {
            File.Delete(path);
        }
    }

    /// <summary>Random data in every other 32 MiB stripe (50%), written sparse, then converted to qcow2 (holes stay unallocated).</summary>
    private static void CreateHalfRandomImage(string seed, string image, long size)
    {
        var stripe = new byte[32 * MiB];
        using (var file = new FileStream(seed, FileMode.Create, FileAccess.Write))
        {
            file.SetLength(size);
            for (long offset = 0; offset < size; offset += 2 * stripe.Length)
            {
                Random.Shared.NextBytes(stripe);
                file.Position = offset;
                file.Write(stripe);
            }
        }

        Tool.Run("qemu-img", new[] { "convert", "-f", "raw", "-O", "qcow2", seed, image }, TimeSpan.FromMinutes(30));
        File.Delete(seed);
    }

    /// <summary>Dirties 1% of the disk as the guest would: 64 KiB writes (the bitmap granularity) at random aligned offsets.</summary>
    private static async Task<long> DirtyOnePercentAsync(QemuVm vm, long size)
    {
        const long block = 64 * 1024;
        var count = (int)(size / 100 / block);
        var offsets = new HashSet<long>();
        while (offsets.Count < count)
        {
            offsets.Add(Random.Shared.NextInt64(size / block) * block);
        }

        foreach (var offset in offsets)
        {
            await vm.WriteAsync("virtio0", (byte)(offset / block % 251), offset, block);
        }

        return count * block;
    }
}
