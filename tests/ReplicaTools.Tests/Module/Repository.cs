namespace ReplicaTools.Tests.Module;

internal static class Repository
{
    public static string Root { get; } = Find();

    public static string ModuleDirectory => Path.Combine(Root, "out", "ReplicaTools");

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "ReplicaTools.psd1")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Cannot find the repository root (ReplicaTools.psd1) above " + AppContext.BaseDirectory);
    }
}
