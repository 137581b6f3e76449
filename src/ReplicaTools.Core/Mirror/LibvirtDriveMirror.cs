using System.Globalization;
using System.Text;
using System.Xml.Linq;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Mirror;

/// <summary>
/// Mirrors a libvirt domain's disk with <c>virsh blockcopy</c>, so libvirt keeps ownership of the domain (it pivots its
/// own definition too). Persistent domains need <c>--transient-job</c>; an nfs:// destination is passed as a network
/// disk with <c>--xml</c>. Progress comes from <c>virsh blockjob --raw</c>, sync from <c>&lt;mirror ready='yes'&gt;</c>.
/// libvirt forgets a failed copy at once and keeps no error text, so the module records each mirror it starts in the
/// domain's live metadata: a recorded mirror without a running copy is reported Failed until Stop-DriveMirror clears it.
/// libvirt cannot pause block jobs: Suspend/Resume report that clearly.
/// </summary>
public sealed class LibvirtDriveMirror : DriveMirrorBackend
{
    public const string MetadataUri = "http://replicatools.org/xmlns/mirror/1";
    private const string MetadataKey = "replicatools";

    public LibvirtDriveMirror(LibvirtVirtualMachine vm)
        : base(vm)
    {
        Vm = vm;
    }

    private LibvirtVirtualMachine Vm { get; }

    public override async Task<MirrorPlan> PlanStartAsync(MirrorStartRequest request, CancellationToken cancellationToken = default)
    {
        await Vm.EnsureRunningAsync(cancellationToken).ConfigureAwait(false);
        var xml = await Vm.GetXmlAsync(cancellationToken).ConfigureAwait(false);
        var disk = Vm.ResolveDisk(LibvirtVirtualMachine.ParseDisks(xml), request.Drive);
        var diskElement = DiskElement(xml, disk.Drive)!;
        if (diskElement.Element("mirror") is not null || await HasBlockJobAsync(disk.Drive, cancellationToken).ConfigureAwait(false))
        {
            throw new DriveMirrorException("MirrorAlreadyRunning", ReplicaErrorCategory.ResourceExists, Vm, disk.Drive, request.Destination.Text,
                $"{Vm.DisplayName}: drive '{disk.Drive}' already has a block job.")
            {
                RecommendedAction = "Get-DriveMirror shows a mirror; Stop-DriveMirror ends it. Other block jobs: virsh blockjob.",
            };
        }

        var sourceSize = await GetCapacityAsync(disk.Drive, cancellationToken).ConfigureAwait(false);
        var (create, format) = await CheckDestinationAsync(disk, request, sourceSize, cancellationToken).ConfigureAwait(false);
        var persistent = await IsPersistentAsync(cancellationToken).ConfigureAwait(false);

        // virsh reads everything after "--" as positional: options first.
        var arguments = new List<string> { "blockcopy" };
        var positional = new List<string> { "--", Vm.DomainName, disk.Drive };
        byte[]? stdin = null;
        if (request.Destination.IsNfsUrl)
        {
            // A network destination is described as a disk; the NFS identity (uid/gid) of the source applies to the copy too.
            var identity = diskElement.Element("source")?.Element("identity")?.ToString(SaveOptions.DisableFormatting);
            stdin = Encoding.UTF8.GetBytes(request.Destination.ToLibvirtDiskXml(format, identity));
            arguments.AddRange(new[] { "--xml", "/dev/stdin" });
        }
        else
        {
            positional.Add(request.Destination.Text);
            arguments.AddRange(new[] { "--format", format });
        }

        if (request.Sync == MirrorSyncMode.Top)
        {
            arguments.Add("--shallow");
        }

        if (!create)
        {
            arguments.Add("--reuse-external");
        }

        if (request.BandwidthMBps > 0)
        {
            arguments.AddRange(new[] { "--bandwidth", request.BandwidthMBps.ToString(CultureInfo.InvariantCulture) });
        }

        if (persistent)
        {
            // Without it libvirt refuses a copy of a persistent domain ("domain is not transient").
            arguments.Add("--transient-job");
        }

        arguments.AddRange(positional);
        var virsh = Vm.Virsh(arguments, TimeSpan.FromMinutes(2));
        var blockcopy = new CommandSpec(virsh.Arguments) { Timeout = virsh.Timeout, StandardInput = stdin };
        var record = new MirrorRecord(disk.Drive, request.Destination.Text, format, create);
        var metadata = await ReadRecordsAsync(cancellationToken).ConfigureAwait(false);
        var setMetadata = MetadataCommand(metadata.Where(r => r.Drive != disk.Drive).Append(record));
        var copy = new PlannedCommand(Host.Name, blockcopy, "start the block copy");
        var steps = new List<PlannedCommand>
        {
            new(Host.Name, setMetadata, "record destination, format and creation in the domain's metadata"),
            stdin is null ? copy : copy.ShowingInput(),
        };
        return new MirrorPlan
        {
            VirtualMachine = Vm,
            Disk = disk,
            Destination = request.Destination,
            Format = format,
            JobId = JobId(disk),
            CreatesDestination = create,
            SourceSize = sourceSize,
            Sync = request.Sync,
            BandwidthMBps = request.BandwidthMBps,
            Steps = steps,
        };
    }

    public override async Task<DriveMirrorJob> StartAsync(MirrorPlan plan, CancellationToken cancellationToken = default)
    {
        var (setMetadata, blockcopy) = (plan.Steps[0].Command, plan.Steps[1].Command);
        await Vm.RunVirshAsync(setMetadata, cancellationToken).ConfigureAwait(false);
        string? failure = null;
        try
        {
            await Vm.RunVirshAsync(blockcopy, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandFailedException ex)
        {
            failure = $"libvirt refused the copy: {ex.StandardError.Trim()}";
        }

        if (failure is null)
        {
            // A destination of the wrong size is accepted and fails at once; libvirt then forgets the job.
            await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
            if (!await HasBlockJobAsync(plan.Disk.Drive, cancellationToken).ConfigureAwait(false))
            {
                failure = "the copy started and failed at once (libvirt: 'Block Copy failed'; it passes no reason on)";
            }
        }

        if (failure is not null)
        {
            await RemoveRecordAsync(plan.Disk.Drive, cancellationToken).ConfigureAwait(false);
            var undo = await UndoCreatedDestinationAsync(plan, cancellationToken).ConfigureAwait(false);
            throw new DriveMirrorException("MirrorStartFailed", ReplicaErrorCategory.InvalidOperation, Vm, plan.Disk.Drive, plan.Destination.Text,
                $"{Vm.DisplayName}: the mirror of drive '{plan.Disk.Drive}' to {plan.Destination} did not start: {failure}{undo}.");
        }

        return (await QueryAsync(plan.Disk.Drive, cancellationToken).ConfigureAwait(false)).Single();
    }

    protected override async Task<IReadOnlyList<DriveMirrorJob>> QueryAsync(string? drive, CancellationToken cancellationToken)
    {
        var xml = await Vm.GetXmlAsync(cancellationToken).ConfigureAwait(false);
        var disks = LibvirtVirtualMachine.ParseDisks(xml);
        IEnumerable<VmDisk> selected = drive is null ? disks : new[] { Vm.ResolveDisk(disks, drive) };
        var records = await ReadRecordsAsync(cancellationToken).ConfigureAwait(false);
        var result = new List<DriveMirrorJob>();
        foreach (var disk in selected)
        {
            // Only block copies: an active commit also shows a <mirror> element (job='active-commit').
            var mirror = DiskElement(xml, disk.Drive)?.Element("mirror") is { } m && (string?)m.Attribute("job") is null or "copy" ? m : null;
            var record = records.FirstOrDefault(r => r.Drive == disk.Drive);
            if (mirror is null && record is null)
            {
                continue;
            }

            var (cur, end, bandwidth, present) = await GetBlockJobAsync(disk.Drive, cancellationToken).ConfigureAwait(false);
            var ready = (string?)mirror?.Attribute("ready") == "yes";
            DriveMirrorState state;
            string? error = null;
            if (mirror is null || !present)
            {
                state = DriveMirrorState.Failed;
                error = "the block copy ended without Stop-DriveMirror (it failed: the destination went away, filled up or was too small). " +
                        "libvirt passes no reason on; the domain's QEMU log on the host may have it";
            }
            else
            {
                state = ready ? DriveMirrorState.Ready : DriveMirrorState.Running;
            }

            result.Add(new DriveMirrorJob(Vm.Target)
            {
                Drive = disk.Drive,
                Source = disk.Source,
                Destination = record?.Destination ?? MirrorDestination(mirror),
                Format = record?.Format ?? (string?)mirror?.Element("format")?.Attribute("type") ?? (string?)mirror?.Attribute("format"),
                JobId = JobId(disk),
                State = state,
                JobStatus = mirror is null ? "ended" : ready ? "ready" : (string?)mirror.Attribute("ready") ?? "running",
                BytesDone = cur,
                BytesTotal = end,
                Ready = ready && state == DriveMirrorState.Ready,
                BandwidthMBps = bandwidth,
                Error = error,
                CreatedDestination = record?.Created ?? false,
            });
        }

        return result;
    }

    public override async Task<DriveMirrorJob> SuspendAsync(string? drive, CancellationToken cancellationToken = default) =>
        throw NotSupported(await GetOneAsync(drive, false, cancellationToken).ConfigureAwait(false), "suspended");

    public override async Task<DriveMirrorJob> ResumeAsync(string? drive, CancellationToken cancellationToken = default) =>
        throw NotSupported(await GetOneAsync(drive, false, cancellationToken).ConfigureAwait(false), "resumed");

    public override async Task<MirrorStopPlan> PlanStopAsync(string? drive, bool pivot, bool force, CancellationToken cancellationToken = default)
    {
        var job = (await QueryAsync(drive, cancellationToken).ConfigureAwait(false)).FirstOrDefault() ?? throw NotFound(drive);
        var steps = new List<PlannedCommand>();
        var clearOnly = job.State == DriveMirrorState.Failed;
        var cancel = false;
        if (pivot && !job.Ready)
        {
            throw NotReady(job, "pivot");
        }

        if (!clearOnly)
        {
            if (!job.Ready && !force)
            {
                throw NotReady(job, "stop");
            }

            cancel = !job.Ready;
            steps.Add(new PlannedCommand(Host.Name, Vm.Virsh("blockjob", pivot ? "--pivot" : "--abort", "--", Vm.DomainName, job.Drive),
                pivot ? "pivot the VM onto the copy" : cancel ? "abort the copy (it stays incomplete)" : "end the copy, keeping a consistent copy"));
        }

        var records = await ReadRecordsAsync(cancellationToken).ConfigureAwait(false);
        steps.Add(new PlannedCommand(Host.Name, MetadataCommand(records.Where(r => r.Drive != job.Drive)), "remove the mirror's record from the domain's metadata"));
        var removes = (cancel || clearOnly) && job.CreatedDestination && job.Destination is not null;
        if (removes)
        {
            steps.AddRange(PlanRemoveDestination(ImageLocation.Parse(job.Destination!)));
        }

        return new MirrorStopPlan { Job = job, Pivot = pivot, Cancel = cancel, ClearOnly = clearOnly, RemovesDestination = removes, Steps = steps };
    }

    public override async Task<DriveMirrorJob> StopAsync(MirrorStopPlan plan, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var job = plan.Job;
        if (!plan.ClearOnly)
        {
            try
            {
                await Vm.RunVirshAsync(Vm.Virsh(new[] { "blockjob", plan.Pivot ? "--pivot" : "--abort", "--", Vm.DomainName, job.Drive }, timeout), cancellationToken).ConfigureAwait(false);
            }
            catch (CommandTimeoutException ex)
            {
                throw new DriveMirrorException("MirrorStopTimeout", ReplicaErrorCategory.OperationTimeout, job,
                    $"did not end within {timeout.TotalSeconds:0} s of the stop request.", ex)
                {
                    RecommendedAction = "QEMU finishes the copy's end only once the destination answers: bring the destination server back, or stop the VM.",
                };
            }
            catch (CommandFailedException ex)
            {
                throw new DriveMirrorException(plan.Pivot ? "PivotFailed" : "MirrorStopFailed", ReplicaErrorCategory.InvalidOperation, job,
                    $"could not be {(plan.Pivot ? "pivoted" : "stopped")}: {ex.StandardError.Trim()}", ex);
            }

            await WaitGoneAsync(job, timeout, cancellationToken).ConfigureAwait(false);
        }

        await RemoveRecordAsync(job.Drive, cancellationToken).ConfigureAwait(false);
        if (plan.Pivot)
        {
            var disk = Vm.ResolveDisk(await Vm.GetDisksAsync(cancellationToken).ConfigureAwait(false), job.Drive);
            if (job.Destination is not null && !ImageLocation.Parse(job.Destination).SameImageAs(disk.Source))
            {
                throw new DriveMirrorException("PivotFailed", ReplicaErrorCategory.InvalidResult, job, $"was pivoted, but the disk now reads from {disk.Source}.");
            }

            return Copy(job, DriveMirrorState.Pivoted, null);
        }

        if (!plan.Cancel && !plan.ClearOnly)
        {
            return Copy(job, DriveMirrorState.Stopped, null);
        }

        var note = await SettleIncompleteDestinationAsync(plan, cancellationToken).ConfigureAwait(false);
        return Copy(job, plan.ClearOnly ? DriveMirrorState.Failed : DriveMirrorState.Cancelled, plan.ClearOnly ? $"{job.Error}; {note}" : $"cancelled before sync; {note}");
    }

    private DriveMirrorException NotSupported(DriveMirrorJob job, string what) => new("MirrorPauseNotSupported", ReplicaErrorCategory.NotImplemented, job,
        $"cannot be {what}: libvirt has no way to pause a block copy (virsh blockjob has no --pause).")
    {
        RecommendedAction = $"To slow the copy down instead, limit its bandwidth: virsh blockjob {Vm.DomainName} {job.Drive} --bandwidth MIB_PER_SECOND " +
                            "(or start the mirror with -BandwidthMBps). To free the drive, Stop-DriveMirror.",
    };

    /// <summary>libvirt's QEMU job id for a copy: copy-&lt;target&gt;-&lt;source node&gt;.</summary>
    private static string JobId(VmDisk disk) => disk.NodeName is null ? $"copy-{disk.Drive}" : $"copy-{disk.Drive}-{disk.NodeName}";

    private static XElement? DiskElement(XDocument xml, string drive) =>
        xml.Root?.Element("devices")?.Elements("disk").FirstOrDefault(d => (string?)d.Element("target")?.Attribute("dev") == drive);

    private static string? MirrorDestination(XElement? mirror)
    {
        if (mirror is null)
        {
            return null;
        }

        var source = mirror.Element("source");
        if ((string?)mirror.Attribute("type") == "network" && source is not null)
        {
            return $"{(string?)source.Attribute("protocol")}://{(string?)source.Element("host")?.Attribute("name")}/{((string?)source.Attribute("name") ?? string.Empty).TrimStart('/')}";
        }

        return (string?)source?.Attribute("file") ?? (string?)source?.Attribute("dev") ?? (string?)mirror.Attribute("file");
    }

    private async Task<bool> HasBlockJobAsync(string drive, CancellationToken cancellationToken) =>
        (await GetBlockJobAsync(drive, cancellationToken).ConfigureAwait(false)).Present;

    /// <summary>virsh blockjob --raw: " type=Block Copy", " bandwidth=0", " cur=N", " end=N" (nothing when there is no job).</summary>
    private async Task<(long Cur, long End, double Bandwidth, bool Present)> GetBlockJobAsync(string drive, CancellationToken cancellationToken)
    {
        var result = await Vm.RunVirshAsync(Vm.Virsh("blockjob", "--raw", "--", Vm.DomainName, drive), cancellationToken).ConfigureAwait(false);
        long cur = 0, end = 0;
        double bandwidth = 0;
        var present = false;
        foreach (var line in result.StandardOutput.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var split = line.IndexOf('=');
            if (split <= 0)
            {
                continue;
            }

            var (key, value) = (line[..split], line[(split + 1)..]);
            switch (key)
            {
                case "type":
                    present = true;
                    break;
                case "cur":
                    cur = long.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "end":
                    end = long.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "bandwidth":
                    bandwidth = double.Parse(value, CultureInfo.InvariantCulture);
                    break;
            }
        }

        return (cur, end, bandwidth, present);
    }

    private async Task WaitGoneAsync(DriveMirrorJob job, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (await HasBlockJobAsync(job.Drive, cancellationToken).ConfigureAwait(false))
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new DriveMirrorException("MirrorStopTimeout", ReplicaErrorCategory.OperationTimeout, job, $"was still active {timeout.TotalSeconds:0} s after the stop request.");
            }

            await Task.Delay(250, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<long> GetCapacityAsync(string drive, CancellationToken cancellationToken)
    {
        var result = await Vm.RunVirshAsync(Vm.Virsh("domblkinfo", "--", Vm.DomainName, drive), cancellationToken).ConfigureAwait(false);
        foreach (var line in result.StandardOutput.Split('\n'))
        {
            var parts = line.Split(':', 2, StringSplitOptions.TrimEntries);
            if (parts.Length == 2 && parts[0] == "Capacity" && long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var capacity))
            {
                return capacity;
            }
        }

        throw new DriveMirrorException("SourceSizeUnknown", ReplicaErrorCategory.InvalidResult, Vm, drive, null, $"{Vm.DisplayName}: virsh domblkinfo did not report the capacity of '{drive}'.");
    }

    private async Task<bool> IsPersistentAsync(CancellationToken cancellationToken)
    {
        var result = await Vm.RunVirshAsync(Vm.Virsh("dominfo", "--", Vm.DomainName), cancellationToken).ConfigureAwait(false);
        return result.StandardOutput.Split('\n').Any(l => l.StartsWith("Persistent:", StringComparison.Ordinal) && l.Contains("yes", StringComparison.Ordinal));
    }

    internal sealed record MirrorRecord(string Drive, string Destination, string Format, bool Created);

    private async Task<IReadOnlyList<MirrorRecord>> ReadRecordsAsync(CancellationToken cancellationToken)
    {
        var result = await Host.RunAsync(new CommandSpec(Vm.Virsh("metadata", "--live", "--", Vm.DomainName, MetadataUri).Arguments) { ThrowOnFailure = false, Timeout = TimeSpan.FromMinutes(1) }, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0 || string.IsNullOrWhiteSpace(result.StandardOutput))
        {
            if (result.StandardError.Contains("failed to get domain", StringComparison.OrdinalIgnoreCase) || result.StandardError.Contains("Domain not found", StringComparison.OrdinalIgnoreCase))
            {
                throw new VmNotFoundException(Host.Name, Vm.DomainName, $"libvirt ({Vm.ConnectionUri}) has no such domain.");
            }

            return Array.Empty<MirrorRecord>();
        }

        try
        {
            return XElement.Parse(result.StandardOutput).Elements("mirror")
                .Select(m => new MirrorRecord((string?)m.Attribute("drive") ?? string.Empty, (string?)m.Attribute("destination") ?? string.Empty, (string?)m.Attribute("format") ?? "raw", (string?)m.Attribute("created") == "yes"))
                .ToArray();
        }
        catch (System.Xml.XmlException)
        {
            return Array.Empty<MirrorRecord>();
        }
    }

    private CommandSpec MetadataCommand(IEnumerable<MirrorRecord> records)
    {
        var list = records.ToArray();
        if (list.Length == 0)
        {
            return Vm.Virsh("metadata", "--key", MetadataKey, "--remove", "--live", "--", Vm.DomainName, MetadataUri);
        }

        var element = new XElement("mirrors", list.Select(r => new XElement("mirror",
            new XAttribute("drive", r.Drive), new XAttribute("destination", r.Destination), new XAttribute("format", r.Format), new XAttribute("created", r.Created ? "yes" : "no"))));
        return Vm.Virsh("metadata", "--key", MetadataKey, "--set", element.ToString(SaveOptions.DisableFormatting), "--live", "--", Vm.DomainName, MetadataUri);
    }

    private async Task RemoveRecordAsync(string drive, CancellationToken cancellationToken)
    {
        var records = await ReadRecordsAsync(cancellationToken).ConfigureAwait(false);
        if (records.Any(r => r.Drive == drive))
        {
            await Vm.RunVirshAsync(MetadataCommand(records.Where(r => r.Drive != drive)), cancellationToken).ConfigureAwait(false);
        }
    }
}
