using System.Reflection;
using System.Runtime.InteropServices;

namespace ReplicaTools.HelpBuilder;

/// <param name="DeclaredBy">The full name of the class that declares the parameter (the cmdlet or one of its bases).</param>
/// <param name="Validations">The parameter's System.Management.Automation Validate*/Allow* attributes, by short name (ValidateNotNullOrEmpty, AllowNull, ...).</param>
public sealed record ParameterInfo(string Name, string TypeName, bool IsSwitch, string[] Aliases, bool SupportsWildcards, IReadOnlyList<ParameterSetUse> Sets, string DeclaredBy = "", IReadOnlyList<string>? Validations = null);

/// <summary>How a parameter takes part in one parameter set ("__AllParameterSets" when it is in all of them).</summary>
public sealed record ParameterSetUse(string SetName, bool Mandatory, int Position, bool FromPipeline, bool FromPipelineByPropertyName);

public sealed record CmdletInfo(string Verb, string Noun, bool SupportsShouldProcess, string? ConfirmImpact, string? DefaultParameterSet, IReadOnlyList<ParameterInfo> Parameters, IReadOnlyList<string> OutputTypes)
{
    public string Name => $"{Verb}-{Noun}";

    public IReadOnlyList<string> ParameterSets
    {
        get
        {
            var named = Parameters.SelectMany(p => p.Sets).Select(s => s.SetName).Where(s => s != AllSets).Distinct().ToList();
            if (DefaultParameterSet is not null && !named.Contains(DefaultParameterSet))
            {
                // A default set without parameters of its own (e.g. "list everything").
                named.Insert(0, DefaultParameterSet);
            }

            if (named.Count == 0)
            {
                return new[] { AllSets };
            }

            // The default set first, as Get-Help shows it.
            return named.OrderBy(s => s == DefaultParameterSet ? 0 : 1).ToList();
        }
    }

    public const string AllSets = "__AllParameterSets";
}

/// <summary>Reads cmdlets out of a compiled module without loading it (no PowerShell runtime needed).</summary>
public static class CmdletMetadata
{
    // System.Management.Automation.ConfirmImpact, by value.
    private enum ConfirmImpactName
    {
        None,
        Low,
        Medium,
        High,
    }

    /// <summary>The approved verbs, read from the Verbs* classes of the PowerShell reference assembly.</summary>
    public static IReadOnlySet<string> ApprovedVerbs()
    {
        var sma = SmaPath();
        using var context = new MetadataLoadContext(new PathAssemblyResolver(Directory.GetFiles(RuntimeEnvironment.GetRuntimeDirectory(), "*.dll").Append(sma)));
        var assembly = context.LoadFromAssemblyPath(sma);
        return assembly.GetTypes()
            .Where(t => t.Namespace == "System.Management.Automation" && t.Name.StartsWith("Verbs", StringComparison.Ordinal))
            .SelectMany(t => t.GetFields(BindingFlags.Public | BindingFlags.Static))
            .Select(f => (string)f.GetRawConstantValue()!)
            .ToHashSet(StringComparer.Ordinal);
    }

    private static string SmaPath() =>
        typeof(CmdletMetadata).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().First(a => a.Key == "SmaReferencePath").Value!;

    public static IReadOnlyList<CmdletInfo> Read(string moduleAssemblyPath)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(moduleAssemblyPath))!;
        var sma = SmaPath();
        var paths = Directory.GetFiles(RuntimeEnvironment.GetRuntimeDirectory(), "*.dll")
            .Concat(Directory.GetFiles(directory, "*.dll", SearchOption.AllDirectories))
            .Append(sma)
            .GroupBy(Path.GetFileName)
            .Select(g => g.Last());
        using var context = new MetadataLoadContext(new PathAssemblyResolver(paths));
        var assembly = context.LoadFromAssemblyPath(Path.GetFullPath(moduleAssemblyPath));
        var cmdlets = new List<CmdletInfo>();
        foreach (var type in assembly.GetTypes().Where(t => !t.IsAbstract))
        {
            var cmdlet = type.GetCustomAttributesData().FirstOrDefault(a => a.AttributeType.FullName == "System.Management.Automation.CmdletAttribute");
            if (cmdlet is null)
            {
                continue;
            }

            var outputs = type.GetCustomAttributesData()
                .Where(a => a.AttributeType.FullName == "System.Management.Automation.OutputTypeAttribute")
                .SelectMany(a => a.ConstructorArguments)
                .SelectMany(arg => arg.Value is IEnumerable<CustomAttributeTypedArgument> items ? items.Select(i => i.Value) : new[] { arg.Value })
                .Select(v => v is Type t ? t.FullName! : v?.ToString() ?? string.Empty)
                .ToList();

            cmdlets.Add(new CmdletInfo(
                (string)cmdlet.ConstructorArguments[0].Value!,
                (string)cmdlet.ConstructorArguments[1].Value!,
                Named<bool>(cmdlet, "SupportsShouldProcess"),
                cmdlet.NamedArguments.Where(a => a.MemberName == "ConfirmImpact").Select(a => ((ConfirmImpactName)(int)a.TypedValue.Value!).ToString()).FirstOrDefault(),
                Named<string>(cmdlet, "DefaultParameterSetName"),
                ReadParameters(type),
                outputs));
        }

        return cmdlets.OrderBy(c => c.Name, StringComparer.Ordinal).ToList();
    }

    private static IReadOnlyList<ParameterInfo> ReadParameters(Type type)
    {
        var parameters = new List<ParameterInfo>();

        // Base-class parameters (Session, HostName) come after the cmdlet's own, as declared.
        var chain = new List<Type>();
        for (var t = type; t is not null && t.FullName != "System.Management.Automation.PSCmdlet"; t = t.BaseType)
        {
            chain.Add(t);
        }

        foreach (var declaring in chain)
        {
            foreach (var property in declaring.GetProperties(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            {
                var attributes = property.GetCustomAttributesData();
                var sets = attributes.Where(a => a.AttributeType.FullName == "System.Management.Automation.ParameterAttribute")
                    .Select(a => new ParameterSetUse(
                        Named<string>(a, "ParameterSetName") ?? CmdletInfo.AllSets,
                        Named<bool>(a, "Mandatory"),
                        a.NamedArguments.Any(n => n.MemberName == "Position") ? Named<int>(a, "Position") : int.MinValue,
                        Named<bool>(a, "ValueFromPipeline"),
                        Named<bool>(a, "ValueFromPipelineByPropertyName")))
                    .ToList();
                if (sets.Count == 0)
                {
                    continue;
                }

                var aliases = attributes.Where(a => a.AttributeType.FullName == "System.Management.Automation.AliasAttribute")
                    .SelectMany(a => a.ConstructorArguments)
                    .SelectMany(arg => arg.Value is IEnumerable<CustomAttributeTypedArgument> items ? items.Select(i => (string)i.Value!) : new[] { (string)arg.Value! })
                    .ToArray();
                var isSwitch = property.PropertyType.FullName == "System.Management.Automation.SwitchParameter";
                parameters.Add(new ParameterInfo(
                    property.Name,
                    FriendlyType(property.PropertyType),
                    isSwitch,
                    aliases,
                    attributes.Any(a => a.AttributeType.FullName == "System.Management.Automation.SupportsWildcardsAttribute"),
                    sets,
                    declaring.FullName ?? declaring.Name,
                    attributes.Select(a => a.AttributeType)
                        .Where(t => t.Namespace == "System.Management.Automation" && (t.Name.StartsWith("Validate", StringComparison.Ordinal) || t.Name.StartsWith("Allow", StringComparison.Ordinal)))
                        .Select(t => t.Name[..^"Attribute".Length])
                        .ToArray()));
            }
        }

        return parameters;
    }

    private static T? Named<T>(CustomAttributeData attribute, string name)
    {
        foreach (var argument in attribute.NamedArguments)
        {
            if (argument.MemberName == name)
            {
                return (T?)argument.TypedValue.Value;
            }
        }

        return default;
    }

    internal static string FriendlyType(Type type)
    {
        if (type.IsArray)
        {
            return FriendlyType(type.GetElementType()!) + "[]";
        }

        if (type.IsGenericType && type.GetGenericTypeDefinition().FullName == "System.Nullable`1")
        {
            return FriendlyType(type.GetGenericArguments()[0]);
        }

        return type.FullName switch
        {
            "System.Management.Automation.SwitchParameter" => "SwitchParameter",
            "System.String" => "String",
            "System.Int32" => "Int32",
            "System.Int64" => "Int64",
            "System.Double" => "Double",
            "System.Boolean" => "Boolean",
            _ => type.Name,
        };
    }
}
