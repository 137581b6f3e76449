using System.Xml.Linq;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Libvirt;

/// <summary>A libvirt domain, driven through virsh on its host so libvirt keeps ownership of it.</summary>
public sealed class LibvirtVirtualMachine : VirtualMachine
{
    public const string DefaultUri = "qemu:///system";

    /// <exception cref="ArgumentException">The domain name is empty.</exception>
    public LibvirtVirtualMachine(ReplicaSession session, string domainName, string? connectionUri = null)
        : this(VmTarget.Libvirt(session, domainName, connectionUri))
    {
    }

    internal LibvirtVirtualMachine(VmTarget target)
        : base(target)
    {
    }

    public string DomainName => Name;

    /// <summary>The libvirt connection URI used on the VM host (default qemu:///system).</summary>
    public string ConnectionUri => Target.LibvirtUri!;

    /// <summary>A virsh command against this VM's libvirt: virsh -c URI ARGS.</summary>
    public CommandSpec Virsh(params string[] arguments) => Virsh(arguments, TimeSpan.FromMinutes(2));

    public CommandSpec Virsh(IEnumerable<string> arguments, TimeSpan timeout) =>
        new(new[] { "virsh", "-q", "-c", ConnectionUri }.Concat(arguments)) { Timeout = timeout };

    /// <summary>Runs virsh; a "domain not found" failure becomes <see cref="VmNotFoundException"/>.</summary>
    public async Task<CommandResult> RunVirshAsync(CommandSpec command, CancellationToken cancellationToken = default)
    {
        try
        {
            return await Host.RunAsync(command, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandFailedException ex) when (ex.StandardError.Contains("failed to get domain", StringComparison.OrdinalIgnoreCase)
                                                || ex.StandardError.Contains("Domain not found", StringComparison.OrdinalIgnoreCase))
        {
            throw new VmNotFoundException(Host.Name, DomainName, $"libvirt ({ConnectionUri}) has no such domain.");
        }
    }

    public override Mirror.DriveMirrorBackend CreateMirrorBackend() => new Mirror.LibvirtDriveMirror(this);

    public override Clone.PointInTimeSource CreatePointInTimeSource(string scratchDirectory) => new Clone.LibvirtPointInTime(this, scratchDirectory);

    public override async Task<VmRunState> GetStateAsync(CancellationToken cancellationToken = default)
    {
        var result = await RunVirshAsync(Virsh("domstate", "--", DomainName), cancellationToken).ConfigureAwait(false);
        return result.StandardOutput.Trim() switch
        {
            "running" => VmRunState.Running,
            "paused" or "pmsuspended" => VmRunState.Paused,
            "shut off" or "shutdown" or "crashed" => VmRunState.ShutOff,
            _ => VmRunState.Other,
        };
    }

    public override async Task<IReadOnlyList<VmDisk>> GetDisksAsync(CancellationToken cancellationToken = default) =>
        ParseDisks(await GetXmlAsync(cancellationToken).ConfigureAwait(false));

    /// <summary>The live domain XML (virsh dumpxml).</summary>
    public async Task<XDocument> GetXmlAsync(CancellationToken cancellationToken = default)
    {
        var result = await RunVirshAsync(Virsh("dumpxml", "--", DomainName), cancellationToken).ConfigureAwait(false);
        return XDocument.Parse(result.StandardOutput);
    }

    /// <summary>Disks (device='disk') from domain XML, with their source as a path or URL.</summary>
    public static IReadOnlyList<VmDisk> ParseDisks(XDocument domain)
    {
        var disks = new List<VmDisk>();
        foreach (var disk in domain.Root?.Element("devices")?.Elements("disk") ?? Enumerable.Empty<XElement>())
        {
            if ((string?)disk.Attribute("device") is not (null or "disk"))
            {
                continue;
            }

            var target = (string?)disk.Element("target")?.Attribute("dev");
            if (target is null)
            {
                continue;
            }

            var source = disk.Element("source");
            var index = (string?)source?.Attribute("index");
            disks.Add(new VmDisk
            {
                Drive = target,
                DeviceId = (string?)disk.Element("alias")?.Attribute("name"),
                NodeName = index is null ? null : $"libvirt-{index}-format",
                Source = SourceOf(disk),
                Format = (string?)disk.Element("driver")?.Attribute("type"),
            });
        }

        return disks;
    }

    private static string? SourceOf(XElement disk)
    {
        var source = disk.Element("source");
        if (source is null)
        {
            return null;
        }

        switch ((string?)disk.Attribute("type"))
        {
            case "network":
                var protocol = (string?)source.Attribute("protocol") ?? "network";
                var host = source.Element("host");
                var server = (string?)host?.Attribute("name");
                var port = (string?)host?.Attribute("port");
                var name = ((string?)source.Attribute("name") ?? string.Empty).TrimStart('/');
                return $"{protocol}://{server}{(port is null ? string.Empty : ":" + port)}/{name}";
            case "block":
                return (string?)source.Attribute("dev");
            case "volume":
                return $"{(string?)source.Attribute("pool")}/{(string?)source.Attribute("volume")}";
            default:
                return (string?)source.Attribute("file");
        }
    }
}
