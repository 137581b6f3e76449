using System.Diagnostics;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Benchmarks;

/// <summary>
/// Sequential trivial remote commands through one shared session, over each transport (an OpenSSH ControlMaster and
/// SSH.NET), versus a fresh ssh (full handshake) per command, as Windows' ssh client would do without multiplexing.
/// </summary>
public static class SshMultiplexBenchmark
{
    public static async Task<int> RunAsync(int count)
    {
        await using var lab = await SshLab.StartAsync("127.0.0.2");
        var controlMaster = lab[0].CreateHost();
        var sshNet = lab[0].CreateHost(SessionTransport.SshNet);
        var fresh = lab[0].CreateHost(multiplex: false);

        foreach (var host in new IReplicaHost[] { controlMaster, sshNet, fresh })
        {
            await host.RunAsync(new CommandSpec("true"));
        }

        // Alternate the sessions in rounds so that neither gets a quieter stretch of this shared machine.
        var controlMasterTimes = new List<double>(count);
        var sshNetTimes = new List<double>(count);
        const int round = 20;
        for (var done = 0; done < count; done += round)
        {
            var n = Math.Min(round, count - done);
            controlMasterTimes.AddRange(await TimeAsync(controlMaster, n));
            sshNetTimes.AddRange(await TimeAsync(sshNet, n));
        }

        var freshTimes = await TimeAsync(fresh, Math.Max(20, count / 4));
        await controlMaster.DisconnectAsync();
        await sshNet.DisconnectAsync();

        var table = new Table("mode", "commands", "median ms", "p95 ms", "mean ms");
        table.Add("session, OpenSsh (ControlMaster)", controlMasterTimes.Count, Stats.Percentile(controlMasterTimes, 50), Stats.Percentile(controlMasterTimes, 95), controlMasterTimes.Average());
        table.Add("session, SshNet (SSH.NET)", sshNetTimes.Count, Stats.Percentile(sshNetTimes, 50), Stats.Percentile(sshNetTimes, 95), sshNetTimes.Average());
        table.Add("fresh ssh per command", freshTimes.Count, Stats.Percentile(freshTimes, 50), Stats.Percentile(freshTimes, 95), freshTimes.Average());
        Console.WriteLine($"Remote command latency, 'true' on {lab[0].Address} (sshd on loopback, sessions with a clean HOME so this machine's ~/.bashrc is not timed), sequential commands:");
        table.Print(Console.Out);

        var fresh50 = Stats.Percentile(freshTimes, 50);
        var sshNetVsControlMaster = Stats.Percentile(sshNetTimes, 50) / Stats.Percentile(controlMasterTimes, 50);
        var controlMasterVsFresh = Stats.Percentile(controlMasterTimes, 50) / fresh50;
        var sshNetVsFresh = Stats.Percentile(sshNetTimes, 50) / fresh50;
        var met = new[] { sshNetVsControlMaster <= 1.0, controlMasterVsFresh <= 0.1, sshNetVsFresh <= 0.1 };
        Console.WriteLine($"SshNet median / ControlMaster median = {sshNetVsControlMaster:0.00} (target <= 1.00): {Verdict(met[0])}");
        Console.WriteLine($"ControlMaster median / fresh median = {controlMasterVsFresh:0.000} (target <= 0.100): {Verdict(met[1])}");
        Console.WriteLine($"SshNet median / fresh median = {sshNetVsFresh:0.000} (target <= 0.100): {Verdict(met[2])}");
        return met.All(m => m) ? 0 : 1;
    }

    private static string Verdict(bool met) => met ? "met" : "NOT met";

    private static async Task<List<double>> TimeAsync(IReplicaHost host, int count)
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
