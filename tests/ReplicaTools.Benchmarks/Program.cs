using ReplicaTools.Benchmarks;

// dotnet run -c Release --project tests/ReplicaTools.Benchmarks -- ssh [--count N] | clone [--size-gib 4] [--runs 3]
var benchmarks = new Dictionary<string, Func<string[], Task<int>>>(StringComparer.OrdinalIgnoreCase)
{
    ["ssh"] = a => SshMultiplexBenchmark.RunAsync(IntOption(a, "--count", 200)),
    ["clone"] = a => CloneBenchmark.RunAsync(IntOption(a, "--size-gib", 4), IntOption(a, "--runs", 3)),
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
