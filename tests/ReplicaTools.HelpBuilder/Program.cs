using ReplicaTools.HelpBuilder;

// Usage: dotnet run --project tests/ReplicaTools.HelpBuilder -- [ReplicaTools.dll] [en-US/source] [en-US/ReplicaTools.dll-Help.xml]
var root = FindRepositoryRoot();
var assembly = args.Length > 0 ? args[0] : Path.Combine(root, "out", "ReplicaTools", "ReplicaTools.dll");
var sources = args.Length > 1 ? args[1] : Path.Combine(root, "en-US", "source");
var output = args.Length > 2 ? args[2] : Path.Combine(root, "en-US", "ReplicaTools.dll-Help.xml");

var result = HelpBuild.Run(assembly, sources);
if (result.Problems.Count > 0)
{
    foreach (var problem in result.Problems)
    {
        Console.Error.WriteLine(problem);
    }

    return 1;
}

File.WriteAllText(output, result.Xml);
Console.WriteLine($"Wrote help for {result.Cmdlets.Count} cmdlets to {output}");
return 0;

static string FindRepositoryRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
    {
        if (File.Exists(Path.Combine(dir.FullName, "ReplicaTools.psd1")))
        {
            return dir.FullName;
        }
    }

    return Directory.GetCurrentDirectory();
}
