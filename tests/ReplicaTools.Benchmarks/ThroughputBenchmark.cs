using System.Globalization;
using ReplicaTools.Core.Bench;
using ReplicaTools.TestLab;

namespace ReplicaTools.Benchmarks;

/// <summary>
/// The seed's throughput table on loopback (a direct file, nbd-server, qemu-nbd, a tgt iSCSI LUN; 512 B and 1 MiB, reads
/// and writes), measured by the module, and each cell compared with the same fio or qemu-img bench command run by hand,
/// in adjacent pairs of alternating order. Target: the module within ±15% of the tools (median of the pairs' ratios).
/// </summary>
public static class ThroughputBenchmark
{
    public static async Task<int> RunAsync(int seconds, int runs, int imageMiB)
    {
        await using var lab = await SshLab.StartAsync();
        await using var throughput = await ThroughputLab.StartAsync(lab, (long)imageMiB << 20);
        var meter = new ThroughputMeter(throughput.LoadHost);
        var started = DateTimeOffset.Now;
        var module = new List<ThroughputSample>();
        var cells = new List<(ThroughputLabTarget Target, long BlockSize, ThroughputOperation Operation, List<double> Module, List<double> Hand)>();
        foreach (var target in throughput.Targets)
        {
            foreach (var blockSize in ThroughputRequest.DefaultBlockSizes)
            {
                foreach (var operation in new[] { ThroughputOperation.Read, ThroughputOperation.Write })
                {
                    cells.Add((target, blockSize, operation, new List<double>(), new List<double>()));
                }
            }
        }

        for (var run = 0; run < runs; run++)
        {
            foreach (var cell in cells)
            {
                var request = new ThroughputRequest { BlockSizes = new[] { cell.BlockSize }, Operations = new[] { cell.Operation }, DurationSeconds = seconds, Force = true };
                foreach (var byModule in run % 2 == 0 ? new[] { true, false } : new[] { false, true })
                {
                    if (byModule)
                    {
                        var sample = (await meter.MeasureAsync(cell.Target.Spec, request)).Single();
                        module.Add(sample);
                        cell.Module.Add(sample.MBps);
                    }
                    else
                    {
                        // qemu-img bench runs a count: the module's last count for this cell, so both run about as long.
                        var last = module.Last(s => s.Target == cell.Target.Spec.Location && s.BlockSize == cell.BlockSize && s.Operation == cell.Operation);
                        var count = Math.Max(1, last.Bytes / cell.BlockSize);
                        var result = await throughput.LoadHost.RunAsync(ThroughputLab.ByHand(cell.Target.Spec.Location, cell.BlockSize, cell.Operation, seconds, count));
                        cell.Hand.Add(ThroughputLab.MBpsOf(result, cell.BlockSize, cell.Operation, count));
                    }
                }
            }
        }

        // The seed-shaped table from the module's median sample of each cell.
        var medians = cells.Select(c => module
            .Where(s => s.Target == c.Target.Spec.Location && s.BlockSize == c.BlockSize && s.Operation == c.Operation)
            .OrderBy(s => s.MBps).ElementAt(c.Module.Count / 2)).ToList();
        var load = File.ReadAllText("/proc/loadavg").Split(' ')[0];
        Console.WriteLine($"Disk throughput on loopback, measured {started:yyyy-MM-dd HH:mm} UTC{started:zzz} on {Environment.MachineName} ({Environment.ProcessorCount} cores, {Tool.Run("uname", "-sr").Trim()}, load average {load} at the end):");
        Console.WriteLine($"load generated over SSH on {lab[0].Address}; NBD servers on {lab[1].Address}, tgtd on {lab[2].Address}; {imageMiB} MiB preallocated raw images; queue depth 1, {seconds} s per measurement, median of {runs}.");
        Console.WriteLine();
        Console.Write(ThroughputTable.ToMarkdown(ThroughputTable.Build(medians)));
        Console.WriteLine();

        var table = new Table("target", "cell", "module MB/s", "by hand MB/s", "module/by hand");
        var ratios = new List<double>();
        foreach (var cell in cells)
        {
            var (m, h) = (Stats.Percentile(cell.Module, 50), Stats.Percentile(cell.Hand, 50));
            ratios.Add(m / h);
            table.Add(cell.Target.Name, $"{BlockSizes.Label(cell.BlockSize)} {cell.Operation}", m, h, (m / h).ToString("0.00", CultureInfo.InvariantCulture));
        }

        Console.WriteLine("Measure-DiskThroughput vs the same fio / qemu-img bench command run by hand (medians):");
        table.Print(Console.Out);
        // Each run of a cell is an adjacent pair (module, by hand): the median of their ratios is what load drift moves least.
        var pairs = cells.SelectMany(c => c.Module.Zip(c.Hand, (m, h) => m / h)).ToList();
        var median = Stats.Percentile(pairs, 50);
        var met = median is >= 0.85 and <= 1.15;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"median of {pairs.Count} adjacent pairs module/by hand = {median:0.000} (target 0.85-1.15): {(met ? "met" : "NOT met")}; geometric mean of the cells {Math.Exp(ratios.Average(Math.Log)):0.000}; cells within ±15%: {ratios.Count(r => r is >= 0.85 and <= 1.15)} of {ratios.Count}"));
        return met ? 0 : 1;
    }
}
