using System.Text;
using System.Xml.Linq;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;

namespace ReplicaTools.Core.Libvirt;

/// <summary>A network disk attached to a running VM by Mount-ReplicatedDisk: the VM identity (it pipes on) and what was attached.</summary>
public sealed record AttachedDisk : VmObject
{
    public AttachedDisk(VmTarget target)
        : base(target)
    {
    }

    /// <summary>nbd or iscsi.</summary>
    public required string Protocol { get; init; }

    /// <summary>The export the disk reads from.</summary>
    public required string Uri { get; init; }

    public LibvirtDiskBus Bus { get; init; }

    /// <summary>True when the disk is also in the persistent definition (virsh attach-device --config).</summary>
    public bool Persistent { get; init; }

    /// <summary>The disk element attached.</summary>
    public required string Xml { get; init; }
}

/// <summary>How a network disk will be attached to a VM: the element (validated) and the exact virsh command.</summary>
public sealed class NetworkDiskAttachPlan
{
    internal NetworkDiskAttachPlan(LibvirtVirtualMachine vm, LibvirtDiskXml disk, PlannedCommand? step, bool persistent)
    {
        Vm = vm;
        Disk = disk;
        Step = step;
        Persistent = persistent;
    }

    public LibvirtDiskXml Disk { get; }

    /// <summary>The virsh attach-device command (the element on its standard input); null when the disk is attached already.</summary>
    public PlannedCommand? Step { get; }

    public bool Persistent { get; }

    internal LibvirtVirtualMachine Vm { get; }

    public string Describe() => Step?.ToString() ?? $"{Disk.Uri} is attached to {Vm.DisplayName} as {Disk.TargetDev} already; nothing to do.";
}

/// <summary>Attaches NBD and iSCSI exports (a replicated disk's) to running libvirt domains with virsh attach-device --live.</summary>
public static class NetworkDiskAttacher
{
    /// <summary>
    /// Builds the disk element for <paramref name="uri"/>, picking the next free target name on the bus from the domain's
    /// live XML, and validates it with virt-xml-validate on the VM host. A disk already attached from the same export is
    /// found and left as it is.
    /// </summary>
    /// <exception cref="ReplicaException">The VM is not a libvirt domain, not running, the target name is taken, or libvirt's schema rejects the element.</exception>
    public static async Task<NetworkDiskAttachPlan> PlanAsync(VirtualMachine vm, string uri, LibvirtDiskBus bus, string? targetDev, string? initiatorName, bool persistent, CancellationToken cancellationToken = default)
    {
        if (vm is not LibvirtVirtualMachine domain)
        {
            throw new ReplicaException("MountNeedsLibvirt", ReplicaErrorCategory.NotImplemented,
                $"{vm.DisplayName} is a bare QEMU; Mount-ReplicatedDisk attaches libvirt disk XML to libvirt domains (-VMName). For a bare QEMU, add the export with QMP blockdev-add and device_add.", vm.Host.Name, vm.Name);
        }

        var state = await domain.GetStateAsync(cancellationToken).ConfigureAwait(false);
        if (state is not (VmRunState.Running or VmRunState.Paused))
        {
            throw new ReplicaException("VmNotRunning", ReplicaErrorCategory.InvalidOperation,
                $"{domain.DisplayName} is {state}; a disk is attached live to a running domain (start it first, or add the element to its definition with virsh attach-device --config).", domain.Host.Name, domain.Name);
        }

        var xml = await domain.GetXmlAsync(cancellationToken).ConfigureAwait(false);
        var targets = xml.Root?.Element("devices")?.Elements("disk").Select(d => (string?)d.Element("target")?.Attribute("dev")).OfType<string>().ToArray() ?? Array.Empty<string>();
        var disk = LibvirtDiskXmlBuilder.FromUri(uri, bus, targetDev, targets, initiatorName);
        var existing = LibvirtVirtualMachine.ParseDisks(xml).FirstOrDefault(d => SameExport(d.Source, disk));
        if (existing is not null)
        {
            return new NetworkDiskAttachPlan(domain, LibvirtDiskXmlBuilder.FromUri(uri, bus, existing.Drive, initiatorName: initiatorName), null, persistent);
        }

        if (targets.Contains(disk.TargetDev, StringComparer.Ordinal))
        {
            throw new ReplicaException("TargetDevInUse", ReplicaErrorCategory.ResourceExists,
                $"{domain.DisplayName} already has a disk '{disk.TargetDev}'. Give another -Drive, or leave it out to take the next free name on bus {bus}.", domain.Host.Name, disk.TargetDev);
        }

        if (await LibvirtDiskXmlBuilder.ValidateAsync(domain.Host, disk, cancellationToken).ConfigureAwait(false) is { } complaint)
        {
            throw new ReplicaException("LibvirtDiskXmlInvalid", ReplicaErrorCategory.InvalidData,
                $"libvirt's schema (virt-xml-validate on '{domain.Host.Name}') rejects the disk element for {uri}: {complaint}", domain.Host.Name, disk.Xml);
        }

        var arguments = new List<string> { "attach-device", "--domain", domain.DomainName, "--file", "/dev/stdin", "--live" };
        if (persistent)
        {
            arguments.Add("--config");
        }

        var command = domain.Virsh(arguments.ToArray()).WithStandardInput(Encoding.UTF8.GetBytes(disk.Xml));
        var step = new PlannedCommand(domain.Host.Name, command, $"attach {uri} to {domain.DomainName} as {disk.TargetDev}").ShowingInput();
        return new NetworkDiskAttachPlan(domain, disk, step, persistent);
    }

    /// <summary>Runs a plan; the result names the VM and the new drive.</summary>
    public static async Task<AttachedDisk> AttachAsync(NetworkDiskAttachPlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (plan.Step is { } step)
        {
            await plan.Vm.RunVirshAsync(step.Command, cancellationToken).ConfigureAwait(false);
            OperationContext.Reporter.Verbose($"[{plan.Vm.Host.Name}] {plan.Disk.Uri} attached to {plan.Vm.DomainName} as {plan.Disk.TargetDev}.");
        }

        return new AttachedDisk(plan.Vm.Target)
        {
            Drive = plan.Disk.TargetDev,
            Protocol = plan.Disk.Protocol,
            Uri = plan.Disk.Uri,
            Bus = plan.Disk.Bus,
            Persistent = plan.Persistent,
            Xml = plan.Disk.Xml,
        };
    }

    private static bool SameExport(string? source, LibvirtDiskXml disk) =>
        source is not null && string.Equals(source, $"{disk.Protocol}://{disk.ExportHost}:{disk.Port}/{disk.SourceName}", StringComparison.Ordinal);
}
