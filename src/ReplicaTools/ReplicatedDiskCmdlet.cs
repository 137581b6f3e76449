using System.Management.Automation;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools;

/// <summary>
/// A cmdlet that acts on an existing replicated disk: its storage hosts (-StorageHost, one or both nodes) and, except
/// for Get-ReplicatedDisk, its -Name. Both bind by property name, so ReplicatedDisk objects pipe from one cmdlet into
/// the next. With no -StorageHost the local machine is asked, as everywhere in the module.
/// </summary>
public abstract class ReplicatedDiskCmdlet : ReplicaCmdlet
{
    /// <summary>The storage hosts of the disk: sessions, host names or topology hosts.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ReplicaHost]
    [AllowNull]
    [AllowEmptyCollection]
    [Alias("ComputerName")]
    public ReplicaSession[]? StorageHost { get; set; }

    /// <summary>The hosts to ask (the local machine when none are given).</summary>
    protected IReadOnlyList<ReplicaSession> StorageHosts => StorageHost is { Length: > 0 } hosts ? hosts : new[] { ReplicaSession.Local };

    protected static ReplicatedDiskManager Manager => new();

    /// <summary>Writes the plan's warnings; a plan that cannot run here is a terminating error.</summary>
    protected void WriteWarnings(ReplicatedDiskPlan plan)
    {
        foreach (var warning in plan.Warnings)
        {
            WriteWarning(warning.ToString());
        }
    }

    /// <summary>The ShouldProcess action text: what the plan does, host by host.</summary>
    protected static string Action(string what, ReplicatedDiskPlan plan) => $"{what}:{Environment.NewLine}{plan.Describe()}";
}
