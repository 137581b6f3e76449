using System.Text;
using System.Xml;

namespace ReplicaTools.HelpBuilder;

public sealed record HelpBuildResult(string Xml, IReadOnlyList<string> Problems, IReadOnlyList<CmdletInfo> Cmdlets);

public static class HelpBuild
{
    public static HelpBuildResult Run(string moduleAssemblyPath, string sourceDirectory)
    {
        var cmdlets = CmdletMetadata.Read(moduleAssemblyPath);
        // _shared.yml describes parameters many cmdlets have (-Session, -HostName); a cmdlet's own text wins.
        var sharedPath = Path.Combine(sourceDirectory, "_shared.yml");
        var shared = File.Exists(sharedPath) ? HelpSource.Load(sharedPath).Parameters : new Dictionary<string, string>();
        var sources = Directory.GetFiles(sourceDirectory, "*.yml")
            .Where(f => !Path.GetFileName(f).StartsWith('_'))
            .ToDictionary(f => Path.GetFileNameWithoutExtension(f), HelpSource.Load, StringComparer.Ordinal);
        foreach (var (name, source) in sources)
        {
            var cmdlet = cmdlets.FirstOrDefault(c => c.Name == name);
            foreach (var (parameter, text) in shared)
            {
                if (cmdlet?.Parameters.Any(p => p.Name == parameter) == true)
                {
                    source.Parameters.TryAdd(parameter, text);
                }
            }
        }

        var problems = MamlWriter.Validate(cmdlets, sources);
        if (problems.Count > 0)
        {
            return new HelpBuildResult(string.Empty, problems, cmdlets);
        }

        var document = MamlWriter.Write(cmdlets, sources);
        var builder = new StringBuilder();
        using (var writer = XmlWriter.Create(new StringWriterUtf8(builder), new XmlWriterSettings { Indent = true, IndentChars = "  ", NewLineChars = "\n" }))
        {
            document.Save(writer);
        }

        return new HelpBuildResult(builder.ToString() + "\n", problems, cmdlets);
    }

    private sealed class StringWriterUtf8(StringBuilder builder) : StringWriter(builder)
    {
        public override Encoding Encoding => new UTF8Encoding(false);
    }
}
