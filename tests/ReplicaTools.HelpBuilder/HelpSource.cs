using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace ReplicaTools.HelpBuilder;

/// <summary>The prose of one cmdlet's help: en-US/source/Verb-Noun.yml.</summary>
public sealed class HelpSource
{
    public string Synopsis { get; set; } = string.Empty;

    public string Description { get; set; } = string.Empty;

    public Dictionary<string, string> Parameters { get; set; } = new();

    public List<HelpExample> Examples { get; set; } = new();

    public List<HelpTypeNote> Inputs { get; set; } = new();

    public List<HelpTypeNote> Outputs { get; set; } = new();

    public string? Notes { get; set; }

    public List<string> Links { get; set; } = new();

    public static HelpSource Load(string path)
    {
        var deserializer = new DeserializerBuilder().WithNamingConvention(CamelCaseNamingConvention.Instance).Build();
        try
        {
            return deserializer.Deserialize<HelpSource>(File.ReadAllText(path)) ?? new HelpSource();
        }
        catch (YamlDotNet.Core.YamlException ex)
        {
            throw new InvalidDataException($"{path}:{ex.Start.Line}:{ex.Start.Column}: {ex.InnerException?.Message ?? ex.Message}", ex);
        }
    }
}

public sealed class HelpExample
{
    public string Title { get; set; } = string.Empty;

    public string Code { get; set; } = string.Empty;

    public string Remarks { get; set; } = string.Empty;
}

public sealed class HelpTypeNote
{
    public string Type { get; set; } = string.Empty;

    public string Description { get; set; } = string.Empty;
}
