using System.Management.Automation;
using System.Reflection;
using System.Runtime.Loader;
using ReplicaTools.Core.Remote;

namespace ReplicaTools;

/// <summary>
/// Keeps <c>[ReplicaTools.Core.…]</c> type literals working in scripts. The core loads in the module's own
/// AssemblyLoadContext, and PowerShell's type-name resolution looks only at the default context; so each public core
/// type is registered under its full name as a type accelerator while the module is imported.
/// </summary>
internal static class CoreTypeNames
{
    private static readonly object Gate = new();
    private static List<string>? registered;

    public static void Register()
    {
        var core = typeof(ReplicaSession).Assembly;
        if (AssemblyLoadContext.GetLoadContext(core) == AssemblyLoadContext.Default)
        {
            return;
        }

        lock (Gate)
        {
            if (registered is not null || Accelerators() is not { } accelerators)
            {
                return;
            }

            registered = new List<string>();
            var add = accelerators.GetMethod("Add", BindingFlags.Public | BindingFlags.Static, new[] { typeof(string), typeof(Type) });
            foreach (var type in core.GetExportedTypes().Where(t => !t.IsGenericTypeDefinition && t.FullName is not null))
            {
                add?.Invoke(null, new object[] { type.FullName!, type });
                registered.Add(type.FullName!);
            }
        }
    }

    public static void Unregister()
    {
        lock (Gate)
        {
            if (registered is null || Accelerators() is not { } accelerators)
            {
                return;
            }

            var remove = accelerators.GetMethod("Remove", BindingFlags.Public | BindingFlags.Static, new[] { typeof(string) });
            foreach (var name in registered)
            {
                remove?.Invoke(null, new object[] { name });
            }

            registered = null;
        }
    }

    // Not public API, but stable since PowerShell 3 and what modules use to publish type names.
    private static Type? Accelerators() => typeof(PSObject).Assembly.GetType("System.Management.Automation.TypeAccelerators");
}

/// <summary>Registers the core's type names when the module is imported (the core is loaded by then: see ReplicaTools.Loader).</summary>
public sealed class CoreTypeNamesInitializer : IModuleAssemblyInitializer
{
    public void OnImport() => CoreTypeNames.Register();
}
