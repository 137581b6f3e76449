using System.Globalization;
using System.Text;

namespace ReplicaTools.Core.Iscsi;

/// <summary>
/// The conf.d snippet of one target, in the syntax of tgt's targets.conf (tgt-admin(8), targets.conf.example):
/// read by <c>tgt-admin -e</c> when tgtd starts, so the target survives a restart.
/// </summary>
public static class TgtConfig
{
    /// <summary>First line of every file ReplicaTools writes; files without it are never read back or removed.</summary>
    public const string Header = "# Written by ReplicaTools (New-IscsiTarget); Remove-IscsiTarget deletes it.";

    /// <summary>Suffix of a configured target kept out of tgt's <c>include conf.d/*.conf</c>.</summary>
    public const string StandbySuffix = ".standby";

    public static string Build(IscsiTargetRequest request)
    {
        var lun = request.Lun.ToString(CultureInfo.InvariantCulture);
        var builder = new StringBuilder();
        builder.Append(Header).Append('\n');
        builder.Append("<target ").Append(request.Iqn).Append(">\n");
        builder.Append("    <backing-store ").Append(request.BackingStore).Append(">\n");
        builder.Append("        lun ").Append(lun).Append('\n');
        builder.Append("    </backing-store>\n");
        foreach (var name in request.InitiatorName)
        {
            builder.Append("    initiator-name ").Append(name).Append('\n');
        }

        foreach (var address in request.InitiatorAddress)
        {
            builder.Append("    initiator-address ").Append(address).Append('\n');
        }

        builder.Append("</target>\n");
        return builder.ToString();
    }

    /// <summary>Reads back a file <see cref="Build"/> wrote; null when the text is not one of ours.</summary>
    public static IscsiTargetRequest? Parse(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.TrimEntries);
        if (lines.Length == 0 || lines[0] != Header)
        {
            return null;
        }

        string? iqn = null, backingStore = null;
        var lun = 1;
        var names = new List<string>();
        var addresses = new List<string>();
        foreach (var line in lines.Skip(1))
        {
            if (line.StartsWith("<target ", StringComparison.Ordinal) && line.EndsWith('>'))
            {
                iqn = line["<target ".Length..^1].Trim();
            }
            else if (line.StartsWith("<backing-store ", StringComparison.Ordinal) && line.EndsWith('>'))
            {
                backingStore = line["<backing-store ".Length..^1].Trim();
            }
            else if (line.StartsWith("lun ", StringComparison.Ordinal) && int.TryParse(line[4..], NumberStyles.None, CultureInfo.InvariantCulture, out var parsed))
            {
                lun = parsed;
            }
            else if (line.StartsWith("initiator-name ", StringComparison.Ordinal))
            {
                names.Add(line["initiator-name ".Length..].Trim());
            }
            else if (line.StartsWith("initiator-address ", StringComparison.Ordinal))
            {
                addresses.Add(line["initiator-address ".Length..].Trim());
            }
        }

        return iqn is null || backingStore is null ? null : new IscsiTargetRequest
        {
            Iqn = iqn,
            BackingStore = backingStore,
            Lun = lun,
            InitiatorName = names,
            InitiatorAddress = addresses,
        };
    }
}
