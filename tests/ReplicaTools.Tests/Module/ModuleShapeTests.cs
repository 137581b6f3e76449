using System.Text.RegularExpressions;
using System.Xml.Linq;
using ReplicaTools.HelpBuilder;

namespace ReplicaTools.Tests.Module;

/// <summary>The module as it ships: manifest, help, verbs and ShouldProcess, checked on the laid-out out/ReplicaTools.</summary>
public sealed class ModuleShapeTests
{
    private static readonly XNamespace Maml = "http://schemas.microsoft.com/maml/2004/10";
    private static readonly XNamespace Command = "http://schemas.microsoft.com/maml/dev/command/2004/10";

    // Verbs whose cmdlets only read; every other cmdlet changes state and must support -WhatIf/-Confirm.
    private static readonly string[] ReadOnlyVerbs = { "Get", "Compare", "ConvertTo", "Measure", "Wait", "Import", "Test", "Find", "Search", "Show", "Read", "Resolve" };

    private static readonly Lazy<IReadOnlyList<CmdletInfo>> Cmdlets = new(() => CmdletMetadata.Read(Path.Combine(Repository.ModuleDirectory, "ReplicaTools.dll")));

    [Fact]
    public void ShippedHelp_IsGeneratedFromTheCurrentSources()
    {
        var result = HelpBuild.Run(Path.Combine(Repository.ModuleDirectory, "ReplicaTools.dll"), Path.Combine(Repository.Root, "en-US", "source"));

        Assert.Empty(result.Problems);
        var committed = File.ReadAllText(Path.Combine(Repository.Root, "en-US", "ReplicaTools.dll-Help.xml"));
        Assert.True(committed == result.Xml, "en-US/ReplicaTools.dll-Help.xml is stale: run 'dotnet run --project tests/ReplicaTools.HelpBuilder' and commit it.");
        Assert.Equal(committed, File.ReadAllText(Path.Combine(Repository.ModuleDirectory, "en-US", "ReplicaTools.dll-Help.xml")));
    }

    [Fact]
    public void Help_CoversEveryCmdletAndParameter_WithSynopsisDescriptionAndExample()
    {
        var help = XDocument.Load(Path.Combine(Repository.ModuleDirectory, "en-US", "ReplicaTools.dll-Help.xml"));
        var commands = help.Root!.Elements(Command + "command").ToDictionary(c => c.Element(Command + "details")!.Element(Command + "name")!.Value);

        Assert.NotEmpty(Cmdlets.Value);
        foreach (var cmdlet in Cmdlets.Value)
        {
            Assert.True(commands.TryGetValue(cmdlet.Name, out var command), $"no help for {cmdlet.Name}");
            Assert.False(string.IsNullOrWhiteSpace(command!.Element(Command + "details")!.Element(Maml + "description")!.Value), $"{cmdlet.Name}: empty synopsis");
            Assert.False(string.IsNullOrWhiteSpace(command.Element(Maml + "description")!.Value), $"{cmdlet.Name}: empty description");
            Assert.NotEmpty(command.Element(Command + "examples")!.Elements(Command + "example"));

            var described = command.Element(Command + "parameters")!.Elements(Command + "parameter")
                .ToDictionary(p => p.Element(Maml + "name")!.Value, p => p.Element(Maml + "description")!.Value);
            foreach (var parameter in cmdlet.Parameters)
            {
                Assert.True(described.TryGetValue(parameter.Name, out var text) && !string.IsNullOrWhiteSpace(text), $"{cmdlet.Name}: -{parameter.Name} is not described");
            }
        }
    }

    [Fact]
    public void Manifest_ExportsExactlyTheModulesCmdlets_WithoutWildcards()
    {
        var manifest = File.ReadAllText(Path.Combine(Repository.ModuleDirectory, "ReplicaTools.psd1"));
        var exportBlock = Regex.Match(manifest, @"CmdletsToExport\s*=\s*@\((?<list>[^)]*)\)").Groups["list"].Value;
        var exported = Regex.Matches(exportBlock, "'([^']+)'").Select(m => m.Groups[1].Value).OrderBy(n => n, StringComparer.Ordinal).ToArray();

        Assert.DoesNotContain(exported, e => e.Contains('*'));
        Assert.Equal(Cmdlets.Value.Select(c => c.Name).OrderBy(n => n, StringComparer.Ordinal), exported);
    }

    [Fact]
    public void Manifest_IsPublishable_AndItsFilesShip()
    {
        var manifest = File.ReadAllText(Path.Combine(Repository.ModuleDirectory, "ReplicaTools.psd1"));

        Assert.Matches(@"RootModule\s*=\s*'ReplicaTools\.dll'", manifest);
        Assert.Matches(@"PowerShellVersion\s*=\s*'7\.4'", manifest);
        Assert.Matches(@"CompatiblePSEditions\s*=\s*@\('Core'\)", manifest);
        Assert.Matches(@"ModuleVersion\s*=\s*'\d+\.\d+\.\d+'", manifest);
        Assert.DoesNotMatch(@"ModuleVersion\s*=\s*'0\.0\.0'", manifest);
        foreach (var key in new[] { "GUID", "Author", "Description", "Tags", "ProjectUri", "LicenseUri", "FunctionsToExport", "AliasesToExport", "VariablesToExport" })
        {
            Assert.Contains(key, manifest);
        }

        var formats = Regex.Match(manifest, @"FormatsToProcess\s*=\s*@\('(?<f>[^']+)'\)").Groups["f"].Value;
        Assert.True(File.Exists(Path.Combine(Repository.ModuleDirectory, formats)), $"format file {formats} does not ship");
        XDocument.Load(Path.Combine(Repository.ModuleDirectory, formats));
        foreach (var file in new[] { "ReplicaTools.dll", "ReplicaTools.Loader.dll", "dependencies/ReplicaTools.Core.dll", "dependencies/YamlDotNet.dll", "dependencies/Renci.SshNet.dll" })
        {
            Assert.True(File.Exists(Path.Combine(Repository.ModuleDirectory, file)), $"{file} does not ship");
        }

        Assert.Matches(@"NestedModules\s*=\s*@\('ReplicaTools\.Loader\.dll'\)", manifest);
    }

    [Fact]
    public void EveryAssemblyTheModuleReferences_ShipsInItsDependencies_OrComesWithDotNetOrPowerShell()
    {
        // Walks the references from ReplicaTools.dll; anything not in the .NET runtime must be in dependencies/
        // (where ModuleLoadContext loads it), and nothing may sit beside ReplicaTools.dll to load in the default context.
        var dependencies = Path.Combine(Repository.ModuleDirectory, "dependencies");
        var runtime = System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory();
        var pending = new Queue<string>(new[] { Path.Combine(Repository.ModuleDirectory, "ReplicaTools.dll"), Path.Combine(Repository.ModuleDirectory, "ReplicaTools.Loader.dll") });
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var missing = new List<string>();
        while (pending.TryDequeue(out var path))
        {
            using var stream = File.OpenRead(path);
            using var pe = new System.Reflection.PortableExecutable.PEReader(stream);
            var metadata = System.Reflection.Metadata.PEReaderExtensions.GetMetadataReader(pe);
            foreach (var handle in metadata.AssemblyReferences)
            {
                var name = metadata.GetString(metadata.GetAssemblyReference(handle).Name);
                if (!seen.Add(name) || name is "System.Management.Automation" or "netstandard" || File.Exists(Path.Combine(runtime, name + ".dll")))
                {
                    continue;
                }

                var shipped = Path.Combine(dependencies, name + ".dll");
                if (File.Exists(shipped))
                {
                    pending.Enqueue(shipped);
                }
                else
                {
                    missing.Add($"{name} (referenced by {Path.GetFileName(path)})");
                }
            }
        }

        Assert.Empty(missing);
        Assert.Contains("Renci.SshNet", seen);
        Assert.Contains("BouncyCastle.Cryptography", seen);
        Assert.Empty(Directory.GetFiles(Repository.ModuleDirectory, "*.dll").Select(Path.GetFileName).Except(new[] { "ReplicaTools.dll", "ReplicaTools.Loader.dll" }));
    }

    /// <summary>
    /// Regression (issue 7): a topology host without a jump host failed New-ReplicaSession with "Cannot validate argument
    /// on parameter 'JumpHost'". A parameter bound from a piped object's property must not reject null or empty with a
    /// validation attribute (PowerShell then blames a property the user never set); a mandatory one takes AllowNull and
    /// checks in code (ReplicaCmdlet.HasArgument). tests/Pester/PipelineBinding.Tests.ps1 checks the same at run time.
    /// </summary>
    [Fact]
    public void ParametersBoundByPropertyName_DoNotRejectNullOrEmptyInValidationAttributes()
    {
        string[] rejecting = { "ValidateNotNull", "ValidateNotNullOrEmpty", "ValidateNotNullOrWhiteSpace", "ValidateSet", "ValidatePattern", "ValidateLength", "ValidateCount", "ValidateScript" };
        var offenders = new List<string>();
        foreach (var cmdlet in Cmdlets.Value)
        {
            foreach (var parameter in cmdlet.Parameters.Where(p => p.Sets.Any(s => s.FromPipelineByPropertyName)))
            {
                var validations = parameter.Validations ?? Array.Empty<string>();
                offenders.AddRange(validations.Intersect(rejecting).Select(v => $"{cmdlet.Name} -{parameter.Name} [{v}]"));
                var mandatory = parameter.Sets.Any(s => s.Mandatory && s.FromPipelineByPropertyName);
                if (mandatory && parameter.TypeName is "String" or "String[]" && !validations.Contains("AllowNull"))
                {
                    offenders.Add($"{cmdlet.Name} -{parameter.Name} (mandatory, bound by property name, without [AllowNull])");
                }
            }
        }

        Assert.True(offenders.Count == 0, "Parameters bound by property name that reject null or empty:\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void EveryCmdlet_UsesAnApprovedVerb()
    {
        var approved = CmdletMetadata.ApprovedVerbs();
        Assert.Contains("Get", approved);
        Assert.All(Cmdlets.Value, c => Assert.True(approved.Contains(c.Verb), $"{c.Name}: '{c.Verb}' is not an approved verb"));
    }

    [Fact]
    public void EveryStateChangingCmdlet_SupportsShouldProcess()
    {
        Assert.All(Cmdlets.Value.Where(c => !ReadOnlyVerbs.Contains(c.Verb)),
            c => Assert.True(c.SupportsShouldProcess, $"{c.Name} changes state but does not support -WhatIf/-Confirm"));
    }

    [Fact]
    public void EveryHostCmdlet_TakesSessionFromThePipelineByPropertyName()
    {
        foreach (var cmdlet in Cmdlets.Value.Where(c => c.Parameters.Any(p => p.Name == "Session")))
        {
            var session = cmdlet.Parameters.Single(p => p.Name == "Session");
            Assert.True(session.Sets.All(s => s.FromPipelineByPropertyName), $"{cmdlet.Name}: -Session does not bind by property name");
        }
    }

    [Fact]
    public void VmParameters_AreDeclaredOnceByTheVmCmdletBase_InLibvirtAndQmpSets()
    {
        var vmCmdlets = Cmdlets.Value.Where(c => c.Parameters.Any(p => p.Name is "VMName" or "QmpSocket" or "LibvirtUri" or "Drive")).ToList();
        Assert.Contains(vmCmdlets, c => c.Name == "Get-DriveMirror");
        Assert.Contains(vmCmdlets, c => c.Name == "Invoke-NbdClone");
        foreach (var cmdlet in vmCmdlets)
        {
            foreach (var name in new[] { "VMName", "QmpSocket", "LibvirtUri", "Drive" })
            {
                var parameter = cmdlet.Parameters.SingleOrDefault(p => p.Name == name);
                Assert.True(parameter is not null, $"{cmdlet.Name} has some VM parameters but not -{name}: it must derive from VmCmdlet");
                Assert.True(parameter!.DeclaredBy == "ReplicaTools.VmCmdlet", $"{cmdlet.Name} declares -{name} itself ({parameter.DeclaredBy}); VM parameters come from VmCmdlet only");
                Assert.All(parameter.Sets, s => Assert.True(s.FromPipelineByPropertyName, $"{cmdlet.Name} -{name} does not bind by property name"));
            }

            Assert.Equal(new[] { "Libvirt" }, cmdlet.Parameters.Single(p => p.Name == "VMName").Sets.Select(s => s.SetName));
            Assert.Equal(new[] { "Libvirt" }, cmdlet.Parameters.Single(p => p.Name == "LibvirtUri").Sets.Select(s => s.SetName));
            Assert.Equal(new[] { "Qmp" }, cmdlet.Parameters.Single(p => p.Name == "QmpSocket").Sets.Select(s => s.SetName));

            // A default set would be preferred while binding piped objects and bind their null VMName or QmpSocket too.
            Assert.True(cmdlet.DefaultParameterSet is null, $"{cmdlet.Name} has a default parameter set; piped VM objects would bind to the wrong set");
        }
    }
}
