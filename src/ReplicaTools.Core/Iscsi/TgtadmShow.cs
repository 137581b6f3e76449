using System.Globalization;

namespace ReplicaTools.Core.Iscsi;

/// <summary>One target as <c>tgtadm --lld iscsi --op show --mode target</c> prints it.</summary>
public sealed record TgtTarget(int Tid, string Iqn, string State, IReadOnlyList<TgtLun> Luns, IReadOnlyList<string> Acl, IReadOnlyList<string> ConnectedInitiators);

/// <summary>A data LUN of a target (LUN 0, tgt's controller, is left out).</summary>
public sealed record TgtLun(int Lun, string BackingStore);

/// <summary>
/// Parses tgtadm's text reports (tgt 1.0.x has no JSON output): the target list (<c>--mode target --op show</c>) and
/// the portal list (<c>--mode portal --op show</c>). The layout is tgt's usr/target.c and usr/iscsi/iscsid.c.
/// </summary>
public static class TgtadmShow
{
    public static IReadOnlyList<TgtTarget> ParseTargets(string output)
    {
        var targets = new List<TgtTarget>();
        int? tid = null;
        string iqn = string.Empty, state = string.Empty, section = string.Empty;
        var luns = new List<TgtLun>();
        var acl = new List<string>();
        var initiators = new List<string>();
        int? lun = null;

        void Flush()
        {
            if (tid is { } id)
            {
                targets.Add(new TgtTarget(id, iqn, state, luns.ToArray(), acl.ToArray(), initiators.ToArray()));
            }

            luns.Clear();
            acl.Clear();
            initiators.Clear();
            lun = null;
            section = string.Empty;
        }

        foreach (var raw in output.Split('\n'))
        {
            var line = raw.Trim();
            if (!raw.StartsWith(' ') && line.StartsWith("Target ", StringComparison.Ordinal))
            {
                Flush();
                var colon = line.IndexOf(':', StringComparison.Ordinal);
                if (colon > 7 && int.TryParse(line.AsSpan(7, colon - 7), NumberStyles.None, CultureInfo.InvariantCulture, out var parsed))
                {
                    tid = parsed;
                    iqn = line[(colon + 1)..].Trim();
                    state = string.Empty;
                }
                else
                {
                    tid = null;
                }

                continue;
            }

            if (line.EndsWith(" information:", StringComparison.Ordinal))
            {
                section = line;
                continue;
            }

            switch (section)
            {
                case "System information:" when line.StartsWith("State:", StringComparison.Ordinal):
                    state = line[6..].Trim();
                    break;
                case "I_T nexus information:" when line.StartsWith("Initiator:", StringComparison.Ordinal):
                    var name = line[10..].Trim();
                    var alias = name.IndexOf(" alias:", StringComparison.Ordinal);
                    initiators.Add(alias >= 0 ? name[..alias] : name);
                    break;
                case "LUN information:" when line.StartsWith("LUN:", StringComparison.Ordinal):
                    lun = int.TryParse(line.AsSpan(4).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var number) ? number : null;
                    break;
                case "LUN information:" when line.StartsWith("Backing store path:", StringComparison.Ordinal) && lun is > 0:
                    luns.Add(new TgtLun(lun.Value, line["Backing store path:".Length..].Trim()));
                    break;
                case "ACL information:" when line.Length > 0:
                    acl.Add(line);
                    break;
            }
        }

        Flush();
        return targets;
    }

    /// <summary>Portals from <c>Portal: ADDRESS:PORT,TPGT</c> lines (IPv6 addresses come bracketed).</summary>
    public static IReadOnlyList<(string Address, int Port)> ParsePortals(string output)
    {
        var portals = new List<(string, int)>();
        foreach (var raw in output.Split('\n'))
        {
            var line = raw.Trim();
            if (!line.StartsWith("Portal:", StringComparison.Ordinal))
            {
                continue;
            }

            var endpoint = line[7..].Trim();
            var comma = endpoint.LastIndexOf(',');
            if (comma > 0)
            {
                endpoint = endpoint[..comma];
            }

            var colon = endpoint.LastIndexOf(':');
            if (colon > 0 && int.TryParse(endpoint.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port))
            {
                portals.Add((endpoint[..colon].Trim('[', ']'), port));
            }
        }

        return portals;
    }
}
