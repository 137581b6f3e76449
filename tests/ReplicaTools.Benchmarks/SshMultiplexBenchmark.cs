using System.Diagnostics;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Benchmarks;

/// <summary>Sequential trivial remote commands: through one shared session (ControlMaster) versus a fresh ssh each.</summary>
public static class SshMultiplexBenchmark
{
    public static async Task<int> RunAsync(int count)
    {
        await using var lab = await SshLab.StartAsync("127.0.0.2");
        var shared = lab[0].CreateHost();
        var fresh = lab[0].CreateHost(multiplex: false);

        await shared.ConnectAsync();
        await shared.RunAsync(new CommandSpec("true"));
        await fresh.RunAsync(new CommandSpec("true"));

        var sharedTimes = await TimeAsync(shared, count);
        var freshTimes = await TimeAsync(fresh, count);
        await shared.DisconnectAsync();

        var table = new Table("mode", "commands", "median ms", "p95 ms", "mean ms");
        table.Add("session (ControlMaster)", count, Stats.Percentile(sharedTimes, 50), Stats.Percentile(sharedTimes, 95), sharedTimes.Average());
        table.Add("fresh ssh per command", count, Stats.Percentile(freshTimes, 50), Stats.Percentile(freshTimes, 95), freshTimes.Average());
        Console.WriteLine($"Remote command latency, 'true' on {lab[0].Address} (sshd on loopback, sessions with a clean HOME so this machine's ~/.bashrc is not timed), {count} sequential commands each:");
        table.Print(Console.Out);

        var ratio = Stats.Percentile(sharedTimes, 50) / Stats.Percentile(freshTimes, 50);
        var met = ratio <= 1.0 / 3;
        Console.WriteLine($"multiplexed median / fresh median = {ratio:0.00} (target <= 0.33): {(met ? "met" : "NOT met")}");
        return met ? 0 : 1;
    }

    private static async Task<List<double>> TimeAsync(SshHost host, int count)
    {
        var times = new List<double>(count);
        var command = new CommandSpec("true") { Timeout = TimeSpan.FromSeconds(30) };
        for (var i = 0; i < count; i++)
        {
            var stopwatch = Stopwatch.StartNew();
            await host.RunAsync(command);
            times.Add(stopwatch.Elapsed.TotalMilliseconds);
        }

        return times;
    }
}
