using System.Net;
using System.Text.RegularExpressions;

namespace ReplicaTools.Core.Iscsi;

/// <summary>What <see cref="IscsiTargetManager.PlanAsync"/> sets up: one tgt target with one LUN.</summary>
public sealed partial class IscsiTargetRequest
{
    /// <summary>tgt's own conf.d directory; /etc/tgt/targets.conf includes <c>conf.d/*.conf</c> (Debian, Ubuntu, Fedora).</summary>
    public const string DefaultConfigDirectory = "/etc/tgt/conf.d";

    /// <summary>RFC 3720 section 3.2.6 name limit.</summary>
    public const int MaxNameBytes = 223;

    public required string Iqn { get; init; }

    /// <summary>Absolute path of the file or block device the LUN serves.</summary>
    public required string BackingStore { get; init; }

    /// <summary>1-255 (LUN 0 is tgt's controller).</summary>
    public int Lun { get; init; } = 1;

    public IReadOnlyList<string> InitiatorName { get; init; } = Array.Empty<string>();

    public IReadOnlyList<string> InitiatorAddress { get; init; } = Array.Empty<string>();

    /// <summary>False: write the configuration as a standby file and do not start the target (the secondary of a replicated disk).</summary>
    public bool Start { get; init; } = true;

    /// <summary>Checks everything that needs no host; throws <see cref="ReplicaException"/> (IscsiTargetInvalidArgument) naming the parameter.</summary>
    public void Validate(string hostName)
    {
        ValidateIqn(hostName, "-Iqn", Iqn);
        if (string.IsNullOrEmpty(BackingStore) || !BackingStore.StartsWith('/') || !IsConfigSafe(BackingStore))
        {
            throw Invalid(hostName, BackingStore, $"-BackingStore '{BackingStore}' is not usable: give the absolute path of a file or block device on host '{hostName}', without blanks, quotes, '<', '>' or '#' (tgt's configuration file cannot carry them).");
        }

        if (Lun is < 1 or > 255)
        {
            throw Invalid(hostName, Lun, $"-Lun {Lun} is out of range: give 1-255 (tgt keeps LUN 0 for its controller).");
        }

        foreach (var name in InitiatorName)
        {
            ValidateIqn(hostName, "-InitiatorName", name);
        }

        foreach (var address in InitiatorAddress)
        {
            var ip = address.Split('/')[0];
            if (!IPAddress.TryParse(ip, out _) || !IsConfigSafe(address))
            {
                throw Invalid(hostName, address, $"-InitiatorAddress '{address}' is not an IP address (or ADDRESS/PREFIX).");
            }
        }
    }

    /// <summary>Throws unless <paramref name="name"/> is an iSCSI name of the iqn. or eui. form (RFC 3720 section 3.2.6.3).</summary>
    public static void ValidateIqn(string hostName, string parameter, string? name)
    {
        if (name is null || name.Length > MaxNameBytes || !(IqnPattern().IsMatch(name) || EuiPattern().IsMatch(name)))
        {
            throw Invalid(hostName, name, $"{parameter} '{name}' is not an iSCSI name: use iqn.YYYY-MM.reversed.domain[:identifier] in lower case (e.g. iqn.2024-10.com.example:r0), at most {MaxNameBytes} characters, or eui. and 16 hex digits.");
        }
    }

    /// <summary>The conf.d file of a target: its IQN with ':' replaced by '_', plus .conf.</summary>
    public static string ConfigFileName(string iqn) => iqn.Replace(':', '_') + ".conf";

    internal static bool IsConfigSafe(string value) => value.All(c => !char.IsWhiteSpace(c) && !char.IsControl(c) && c is not ('"' or '\'' or '<' or '>' or '#' or '\\'));

    private static ReplicaException Invalid(string hostName, object? target, string message) =>
        new("IscsiTargetInvalidArgument", ReplicaErrorCategory.InvalidArgument, message, hostName, target);

    [GeneratedRegex(@"^iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[a-z0-9.:_-]+)?$", RegexOptions.CultureInvariant)]
    private static partial Regex IqnPattern();

    [GeneratedRegex("^eui\\.[0-9A-F]{16}$", RegexOptions.CultureInvariant)]
    private static partial Regex EuiPattern();
}
