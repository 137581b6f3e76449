using System.Globalization;
using System.Xml.Linq;

namespace ReplicaTools.HelpBuilder;

/// <summary>Writes MAML, the help format Get-Help reads for binary modules.</summary>
public static class MamlWriter
{
    private static readonly XNamespace Maml = "http://schemas.microsoft.com/maml/2004/10";
    private static readonly XNamespace Command = "http://schemas.microsoft.com/maml/dev/command/2004/10";
    private static readonly XNamespace Dev = "http://schemas.microsoft.com/maml/dev/2004/10";
    private static readonly XNamespace MsHelp = "http://msdn.microsoft.com/mshelp";

    private static readonly Dictionary<string, string> ShouldProcessParameters = new()
    {
        ["WhatIf"] = "Shows what would happen if the cmdlet runs, including the exact commands per host, without running it.",
        ["Confirm"] = "Prompts you for confirmation before running the cmdlet.",
    };

    /// <summary>Checks that every cmdlet and parameter has prose; returns the problems (empty when complete).</summary>
    public static IReadOnlyList<string> Validate(IReadOnlyList<CmdletInfo> cmdlets, IReadOnlyDictionary<string, HelpSource> sources)
    {
        var problems = new List<string>();
        foreach (var cmdlet in cmdlets)
        {
            if (!sources.TryGetValue(cmdlet.Name, out var source))
            {
                problems.Add($"{cmdlet.Name}: no help source (en-US/source/{cmdlet.Name}.yml).");
                continue;
            }

            if (string.IsNullOrWhiteSpace(source.Synopsis))
            {
                problems.Add($"{cmdlet.Name}: empty synopsis.");
            }

            if (string.IsNullOrWhiteSpace(source.Description))
            {
                problems.Add($"{cmdlet.Name}: empty description.");
            }

            if (source.Examples.Count == 0 || source.Examples.Any(e => string.IsNullOrWhiteSpace(e.Code) || string.IsNullOrWhiteSpace(e.Title) || string.IsNullOrWhiteSpace(e.Remarks)))
            {
                problems.Add($"{cmdlet.Name}: needs at least one example, each with a title, code and remarks.");
            }

            foreach (var parameter in cmdlet.Parameters)
            {
                if (!source.Parameters.TryGetValue(parameter.Name, out var text) || string.IsNullOrWhiteSpace(text))
                {
                    problems.Add($"{cmdlet.Name}: parameter -{parameter.Name} has no description.");
                }
            }

            foreach (var described in source.Parameters.Keys.Where(k => cmdlet.Parameters.All(p => p.Name != k)))
            {
                problems.Add($"{cmdlet.Name}: the help describes -{described}, which the cmdlet does not have.");
            }
        }

        foreach (var orphan in sources.Keys.Where(k => cmdlets.All(c => c.Name != k)))
        {
            problems.Add($"en-US/source/{orphan}.yml describes a cmdlet the module does not have.");
        }

        return problems;
    }

    public static XDocument Write(IReadOnlyList<CmdletInfo> cmdlets, IReadOnlyDictionary<string, HelpSource> sources)
    {
        var helpItems = new XElement("helpItems", new XAttribute("schema", "maml"), new XAttribute(XNamespace.Xmlns + "maml", Maml),
            new XAttribute(XNamespace.Xmlns + "command", Command), new XAttribute(XNamespace.Xmlns + "dev", Dev), new XAttribute(XNamespace.Xmlns + "MSHelp", MsHelp));
        foreach (var cmdlet in cmdlets)
        {
            helpItems.Add(WriteCommand(cmdlet, sources[cmdlet.Name]));
        }

        return new XDocument(new XDeclaration("1.0", "utf-8", null), helpItems);
    }

    private static XElement WriteCommand(CmdletInfo cmdlet, HelpSource source)
    {
        var parameters = AllParameters(cmdlet, source);
        return new XElement(Command + "command",
            new XElement(Command + "details",
                new XElement(Command + "name", cmdlet.Name),
                new XElement(Command + "verb", cmdlet.Verb),
                new XElement(Command + "noun", cmdlet.Noun),
                new XElement(Maml + "description", Paragraphs(source.Synopsis))),
            new XElement(Maml + "description", Paragraphs(source.Description)),
            new XElement(Command + "syntax", cmdlet.ParameterSets.Select(set => SyntaxItem(cmdlet, set, parameters))),
            new XElement(Command + "parameters", parameters.Select(p => ParameterElement(p.Info, p.Description, p.Info.Sets.FirstOrDefault()))),
            new XElement(Command + "inputTypes", source.Inputs.Select(i => TypeNote(Command + "inputType", i))),
            new XElement(Command + "returnValues", source.Outputs.Select(o => TypeNote(Command + "returnValue", o))),
            new XElement(Maml + "alertSet", new XElement(Maml + "alert", Paragraphs(source.Notes ?? string.Empty))),
            new XElement(Command + "examples", source.Examples.Select((e, i) => new XElement(Command + "example",
                new XElement(Maml + "title", $"-------------------------- Example {i + 1}: {e.Title} --------------------------"),
                new XElement(Dev + "code", e.Code.TrimEnd()),
                new XElement(Dev + "remarks", Paragraphs(e.Remarks))))),
            new XElement(Command + "relatedLinks", source.Links.Select(l => new XElement(Maml + "navigationLink",
                new XElement(Maml + "linkText", l),
                new XElement(Maml + "uri", l.StartsWith("http", StringComparison.Ordinal) ? l : string.Empty)))));
    }

    private static List<(ParameterInfo Info, string Description)> AllParameters(CmdletInfo cmdlet, HelpSource source)
    {
        var list = cmdlet.Parameters.Select(p => (p, source.Parameters.GetValueOrDefault(p.Name, string.Empty))).ToList();
        if (cmdlet.SupportsShouldProcess)
        {
            foreach (var (name, text) in ShouldProcessParameters)
            {
                list.Add((new ParameterInfo(name, "SwitchParameter", true, name == "WhatIf" ? new[] { "wi" } : new[] { "cf" }, false,
                    new[] { new ParameterSetUse(CmdletInfo.AllSets, false, int.MinValue, false, false) }), text));
            }
        }

        return list;
    }

    private static XElement SyntaxItem(CmdletInfo cmdlet, string set, List<(ParameterInfo Info, string Description)> parameters)
    {
        var item = new XElement(Command + "syntaxItem", new XElement(Maml + "name", cmdlet.Name));
        var inSet = parameters
            .Select(p => (p.Info, p.Description, Use: p.Info.Sets.FirstOrDefault(s => s.SetName == set) ?? p.Info.Sets.FirstOrDefault(s => s.SetName == CmdletInfo.AllSets)))
            .Where(p => p.Use is not null)
            .OrderBy(p => p.Use!.Position == int.MinValue ? int.MaxValue : p.Use.Position)
            .ThenBy(p => p.Use!.Mandatory ? 0 : 1);
        foreach (var (info, description, use) in inSet)
        {
            item.Add(ParameterElement(info, description, use));
        }

        return item;
    }

    private static XElement ParameterElement(ParameterInfo parameter, string description, ParameterSetUse? use)
    {
        var pipeline = use is null ? "False"
            : use.FromPipeline && use.FromPipelineByPropertyName ? "True (ByPropertyName, ByValue)"
            : use.FromPipeline ? "True (ByValue)"
            : use.FromPipelineByPropertyName ? "True (ByPropertyName)" : "False";
        var element = new XElement(Command + "parameter",
            new XAttribute("required", (use?.Mandatory ?? false).ToString().ToLowerInvariant()),
            new XAttribute("variableLength", parameter.TypeName.EndsWith("[]", StringComparison.Ordinal).ToString().ToLowerInvariant()),
            new XAttribute("globbing", parameter.SupportsWildcards.ToString().ToLowerInvariant()),
            new XAttribute("pipelineInput", pipeline),
            new XAttribute("position", use is null || use.Position == int.MinValue ? "named" : use.Position.ToString(CultureInfo.InvariantCulture)),
            new XAttribute("aliases", parameter.Aliases.Length == 0 ? "none" : string.Join(", ", parameter.Aliases)),
            new XElement(Maml + "name", parameter.Name),
            new XElement(Maml + "description", Paragraphs(description)));
        if (!parameter.IsSwitch)
        {
            element.Add(new XElement(Command + "parameterValue", new XAttribute("required", "true"), new XAttribute("variableLength", "false"), parameter.TypeName));
        }

        element.Add(new XElement(Dev + "type", new XElement(Maml + "name", parameter.TypeName), new XElement(Maml + "uri")));
        element.Add(new XElement(Dev + "defaultValue", parameter.IsSwitch ? "False" : "None"));
        return element;
    }

    private static XElement TypeNote(XName name, HelpTypeNote note) =>
        new(name,
            new XElement(Dev + "type", new XElement(Maml + "name", note.Type), new XElement(Maml + "uri")),
            new XElement(Maml + "description", Paragraphs(note.Description)));

    private static IEnumerable<XElement> Paragraphs(string text)
    {
        var paragraphs = text.Replace("\r\n", "\n", StringComparison.Ordinal)
            .Split("\n\n", StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(p => new XElement(Maml + "para", string.Join(' ', p.Split('\n', StringSplitOptions.TrimEntries))))
            .ToList();
        return paragraphs.Count == 0 ? new[] { new XElement(Maml + "para") } : paragraphs;
    }
}
