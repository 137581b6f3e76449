using System.Management.Automation;

namespace ReplicaTools;

/// <summary>
/// The one way the Get- cmdlets pick objects by name patterns (-Name a*, b): case-insensitive PowerShell wildcards,
/// objects in pattern order without repeats, and for a plain name (no wildcard) that matches nothing a non-terminating
/// ObjectNotFound error (ItemNotFoundException, ErrorId THINGNotFound, target the name) saying where nothing was found and
/// how to list what there is.
/// </summary>
internal sealed class WildcardSelection
{
    private readonly string[]? patterns;

    /// <param name="patterns">The patterns; null or empty selects everything.</param>
    /// <param name="errorId">The not-found ErrorId, e.g. NbdExportNotFound.</param>
    /// <param name="notFound">The not-found message for a name, e.g. "On host 'h', there is no NBD export named 'x'. Get-NbdExport lists them."</param>
    public WildcardSelection(string[]? patterns, string errorId, Func<string, string> notFound)
    {
        this.patterns = patterns is { Length: > 0 } ? patterns : null;
        ErrorId = errorId;
        NotFound = notFound;
    }

    public string ErrorId { get; }

    public Func<string, string> NotFound { get; }

    /// <summary>Whether a name matches any pattern (always, without patterns): for filtering at the source.</summary>
    public Func<string, bool> Matcher
    {
        get
        {
            if (patterns is null)
            {
                return _ => true;
            }

            var wildcards = patterns.Select(p => WildcardPattern.Get(p, WildcardOptions.IgnoreCase)).ToArray();
            return name => wildcards.Any(w => w.IsMatch(name));
        }
    }

    /// <summary>The items whose <paramref name="name"/> matches; writes the not-found error through <paramref name="cmdlet"/> for each plain name without a match.</summary>
    public IReadOnlyList<T> Select<T>(Cmdlet cmdlet, IEnumerable<T> items, Func<T, string> name)
    {
        var all = items.ToList();
        if (patterns is null)
        {
            return all;
        }

        var selected = new List<T>();
        foreach (var pattern in patterns)
        {
            var wildcard = WildcardPattern.Get(pattern, WildcardOptions.IgnoreCase);
            var matches = all.Where(item => wildcard.IsMatch(name(item))).ToList();
            if (matches.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(pattern))
            {
                cmdlet.WriteError(new ErrorRecord(new ItemNotFoundException(NotFound(pattern)), ErrorId, ErrorCategory.ObjectNotFound, pattern));
            }

            selected.AddRange(matches.Where(m => !selected.Contains(m)));
        }

        return selected;
    }
}
