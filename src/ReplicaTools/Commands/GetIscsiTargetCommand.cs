using System.Management.Automation;
using ReplicaTools.Core.Iscsi;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "IscsiTarget")]
[OutputType(typeof(IscsiTarget))]
public sealed class GetIscsiTargetCommand : IscsiCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    public string[]? Iqn { get; set; }

    protected override void ProcessRecord()
    {
        var session = ResolveSession();
        var manager = CreateManager(session);
        var targets = TryRun(token => manager.ListAsync(token), session.Host.Name);
        if (targets is not null)
        {
            foreach (var target in Selection(Iqn, session.Host.Name).Select(this, targets, t => t.Iqn))
            {
                WriteObject(Stamp(target, session));
            }
        }
    }
}
