using System.Net;
using System.Security;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Iscsi;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Drbd;

/// <summary>What New-ReplicatedDisk sets up: the input of <see cref="ReplicatedDiskManager.PlanNewAsync"/>.</summary>
public sealed partial record ReplicatedDiskRequest
{
    /// <summary>drbdadm's limit for shared-secret (drbd-utils: "max len: 63").</summary>
    public const int MaxSecretLength = 63;

    /// <summary>nbd-server's default port (IANA).</summary>
    public const int DefaultNbdPort = 10809;

    /// <summary>The DRBD resource name; also names /etc/drbd.d/NAME.res and, by default, the NBD export.</summary>
    public required string Name { get; init; }

    /// <summary>The host that becomes primary: its disk's content is the one both nodes end up with.</summary>
    public required ReplicaSession Primary { get; init; }

    public required ReplicaSession Secondary { get; init; }

    /// <summary>The backing device on the primary.</summary>
    public required string PrimaryDisk { get; init; }

    /// <summary>The backing device on the secondary.</summary>
    public required string SecondaryDisk { get; init; }

    /// <summary>The device minor (/dev/drbdN); null picks the lowest one free on both hosts.</summary>
    public int? Minor { get; init; }

    public int Port { get; init; } = 7788;

    public DrbdProtocol Protocol { get; init; } = DrbdProtocol.C;

    /// <summary>The shared secret the nodes authenticate each other with (cram-hmac-alg); 1-63 printable ASCII characters.</summary>
    public required SecureString SharedSecret { get; init; }

    public string HmacAlgorithm { get; init; } = "sha256";

    public int? ResyncRateMBps { get; init; }

    /// <summary>startup { wfc-timeout }: the seed scenario's 15 s.</summary>
    public int? WaitForConnectionSeconds { get; init; } = 15;

    /// <summary>startup { degr-wfc-timeout }: the seed scenario's 60 s.</summary>
    public int? DegradedWaitSeconds { get; init; } = 60;

    /// <summary>The primary's address on the replication network; null uses the address the host is reached by.</summary>
    public string? PrimaryAddress { get; init; }

    public string? SecondaryAddress { get; init; }

    public ReplicatedDiskExport Export { get; init; } = ReplicatedDiskExport.None;

    /// <summary>The NBD export name; null uses <see cref="Name"/>.</summary>
    public string? ExportName { get; init; }

    public int NbdPort { get; init; } = DefaultNbdPort;

    /// <summary>Where the primary's NBD export listens; null: every address (0.0.0.0).</summary>
    public string? PrimaryExportAddress { get; init; }

    public string? SecondaryExportAddress { get; init; }

    /// <summary>The iSCSI target name (required with <see cref="ReplicatedDiskExport.Iscsi"/>).</summary>
    public string? Iqn { get; init; }

    public int Lun { get; init; } = 1;

    public IReadOnlyList<string> InitiatorName { get; init; } = Array.Empty<string>();

    public IReadOnlyList<string> InitiatorAddress { get; init; } = Array.Empty<string>();

    /// <summary>An image (any format qemu-img reads, path or URL on the primary) copied onto the new disk.</summary>
    public string? SourceImage { get; init; }

    /// <summary>Adopt DRBD metadata already on the disks (prepared in advance, or left by Remove-ReplicatedDisk) instead of refusing.</summary>
    public bool UseExistingMetadata { get; init; }

    /// <summary>Checks everything that needs no host; throws DrbdInvalidArgument (or DrbdSameHost) naming the parameter.</summary>
    public void Validate()
    {
        if (!NamePattern().IsMatch(Name ?? string.Empty))
        {
            throw DrbdErrors.Invalid(null, Name, $"-Name '{Name}' is not a usable resource name: use 1-63 letters, digits, '_', '-' or '.', starting with a letter or digit. It names /etc/drbd.d/NAME.res and goes into drbdadm command lines, so no spaces or shell characters.");
        }

        if (ReferenceEquals(Primary, Secondary) || (!Primary.IsLocal && !Secondary.IsLocal && string.Equals(Primary.HostName, Secondary.HostName, StringComparison.OrdinalIgnoreCase) && Primary.Port == Secondary.Port)
            || (Primary.IsLocal && Secondary.IsLocal))
        {
            throw new ReplicaException("DrbdSameHost", ReplicaErrorCategory.InvalidArgument,
                $"-PrimaryHost and -SecondaryHost are the same host ('{Primary.HostName}'). A replicated disk needs two different storage hosts.", Primary.HostName, Secondary.HostName);
        }

        foreach (var (parameter, disk) in new[] { ("-Disk (primary)", PrimaryDisk), ("-Disk (secondary)", SecondaryDisk) })
        {
            if (string.IsNullOrEmpty(disk) || !disk.StartsWith('/') || !IsConfigSafe(disk))
            {
                throw DrbdErrors.Invalid(null, disk, $"{parameter} '{disk}' is not the absolute path of a block device without blanks, quotes, ';', '{{', '}}' or '#'.");
            }
        }

        if (Minor is < 0 or > 1048575)
        {
            throw DrbdErrors.Invalid(null, Minor, $"-Device minor {Minor} is out of range (0-1048575).");
        }

        CheckPort("-Port", Port);
        if (!HmacPattern().IsMatch(HmacAlgorithm ?? string.Empty))
        {
            throw DrbdErrors.Invalid(null, HmacAlgorithm, $"-HmacAlgorithm '{HmacAlgorithm}' is not a kernel hash name (e.g. sha256, sha1, sha512).");
        }

        ValidateSecret(SharedSecret);
        if (ResyncRateMBps is < 1 or > 4_000_000)
        {
            throw DrbdErrors.Invalid(null, ResyncRateMBps, $"-ResyncRateMBps {ResyncRateMBps} is out of range (1-4000000 MiB/s).");
        }

        foreach (var (parameter, seconds) in new[] { ("-WaitForConnectionSeconds", WaitForConnectionSeconds), ("-DegradedWaitSeconds", DegradedWaitSeconds) })
        {
            if (seconds is < 0 or > 1_000_000)
            {
                throw DrbdErrors.Invalid(null, seconds, $"{parameter} {seconds} is out of range (0-1000000 s; 0 waits forever).");
            }
        }

        foreach (var (parameter, address) in new[] { ("-ReplicationAddress", PrimaryAddress), ("-ReplicationAddress", SecondaryAddress), ("-ExportAddress", PrimaryExportAddress), ("-ExportAddress", SecondaryExportAddress) })
        {
            if (address is not null && !IPAddress.TryParse(address, out _))
            {
                throw DrbdErrors.Invalid(null, address, $"{parameter} '{address}' is not an IP address.");
            }
        }

        if (PrimaryAddress is not null && PrimaryAddress == SecondaryAddress)
        {
            throw DrbdErrors.Invalid(null, PrimaryAddress, $"-ReplicationAddress gives both hosts the address {PrimaryAddress}; each node needs its own.");
        }

        switch (Export)
        {
            case ReplicatedDiskExport.Nbd:
                CheckPort("-NbdPort", NbdPort);
                if (ExportName is not null && !NamePattern().IsMatch(ExportName))
                {
                    throw DrbdErrors.Invalid(null, ExportName, $"-ExportName '{ExportName}' is not usable: 1-63 letters, digits, '_', '-' or '.'.");
                }

                break;
            case ReplicatedDiskExport.Iscsi:
                if (Iqn is null)
                {
                    throw DrbdErrors.Invalid(null, "Iqn", "-Export Iscsi needs -Iqn, the target's name (e.g. iqn.2024-10.com.example:r0).");
                }

                new IscsiTargetRequest { Iqn = Iqn, BackingStore = "/dev/drbd0", Lun = Lun, InitiatorName = InitiatorName, InitiatorAddress = InitiatorAddress }.Validate(Primary.HostName);
                break;
        }

        if (SourceImage is not null && (SourceImage.Length == 0 || SourceImage.Contains('\n') || SourceImage.Contains('\0')))
        {
            throw DrbdErrors.Invalid(null, SourceImage, "-SourceImage is empty or contains a newline.");
        }
    }

    /// <summary>The NBD export name the disk gets.</summary>
    public string EffectiveExportName => ExportName ?? Name;

    /// <summary>Throws DrbdInvalidArgument unless the secret is 1-63 printable ASCII characters without '"' or '\' (the message never contains it).</summary>
    public static void ValidateSecret(SecureString? secret)
    {
        if (secret is null || secret.Length == 0)
        {
            throw DrbdErrors.Invalid(null, "SharedSecret", "-SharedSecret is empty. Give the shared secret both nodes authenticate with (1-63 characters), e.g. (Read-Host -AsSecureString).");
        }

        if (secret.Length > MaxSecretLength)
        {
            throw DrbdErrors.Invalid(null, "SharedSecret", $"-SharedSecret is {secret.Length} characters long; DRBD takes at most {MaxSecretLength}.");
        }

        var plain = SecretText.Reveal(secret);
        if (plain.Any(c => c is < '!' or > '~' or '"' or '\\'))
        {
            throw DrbdErrors.Invalid(null, "SharedSecret", "-SharedSecret may contain only printable ASCII characters without blanks, '\"' or '\\' (it goes between double quotes in the resource file).");
        }
    }

    internal static bool IsConfigSafe(string value) => value.All(c => !char.IsWhiteSpace(c) && !char.IsControl(c) && c is not ('"' or '\'' or ';' or '{' or '}' or '#' or '\\'));

    private static void CheckPort(string parameter, int port)
    {
        if (port is < 1 or > 65535)
        {
            throw DrbdErrors.Invalid(null, port, $"{parameter} {port} is out of range (1-65535).");
        }
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[a-z0-9][a-z0-9_()-]{0,63}$", RegexOptions.CultureInvariant)]
    private static partial Regex HmacPattern();
}
