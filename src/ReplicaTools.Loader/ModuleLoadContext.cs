using System.Management.Automation;
using System.Reflection;
using System.Runtime.Loader;

namespace ReplicaTools;

/// <summary>
/// The module's own AssemblyLoadContext. ReplicaTools.Core and everything it depends on (SSH.NET, BouncyCastle,
/// Microsoft.Extensions.Logging.Abstractions, YamlDotNet) ship in the module's 'dependencies' folder and load here, so
/// they neither clash with nor silently bind to other versions of the same assemblies already loaded in the session
/// (Posh-SSH loads Renci.SshNet 2024.0.0.0 into the default context; powershell-yaml loads its own YamlDotNet).
/// </summary>
/// <remarks>
/// Only ReplicaTools.Core is handed to the default context (this assembly's cmdlets use its types); the assemblies it
/// references resolve inside this context from the dependencies folder first. Framework assemblies come from the
/// default context. The pattern is PowerShell's "Resolving PowerShell module assembly dependency conflicts" (ALC).
/// </remarks>
public sealed class ModuleLoadContext : AssemblyLoadContext
{
    public const string ContextName = "ReplicaTools";
    private const string CoreAssembly = "ReplicaTools.Core";
    private static readonly object Gate = new();
    private static ModuleLoadContext? instance;
    private readonly string directory;

    private ModuleLoadContext(string directory)
        : base(ContextName, isCollectible: false) => this.directory = directory;

    /// <summary>The folder next to ReplicaTools.dll (and this loader) that holds the core and its dependencies.</summary>
    public static string DependencyDirectory => Path.Combine(Path.GetDirectoryName(typeof(ModuleLoadContext).Assembly.Location)!, "dependencies");

    /// <summary>Hands ReplicaTools.Core to the default context from this context; idempotent.</summary>
    internal static void Register()
    {
        lock (Gate)
        {
            if (instance is not null || !Directory.Exists(DependencyDirectory))
            {
                // No dependencies folder: running from a build output where everything sits side by side.
                return;
            }

            instance = new ModuleLoadContext(DependencyDirectory);
            Default.Resolving += ResolveCore;
        }
    }

    protected override Assembly? Load(AssemblyName assemblyName)
    {
        var path = Path.Combine(directory, assemblyName.Name + ".dll");
        return File.Exists(path) ? LoadFromAssemblyPath(path) : null;
    }

    private static Assembly? ResolveCore(AssemblyLoadContext context, AssemblyName name) =>
        name.Name == CoreAssembly ? instance!.LoadFromAssemblyName(name) : null;
}

/// <summary>
/// Sets up <see cref="ModuleLoadContext"/> when Import-Module loads this assembly. The manifest lists it under
/// NestedModules, which PowerShell imports before RootModule: ReplicaTools.dll's cmdlet types refer to core types, and
/// PowerShell loads them while it looks for cmdlets, before any initializer of ReplicaTools.dll itself could run.
/// </summary>
public sealed class ModuleInitializer : IModuleAssemblyInitializer
{
    public void OnImport() => ModuleLoadContext.Register();
}
