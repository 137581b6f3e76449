using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Failover;

public enum DiskCopyStatus
{
    /// <summary>The VM was started from this copy.</summary>
    Used,

    /// <summary>Probed (or tried) and found unusable; Reason says why.</summary>
    Skipped,

    /// <summary>Not looked at: an earlier copy was used.</summary>
    NotNeeded,
}

/// <summary>One copy of the disk and what the failover start made of it.</summary>
public sealed class DiskCopyReport
{
    /// <summary>1 = the primary, 2 = the first mirror copy, ...</summary>
    public int Preference { get; init; }

    public required string Location { get; init; }

    public DiskCopyStatus Status { get; set; } = DiskCopyStatus.NotNeeded;

    public string Reason { get; set; } = string.Empty;

    public string? Format { get; set; }

    public long? VirtualSize { get; set; }

    public double ProbeSeconds { get; set; }

    public override string ToString() => $"#{Preference} {Location}: {Status}{(Reason.Length > 0 ? " (" + Reason + ")" : string.Empty)}";
}

/// <summary>What Start-ReplicaVM did: which copy the VM runs on and why the others were skipped. Pipes into every VM cmdlet.</summary>
public sealed record ReplicaVmStartResult : VmObject
{
    public ReplicaVmStartResult(VmTarget target)
        : base(target)
    {
    }

    public string? PidFile { get; init; }

    /// <summary>The bare QEMU's process id on the host, read from its pid file; null for libvirt or when unknown (never 0).</summary>
    public int? ProcessId { get; init; }

    public required string UsedCopy { get; init; }

    public int UsedPreference { get; init; }

    /// <summary>False when the VM runs on a mirror copy because the preferred ones were unusable.</summary>
    public bool IsPrimary => UsedPreference == 1;

    public required IReadOnlyList<DiskCopyReport> Copies { get; init; }

    /// <summary>One line per skipped copy: why it was not used.</summary>
    public string SkippedReasons => string.Join("; ", Copies.Where(c => c.Status == DiskCopyStatus.Skipped).Select(c => $"#{c.Preference} {c.Location}: {c.Reason}"));

    public override string ToString() => $"{VM} on {HostName} from #{UsedPreference} {UsedCopy}";
}

/// <summary>Which VM to start and how; the disk copies in order of preference.</summary>
public sealed class ReplicaVmRequest
{
    public required string Name { get; init; }

    public required IReadOnlyList<ImageLocation> Copies { get; init; }

    /// <summary>The image format; default: what qemu-img detects for each copy.</summary>
    public string? Format { get; init; }

    public int? MemoryMB { get; init; }

    public int? CpuCount { get; init; }

    public bool Paused { get; init; }

    public TimeSpan ProbeTimeout { get; init; } = ImageProbe.DefaultTimeout;

    // Bare QEMU.
    public string? QmpSocket { get; init; }

    public string? PidFile { get; init; }

    public string Machine { get; init; } = "pc,accel=kvm:tcg";

    public IReadOnlyList<string> QemuArguments { get; init; } = Array.Empty<string>();

    public string QemuBinary { get; init; } = "qemu-system-x86_64";

    // libvirt.
    public string? DomainXml { get; init; }

    public string? LibvirtUri { get; init; }

    /// <summary>libvirt: define the domain (persistent) instead of creating a transient one.</summary>
    public bool Persistent { get; init; }

    /// <summary>libvirt: the target (vda ...) of the template's disk to replace, default its first disk; bare QEMU: the disk's device id, default virtio0.</summary>
    public string? Drive { get; init; }

    public VmBackend Backend => DomainXml is not null ? VmBackend.Libvirt : VmBackend.Qmp;

    /// <summary>The VM this request starts, on <paramref name="session"/>: the libvirt domain <see cref="Name"/>, or the QEMU at <see cref="QmpSocket"/>.</summary>
    internal VmTarget TargetOn(ReplicaSession session) => Backend == VmBackend.Libvirt ? VmTarget.Libvirt(session, Name, LibvirtUri) : VmTarget.Qmp(session, QmpSocket!);
}

/// <summary>The start command for the copy that will be used, decided before anything runs (for -WhatIf).</summary>
public sealed class ReplicaVmPlan
{
    public required ReplicaVmRequest Request { get; init; }

    public required IReadOnlyList<DiskCopyReport> Copies { get; init; }

    /// <summary>Index into <see cref="Copies"/> of the first usable copy, or -1.</summary>
    public int Candidate { get; init; }

    public required IReadOnlyList<PlannedCommand> Steps { get; init; }

    /// <summary>libvirt: a domain of that name was already defined (so a failed start must not undefine it).</summary>
    internal bool DomainExisted { get; init; }

    public string Describe() => string.Join(Environment.NewLine, Copies.Select(c => "# " + c).Concat(Steps.Select(s => s.ToString())));
}

/// <summary>
/// Starts a VM from the first copy of its disk that is reachable and readable. Each copy is probed on the VM host
/// with qemu-img info and a real read (qemu-io) under <c>timeout -s KILL</c>: a hung NFS server blocks libnfs forever.
/// A copy that passes the probe but that QEMU/libvirt then fails to open is skipped too, and the next one tried.
/// </summary>
public sealed partial class ReplicaVmLauncher
{
    public ReplicaVmLauncher(ReplicaSession session)
    {
        Session = session;
    }

    public ReplicaSession Session { get; }

    private IReplicaHost Host => Session.Host;

    public async Task<ReplicaVmPlan> PlanAsync(ReplicaVmRequest request, CancellationToken cancellationToken = default)
    {
        Validate(request);
        var existed = await CheckNotRunningAsync(request, cancellationToken).ConfigureAwait(false);
        var copies = request.Copies.Select((c, i) => new DiskCopyReport { Preference = i + 1, Location = c.Text }).ToArray();
        for (var i = 0; i < copies.Length; i++)
        {
            if (await ProbeAsync(request, copies[i], cancellationToken).ConfigureAwait(false))
            {
                return new ReplicaVmPlan { Request = request, Copies = copies, Candidate = i, Steps = StartSteps(request, request.Copies[i], copies[i].Format!), DomainExisted = existed };
            }
        }

        return new ReplicaVmPlan { Request = request, Copies = copies, Candidate = -1, Steps = Array.Empty<PlannedCommand>(), DomainExisted = existed };
    }

    public async Task<ReplicaVmStartResult> StartAsync(ReplicaVmPlan plan, CancellationToken cancellationToken = default)
    {
        var request = plan.Request;
        var copies = plan.Copies;
        for (var i = Math.Max(0, plan.Candidate); plan.Candidate >= 0 && i < copies.Count; i++)
        {
            if (i > plan.Candidate && !await ProbeAsync(request, copies[i], cancellationToken).ConfigureAwait(false))
            {
                continue;
            }

            var failure = await TryStartAsync(request, request.Copies[i], copies[i].Format!, cancellationToken).ConfigureAwait(false);
            if (failure is not null)
            {
                copies[i].Status = DiskCopyStatus.Skipped;
                copies[i].Reason = failure;
                continue;
            }

            copies[i].Status = DiskCopyStatus.Used;
            copies[i].Reason = i == 0 ? "the primary copy is reachable and readable" : "the first reachable and readable copy";
            if (i > 0)
            {
                OperationContext.Reporter.Warning($"{request.Name} runs on copy #{i + 1} ({copies[i].Location}), not on the primary: " +
                                                  string.Join("; ", copies.Take(i).Select(c => $"#{c.Preference} {c.Location}: {c.Reason}")));
            }

            return await DescribeAsync(request, copies, i, cancellationToken).ConfigureAwait(false);
        }

        if (request.Backend == VmBackend.Libvirt && request.Persistent && !plan.DomainExisted && plan.Candidate >= 0)
        {
            // A failed start must not leave a definition behind that points at an unusable copy.
            var vm = (LibvirtVirtualMachine)request.TargetOn(Session).Open();
            await Host.RunAsync(new CommandSpec(vm.Virsh("undefine", "--", request.Name).Arguments) { ThrowOnFailure = false, Timeout = TimeSpan.FromMinutes(1) }, cancellationToken).ConfigureAwait(false);
        }

        throw new ReplicaException("NoUsableDiskCopy", ReplicaErrorCategory.ResourceUnavailable,
            $"Cannot start '{request.Name}' on host '{Host.Name}': none of its {copies.Count} disk copies is usable. " +
            string.Join("; ", copies.Select(c => $"#{c.Preference} {c.Location}: {c.Reason}")) + ".", Host.Name, request.Name)
        {
            RecommendedAction = "Bring a storage server back (or fix the copy named above) and start again.",
        };
    }

    /// <summary>Probes one copy: header and a real read, under a kill timeout. Fills in the report; true if usable.</summary>
    private async Task<bool> ProbeAsync(ReplicaVmRequest request, DiskCopyReport copy, CancellationToken cancellationToken)
    {
        OperationContext.Reporter.Progress(new OperationProgress($"Starting {request.Name}", $"Probing copy #{copy.Preference} {copy.Location}"));
        var probe = await ImageProbe.ProbeAsync(Host, ImageLocation.Parse(copy.Location, "DiskPath"), request.Format, readData: true, request.ProbeTimeout, cancellationToken).ConfigureAwait(false);
        copy.ProbeSeconds = Math.Round(probe.Elapsed.TotalSeconds, 2);
        copy.Format = probe.Format;
        copy.VirtualSize = probe.VirtualSize;
        if (!probe.IsReadable)
        {
            copy.Status = DiskCopyStatus.Skipped;
            copy.Reason = $"{probe.Status}: {probe.Reason}";
            OperationContext.Reporter.Verbose($"[{Host.Name}] copy #{copy.Preference} {copy.Location} skipped: {copy.Reason}");
            return false;
        }

        return true;
    }

    private static void Validate(ReplicaVmRequest request)
    {
        if (!NamePattern().IsMatch(request.Name))
        {
            throw new ArgumentException($"-Name '{request.Name}' may contain only letters, digits, '.', '_' and '-'.", "Name");
        }

        if (request.Copies.Count == 0)
        {
            throw new ArgumentException("-DiskPath needs at least one copy of the disk.", "DiskPath");
        }

        if (request.Backend == VmBackend.Qmp && (request.QmpSocket is null || !request.QmpSocket.StartsWith('/')))
        {
            throw new ArgumentException("A bare QEMU needs -QmpSocket: the absolute path of the QMP socket to create on the VM host.", "QmpSocket");
        }

        if (request.Backend == VmBackend.Qmp && request.Drive is not null && !DevicePattern().IsMatch(request.Drive))
        {
            throw new ArgumentException($"-Drive '{request.Drive}' is not a QEMU device id (a letter, then letters, digits, '.', '_' or '-').", "Drive");
        }

        if (request.MemoryMB is < 16 or > 16 * 1024 * 1024 || request.CpuCount is < 1 or > 1024)
        {
            throw new ArgumentException("-MemoryMB must be at least 16 and -CpuCount at least 1.");
        }
    }

    /// <summary>Refuses a VM that already runs; returns whether a libvirt domain of that name is defined.</summary>
    private async Task<bool> CheckNotRunningAsync(ReplicaVmRequest request, CancellationToken cancellationToken)
    {
        if (request.Backend == VmBackend.Qmp)
        {
            try
            {
                await using var qmp = await QmpClient.ConnectRemoteAsync(Host, request.QmpSocket!, cancellationToken).ConfigureAwait(false);
            }
            catch (QmpConnectionException)
            {
                return false; // nothing answers there: free to use
            }

            throw new ReplicaException("VmAlreadyRunning", ReplicaErrorCategory.ResourceExists,
                $"A QEMU already answers on {Host.Name}:{request.QmpSocket}; refusing to start '{request.Name}' a second time (two VMs writing one disk corrupt it).", Host.Name, request.QmpSocket);
        }

        var vm = request.TargetOn(Session).Open();
        VmRunState state;
        try
        {
            state = await vm.GetStateAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (VmNotFoundException)
        {
            return false;
        }

        if (state is VmRunState.Running or VmRunState.Paused)
        {
            throw new ReplicaException("VmAlreadyRunning", ReplicaErrorCategory.ResourceExists,
                $"The libvirt domain '{request.Name}' on host '{Host.Name}' is already {state}; refusing to start it a second time.", Host.Name, request.Name);
        }

        return true;
    }

    /// <summary>The start commands for one copy; the domain XML a libvirt start passes on standard input is shown in the plan.</summary>
    private IReadOnlyList<PlannedCommand> StartSteps(ReplicaVmRequest request, ImageLocation copy, string format)
    {
        var commands = request.Backend == VmBackend.Qmp ? QemuCommands(request, copy, format) : LibvirtCommands(request, copy, format);
        return commands
            .Select(command => new PlannedCommand(Host.Name, command, $"start '{request.Name}' from {copy}"))
            .Select(step => step.Command.StandardInput is null ? step : step.ShowingInput())
            .ToArray();
    }

    /// <summary>The disk's device id in a bare QEMU: -Drive, default virtio0 (its node is drive-ID).</summary>
    private static string QemuDevice(ReplicaVmRequest request) => request.Drive ?? "virtio0";

    private static string PidFileOf(ReplicaVmRequest request) => request.PidFile ?? (request.QmpSocket!.EndsWith(".qmp", StringComparison.Ordinal) ? request.QmpSocket[..^4] : request.QmpSocket) + ".pid";

    private static IReadOnlyList<CommandSpec> QemuCommands(ReplicaVmRequest request, ImageLocation copy, string format)
    {
        var device = QemuDevice(request);
        var blockdev = new JsonObject { ["driver"] = format, ["node-name"] = $"drive-{device}", ["file"] = copy.ToBlockdevProtocol($"drive-{device}-file") };
        var arguments = new List<string>
        {
            request.QemuBinary, "-name", request.Name, "-machine", request.Machine,
            "-m", (request.MemoryMB ?? 1024).ToString(CultureInfo.InvariantCulture),
            "-smp", (request.CpuCount ?? 1).ToString(CultureInfo.InvariantCulture),
            "-display", "none", "-daemonize", "-pidfile", PidFileOf(request),
            "-qmp", $"unix:{request.QmpSocket},server=on,wait=off",
            "-blockdev", blockdev.ToJsonString(),
            "-device", $"virtio-blk-pci,drive=drive-{device},id={device}",
        };
        if (request.Paused)
        {
            arguments.Add("-S");
        }

        arguments.AddRange(request.QemuArguments);

        // -daemonize returns once the disk is open; a storage server that hangs now would hold it: bounded.
        return new[] { new CommandSpec(arguments) { Timeout = TimeSpan.FromSeconds(90) } };
    }

    private IReadOnlyList<CommandSpec> LibvirtCommands(ReplicaVmRequest request, ImageLocation copy, string format)
    {
        var xml = BuildDomainXml(request, copy, format).Xml;
        var vm = (LibvirtVirtualMachine)request.TargetOn(Session).Open();
        var bytes = Encoding.UTF8.GetBytes(xml);
        if (request.Persistent)
        {
            var define = vm.Virsh("define", "/dev/stdin");
            var start = request.Paused ? vm.Virsh("start", "--paused", "--", request.Name) : vm.Virsh("start", "--", request.Name);
            return new[] { new CommandSpec(define.Arguments) { Timeout = define.Timeout, StandardInput = bytes }, start };
        }

        var create = request.Paused ? vm.Virsh("create", "--paused", "/dev/stdin") : vm.Virsh("create", "/dev/stdin");
        return new[] { new CommandSpec(create.Arguments) { Timeout = create.Timeout, StandardInput = bytes } };
    }

    /// <summary>The template with the VM's name, memory, CPUs and the chosen copy as its disk.</summary>
    internal static (string Xml, string Drive) BuildDomainXml(ReplicaVmRequest request, ImageLocation copy, string format)
    {
        XDocument document;
        try
        {
            document = XDocument.Parse(request.DomainXml!);
        }
        catch (System.Xml.XmlException ex)
        {
            throw new ArgumentException($"-DomainXml is not valid XML: {ex.Message}", "DomainXml", ex);
        }

        var root = document.Root is { Name.LocalName: "domain" } r ? r : throw new ArgumentException("-DomainXml must be a libvirt <domain> definition.", "DomainXml");
        root.SetElementValue("name", request.Name);
        if (request.MemoryMB is { } memory)
        {
            root.Element("currentMemory")?.Remove();
            root.SetElementValue("memory", memory);
            root.Element("memory")!.SetAttributeValue("unit", "MiB");
        }

        if (request.CpuCount is { } cpus)
        {
            root.SetElementValue("vcpu", cpus);
        }

        var devices = root.Element("devices") ?? new XElement("devices");
        if (devices.Parent is null)
        {
            root.Add(devices);
        }

        var disks = devices.Elements("disk").Where(d => (string?)d.Attribute("device") is null or "disk").ToList();
        var old = request.Drive is null ? disks.FirstOrDefault() : disks.FirstOrDefault(d => (string?)d.Element("target")?.Attribute("dev") == request.Drive)
            ?? throw new ArgumentException($"-DomainXml has no disk with target '{request.Drive}'.", "Drive");
        var identity = old?.Element("source")?.Element("identity")?.ToString(SaveOptions.DisableFormatting);
        var target = old?.Element("target") ?? new XElement("target", new XAttribute("dev", "vda"), new XAttribute("bus", "virtio"));
        var replacement = XElement.Parse(copy.ToLibvirtDiskXml(format, copy.IsNfsUrl ? identity : null));
        replacement.Add(new XElement(target));
        foreach (var keep in old?.Elements().Where(e => e.Name.LocalName is "address" or "boot" or "serial" or "alias") ?? Enumerable.Empty<XElement>())
        {
            replacement.Add(new XElement(keep));
        }

        if (old is null)
        {
            devices.AddFirst(replacement);
        }
        else
        {
            old.ReplaceWith(replacement);
        }

        return (document.ToString(SaveOptions.DisableFormatting), (string)target.Attribute("dev")!);
    }

    /// <summary>Runs the start commands for one copy; returns why it failed, or null when the VM runs.</summary>
    private async Task<string?> TryStartAsync(ReplicaVmRequest request, ImageLocation copy, string format, CancellationToken cancellationToken)
    {
        OperationContext.Reporter.Progress(new OperationProgress($"Starting {request.Name}", $"Starting from {copy}"));
        var steps = StartSteps(request, copy, format);
        try
        {
            foreach (var step in steps)
            {
                await Host.RunAsync(step.Command, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (CommandFailedException ex)
        {
            return $"passed the probe, but the VM did not start from it: {Short(ex.StandardError)}";
        }
        catch (CommandTimeoutException)
        {
            return "passed the probe, but starting the VM from it did not finish in time (the storage server hangs?)";
        }

        return null;
    }

    private async Task<ReplicaVmStartResult> DescribeAsync(ReplicaVmRequest request, IReadOnlyList<DiskCopyReport> copies, int used, CancellationToken cancellationToken)
    {
        if (request.Backend == VmBackend.Libvirt)
        {
            return new ReplicaVmStartResult(request.TargetOn(Session))
            {
                Drive = BuildDomainXml(request, ImageLocation.Parse(copies[used].Location, "DiskPath"), copies[used].Format ?? "raw").Drive,
                UsedCopy = copies[used].Location, UsedPreference = used + 1, Copies = copies,
            };
        }

        var pidFile = PidFileOf(request);
        var pidText = await Host.RunAsync(new CommandSpec("cat", "--", pidFile) { Timeout = TimeSpan.FromSeconds(30), ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        return new ReplicaVmStartResult(request.TargetOn(Session))
        {
            PidFile = pidFile,
            ProcessId = ParseProcessId(pidText.StandardOutput),
            Drive = QemuDevice(request), UsedCopy = copies[used].Location, UsedPreference = used + 1, Copies = copies,
        };
    }

    /// <summary>
    /// A QEMU pid file's content as a process id, or null. Never 0, 1 or negative: PowerShell's Stop-Process -Id 0 (kill(0))
    /// signals the caller's own process group, so an id that is not the real process's must not reach an output object.
    /// </summary>
    internal static int? ParseProcessId(string pidFileContent) =>
        int.TryParse(pidFileContent.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 1 ? pid : null;

    private static string Short(string text)
    {
        var line = string.Join(' ', text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return line.Length <= 400 ? line : line[..400] + "...";
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[A-Za-z][A-Za-z0-9._-]{0,30}$")]
    private static partial Regex DevicePattern();
}
