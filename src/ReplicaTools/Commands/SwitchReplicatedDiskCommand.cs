using System.Management.Automation;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Topology;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Switch, "ReplicatedDisk", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(ReplicatedDisk))]
public sealed class SwitchReplicatedDiskCommand : ReplicatedDiskCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Name { get; set; } = string.Empty;

    /// <summary>The storage host to promote: its session, host name, session name, topology host or kernel host name.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateNotNull]
    public object NewPrimary { get; set; } = null!;

    /// <summary>Promote although the new primary is not UpToDate, or the old one cannot be reached (it is dead).</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Name, nameof(Name)))
        {
            return;
        }

        var target = (NewPrimary is PSObject wrapped ? wrapped.BaseObject : NewPrimary) switch
        {
            ReplicaSession session => session.HostName,
            TopologyHost host => host.Name,
            var other => other.ToString() ?? string.Empty,
        };
        var hosts = StorageHosts;
        var plan = TryRun(token => Manager.PlanSwitchAsync(hosts, Name, target, Force, token), Name);
        if (plan is null)
        {
            return;
        }

        WriteWarnings(plan);
        if (plan.IsEmpty)
        {
            WriteVerbose(plan.Notes[^1]);
        }
        else if (!ShouldProcess($"replicated disk '{Name}'", Action($"Make {target} the primary", plan)))
        {
            return;
        }

        var disk = TryRun(token => Manager.ExecuteAsync(plan, token), Name);
        if (disk is not null)
        {
            WriteObject(disk);
        }
    }
}
