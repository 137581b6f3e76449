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
        var exports = TryRun(token => manager.ListAsync(NbdExportSelection.Matcher(Name), warnAboutStale: true, token), session.Host.Name);
        if (exports is null)
        {
            return;
        }

        foreach (var export in NbdExportSelection.Select(this, exports, Name, session.Host.Name))
        {
            export.Session = session;
            export.HostName = session.HostName;
            WriteObject(export);
        }
    }
}

/// <summary>Picks exports by name patterns, writing ObjectNotFound for a plain name that matches nothing.</summary>
internal static class NbdExportSelection
{
    /// <summary>Whether an export name matches any of the patterns (every name when there are none).</summary>
    public static Func<string, bool>? Matcher(string[]? patterns)
    {
        if (patterns is null || patterns.Length == 0)
        {
            return null;
        }

        var wildcards = patterns.Select(p => WildcardPattern.Get(p, WildcardOptions.IgnoreCase)).ToArray();
        return name => wildcards.Any(w => w.IsMatch(name));
    }

    public static IReadOnlyList<NbdExport> Select(Cmdlet cmdlet, IReadOnlyList<NbdExport> exports, string[]? patterns, string hostName)
    {
        if (patterns is null || patterns.Length == 0)
        {
            return exports;
        }

        var selected = new List<NbdExport>();
        foreach (var pattern in patterns)
        {
            var wildcard = WildcardPattern.Get(pattern, WildcardOptions.IgnoreCase);
            var matches = exports.Where(e => wildcard.IsMatch(e.Name)).ToArray();
            if (matches.Length == 0 && !WildcardPattern.ContainsWildcardCharacters(pattern))
            {
                cmdlet.WriteError(new ErrorRecord(
                    new ItemNotFoundException($"On host '{hostName}', there is no NBD export named '{pattern}'. Get-NbdExport lists the exports of a host."),
                    "NbdExportNotFound", ErrorCategory.ObjectNotFound, pattern));
            }

            selected.AddRange(matches.Where(m => !selected.Contains(m)));
        }

        return selected;
    }
}
