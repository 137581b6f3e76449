using System.Management.Automation;
using ReplicaTools.Core.Nbd;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "NbdExport")]
[OutputType(typeof(NbdExport))]
public sealed class GetNbdExportCommand : HostCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        var session = ResolveSession();
        var manager = new NbdExportManager(session.Host);
        var selection = NbdExportSelection.For(Name, session.Host.Name);
        var exports = TryRun(token => manager.ListAsync(selection.Matcher, warnAboutStale: true, token), session.Host.Name);
        if (exports is null)
        {
            return;
        }

        foreach (var export in selection.Select(this, exports, e => e.Name))
        {
            export.Session = session;
            export.HostName = session.HostName;
            WriteObject(export);
        }
    }
}

/// <summary>How the NBD export cmdlets pick exports by name (<see cref="WildcardSelection"/>).</summary>
internal static class NbdExportSelection
{
    public static WildcardSelection For(string[]? names, string hostName) => new(names, "NbdExportNotFound",
        name => $"On host '{hostName}', there is no NBD export named '{name}'. Get-NbdExport lists the exports of a host.");
}
