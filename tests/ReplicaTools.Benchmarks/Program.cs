using ReplicaTools.Benchmarks;

// dotnet run -c Release --project tests/ReplicaTools.Benchmarks -- ssh [--count N]
// dotnet run -c Release --project tests/ReplicaTools.Benchmarks -- clone [--size-gib 4] [--runs 3]   (as root: bare QEMU)
// dotnet run -c Release --project tests/ReplicaTools.Benchmarks -- mirror [--size-gib 4] [--formats vdi,qcow2] [--runs 3]   (as root: NFS lab)
// dotnet run -c Release --project tests/ReplicaTools.Benchmarks -- throughput [--seconds 3] [--runs 3] [--image-mib 1024]   (as root: nbd-server, qemu-nbd, tgtd)
var benchmarks = new Dictionary<string, Func<string[], Task<int>>>(StringComparer.OrdinalIgnoreCase)
{
    ["ssh"] = a => SshMultiplexBenchmark.RunAsync(IntOption(a, "--count", 200)),
    ["clone"] = a => CloneBenchmark.RunAsync(IntOption(a, "--size-gib", 4), IntOption(a, "--runs", 3)),
    ["throughput"] = a => ThroughputBenchmark.RunAsync(IntOption(a, "--seconds", 3), IntOption(a, "--runs", 3), IntOption(a, "--image-mib", 1024)),
    ["mirror"] = a => MirrorBenchmark.RunAsync(IntOption(a, "--size-gib", 4), StringOption(a, "--formats", "vdi,qcow2").Split(',', StringSplitOptions.RemoveEmptyEntries), IntOption(a, "--runs", 3)),
};

if (args.Length == 0 || !benchmarks.TryGetValue(args[0], out var run))
{
    Console.Error.WriteLine($"usage: ReplicaTools.Benchmarks <{string.Join("|", benchmarks.Keys)}> [options]");
    return 2;
}

return await run(args[1..]);

static int IntOption(string[] args, string name, int fallback)
{
    var index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length && int.TryParse(args[index + 1], out var value) ? value : fallback;
}

static string StringOption(string[] args, string name, string fallback)
{
    var index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length ? args[index + 1] : fallback;
}
