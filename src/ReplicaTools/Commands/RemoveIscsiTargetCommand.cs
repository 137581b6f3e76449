using System.Management.Automation;
using ReplicaTools.Core.Iscsi;
using ReplicaTools.Core.Operations;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Remove, "IscsiTarget", SupportsShouldProcess = true, DefaultParameterSetName = IqnSet)]
public sealed class RemoveIscsiTargetCommand : IscsiCmdlet
{
    private const string IqnSet = "Iqn";
    private const string InputObjectSet = "InputObject";

    /// <summary>Targets from Get-IscsiTarget or New-IscsiTarget.</summary>
    [Parameter(ParameterSetName = InputObjectSet, Mandatory = true, ValueFromPipeline = true)]
    [ValidateNotNull]
    public IscsiTarget[] InputObject { get; set; } = Array.Empty<IscsiTarget>();

    [Parameter(ParameterSetName = IqnSet, Mandatory = true, Position = 0)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Iqn { get; set; } = Array.Empty<string>();

    /// <summary>Remove targets even while initiators are logged in (they lose the disk).</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        var session = ResolveSession();
        var manager = CreateManager(session);
        IReadOnlyList<IscsiTarget> targets;
        if (ParameterSetName == InputObjectSet)
        {
            targets = InputObject;
        }
        else
        {
            var listed = TryRun(token => manager.ListAsync(token), session.Host.Name);
            if (listed is null)
            {
                return;
            }

            targets = Selection(Iqn, session.Host.Name).Select(this, listed, t => t.Iqn);
        }

        foreach (var target in targets)
        {
            // A target object knows its host, tgtd and directory: -InputObject works whatever host it came from.
            var own = ParameterSetName == InputObjectSet;
            var targetSession = own && target.Session is { } s ? s : session;
            var targetManager = own ? new IscsiTargetManager(targetSession.Host, target.ConfigDirectory ?? ConfigDirectory, target.ControlPort) : manager;
            var plan = targetManager.PlanRemoval(target, Force);
            var action = $"Delete target '{target.Iqn}' ({target.State}{(target.ConnectedInitiators.Count == 0 ? string.Empty : ", initiators logged in: " + string.Join(", ", target.ConnectedInitiators))}) with these commands:{Environment.NewLine}{PlannedCommand.Describe(plan)}";
            if (ShouldProcess($"iSCSI target '{target.Iqn}' on {targetSession.Host.Name}", action))
            {
                TryRun(token => targetManager.RemoveAsync(target, Force, token), target);
            }
        }
    }
}
