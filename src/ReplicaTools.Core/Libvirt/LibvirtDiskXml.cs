using System.Globalization;
using System.Text;
using System.Xml.Linq;
using ReplicaTools.Core.Iscsi;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Libvirt;

/// <summary>The guest bus of a disk (libvirt's &lt;target bus=&gt;).</summary>
public enum LibvirtDiskBus
{
    /// <summary>virtio-blk: the fastest (the seed's measurements), target names vda, vdb ...; hot-pluggable.</summary>
    Virtio,

    /// <summary>AHCI: the most compatible, target names sda ...; libvirt cannot hot-plug it.</summary>
    Sata,

    /// <summary>SCSI (needs a SCSI controller in the domain), target names sda ...</summary>
    Scsi,
}

/// <summary>
/// A libvirt <c>&lt;disk type='network'&gt;</c> element for a disk served over NBD or iSCSI (libvirt's formatdomain,
/// "Hard drives, floppy disks, CDROMs": source protocol, host, initiator), with what it was built from.
/// </summary>
public sealed class LibvirtDiskXml
{
    /// <summary>nbd or iscsi.</summary>
    public required string Protocol { get; init; }

    /// <summary>The server the VM's QEMU connects to (not named HostName: that is the VM host's parameter when piped on).</summary>
    public required string ExportHost { get; init; }

    public int Port { get; init; }

    /// <summary>The source name: the NBD export name, or IQN/LUN.</summary>
    public required string SourceName { get; init; }

    public LibvirtDiskBus Bus { get; init; }

    /// <summary>The guest device name (target dev), e.g. vdb.</summary>
    public required string TargetDev { get; init; }

    /// <summary>The same as <see cref="TargetDev"/>, under the name the VM cmdlets' -Drive binds to.</summary>
    public string Drive => TargetDev;

    /// <summary>The iSCSI initiator name QEMU logs in with; null for NBD or when the target lets every initiator in.</summary>
    public string? InitiatorName { get; init; }

    /// <summary>The export's URI the element was built from.</summary>
    public required string Uri { get; init; }

    /// <summary>The element, as virsh attach-device and domain XML take it.</summary>
    public required string Xml { get; init; }

    public override string ToString() => Xml;
}

/// <summary>Builds and checks <see cref="LibvirtDiskXml"/> elements.</summary>
public static class LibvirtDiskXmlBuilder
{
    public const int DefaultNbdPort = 10809;

    /// <summary>
    /// The element for an export URI (nbd://HOST[:PORT]/NAME or iscsi://HOST[:PORT]/IQN/LUN): raw format, cache='none'
    /// (writes go to the replicated disk, not the VM host's page cache), host and port, and for iSCSI the initiator.
    /// </summary>
    /// <param name="targetDev">The guest device name; null takes the first name of the bus not in <paramref name="usedTargetDevs"/>.</param>
    /// <exception cref="ArgumentException">The URI is neither, or a name is malformed.</exception>
    public static LibvirtDiskXml FromUri(string uri, LibvirtDiskBus bus, string? targetDev = null, IEnumerable<string>? usedTargetDevs = null, string? initiatorName = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(uri);
        string protocol, host, sourceName;
        int port;
        if (IscsiUri.TryParse(uri, out var iscsiHost, out var iscsiPort, out var iqn, out var lun))
        {
            (protocol, host, port, sourceName) = ("iscsi", iscsiHost, iscsiPort, $"{iqn}/{lun.ToString(CultureInfo.InvariantCulture)}");
            if (initiatorName is not null)
            {
                IscsiTargetRequest.ValidateIqn(string.Empty, "-InitiatorName", initiatorName);
            }
        }
        else if (System.Uri.TryCreate(uri, UriKind.Absolute, out var parsed) && parsed.Scheme == "nbd" && parsed.AbsolutePath.Trim('/').Length > 0)
        {
            (protocol, host, port, sourceName) = ("nbd", parsed.Host.Trim('[', ']'), parsed.IsDefaultPort || parsed.Port < 0 ? DefaultNbdPort : parsed.Port, System.Uri.UnescapeDataString(parsed.AbsolutePath.Trim('/')));
            if (initiatorName is not null)
            {
                throw new ArgumentException($"-InitiatorName applies to iSCSI disks, not to the NBD export {uri}.", nameof(initiatorName));
            }
        }
        else
        {
            throw new ArgumentException($"'{uri}' is not an export URI: give nbd://HOST:PORT/EXPORT or iscsi://HOST:PORT/IQN/LUN (the Uri of New-NbdExport, New-IscsiTarget and Get-ReplicatedDisk objects).", nameof(uri));
        }

        var dev = targetDev ?? NextTargetDev(bus, usedTargetDevs ?? Array.Empty<string>());
        if (!IsTargetDevFor(bus, dev))
        {
            throw new ArgumentException($"-TargetDev '{dev}' does not fit bus {bus}: use {Prefix(bus)}a, {Prefix(bus)}b ...", nameof(targetDev));
        }

        var source = new XElement("source", new XAttribute("protocol", protocol), new XAttribute("name", sourceName),
            new XElement("host", new XAttribute("name", host), new XAttribute("port", port.ToString(CultureInfo.InvariantCulture))));
        if (initiatorName is not null)
        {
            source.Add(new XElement("initiator", new XElement("iqn", new XAttribute("name", initiatorName))));
        }

        var disk = new XElement("disk", new XAttribute("type", "network"), new XAttribute("device", "disk"),
            new XElement("driver", new XAttribute("name", "qemu"), new XAttribute("type", "raw"), new XAttribute("cache", "none")),
            source,
            new XElement("target", new XAttribute("dev", dev), new XAttribute("bus", bus.ToString().ToLowerInvariant())));
        return new LibvirtDiskXml
        {
            Protocol = protocol,
            ExportHost = host,
            Port = port,
            SourceName = sourceName,
            Bus = bus,
            TargetDev = dev,
            InitiatorName = initiatorName,
            Uri = uri,
            Xml = disk.ToString(),
        };
    }

    /// <summary>The first guest device name of the bus not in use: vda, vdb ... vdz, vdaa ... for virtio; sda ... otherwise.</summary>
    public static string NextTargetDev(LibvirtDiskBus bus, IEnumerable<string> used)
    {
        var taken = used.ToHashSet(StringComparer.Ordinal);
        for (var index = 0; ; index++)
        {
            var name = Prefix(bus) + Suffix(index);
            if (!taken.Contains(name))
            {
                return name;
            }
        }
    }

    /// <summary>
    /// Validates an element with libvirt's own schema, on <paramref name="host"/>: <c>virt-xml-validate - domain</c> reading a
    /// minimal domain that holds it. Returns null when valid, else the validator's complaint.
    /// </summary>
    public static async Task<string?> ValidateAsync(IReplicaHost host, LibvirtDiskXml disk, CancellationToken cancellationToken = default)
    {
        var document = $"<domain type='qemu'><name>replicatools-validate</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os><devices>{disk.Xml}</devices></domain>";
        var result = await host.RunAsync(new CommandSpec("virt-xml-validate", "-", "domain")
        {
            StandardInput = Encoding.UTF8.GetBytes(document),
            ThrowOnFailure = false,
            Timeout = TimeSpan.FromMinutes(1),
        }, cancellationToken).ConfigureAwait(false);
        return result.ExitCode == 0 ? null : CommandFailedException.StderrTail(result.StandardError + result.StandardOutput);
    }

    private static string Prefix(LibvirtDiskBus bus) => bus == LibvirtDiskBus.Virtio ? "vd" : "sd";

    private static bool IsTargetDevFor(LibvirtDiskBus bus, string dev) =>
        dev.StartsWith(Prefix(bus), StringComparison.Ordinal) && dev.Length > 2 && dev[2..].All(char.IsAsciiLetterLower);

    /// <summary>a ... z, aa ... az, ba ...: the kernel's (and libvirt's) disk name suffixes.</summary>
    private static string Suffix(int index)
    {
        var builder = new StringBuilder();
        index++;
        while (index > 0)
        {
            index--;
            builder.Insert(0, (char)('a' + index % 26));
            index /= 26;
        }

        return builder.ToString();
    }
}
