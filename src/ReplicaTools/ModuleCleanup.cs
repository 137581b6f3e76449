using System.Management.Automation;
using ReplicaTools.Core.Remote;

namespace ReplicaTools;

/// <summary>Closes every shared SSH connection when the module is removed (Remove-Module or the end of the session), and drops the core's type names.</summary>
public sealed class ModuleCleanup : IModuleAssemblyCleanup
{
    public void OnRemove(PSModuleInfo psModuleInfo)
    {
        foreach (var session in ReplicaSessionRegistry.Sessions)
        {
            ReplicaSessionRegistry.RemoveAsync(session).Wait(TimeSpan.FromSeconds(10));
        }

        CoreTypeNames.Unregister();
    }
}
