using System.Globalization;
using System.Security;
using System.Text;
using System.Xml.Linq;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// Point in time of a libvirt domain by a pull-mode backup (virsh backup-begin): libvirt fleeces the disk into a
/// scratch file, exports it read-only over NBD and, for qcow2 disks, creates the new checkpoint atomically with it.
/// An incremental exports the dirty blocks since the previous checkpoint as qemu:dirty-bitmap:EXPORTBITMAP.
/// libvirt 9 keeps every checkpoint's bitmap recording, so deleting the new checkpoint after a failure leaves the old
/// one complete, and deleting the old one after success leaves the new one. virsh domjobabort ends the backup.
/// </summary>
public sealed class LibvirtPointInTime : PointInTimeSource
{
    private readonly LibvirtVirtualMachine domain;
    private string? runId;
    private bool jobStarted;
    private string? scratchFile;
    private readonly List<string> xmlFiles = new();

    public LibvirtPointInTime(LibvirtVirtualMachine vm, string scratchDirectory)
        : base(vm, scratchDirectory)
    {
        domain = vm;
    }

    public override async Task OpenAsync(string? drive, CancellationToken cancellationToken)
    {
        await Vm.EnsureRunningAsync(cancellationToken).ConfigureAwait(false);
        Disk = await Vm.ResolveDiskAsync(drive, cancellationToken).ConfigureAwait(false);
        var info = await domain.RunVirshAsync(domain.Virsh("domblkinfo", "--", domain.DomainName, Disk.Drive), cancellationToken).ConfigureAwait(false);
        var capacity = info.StandardOutput.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("Capacity:", StringComparison.Ordinal));
        VirtualSize = capacity is null ? 0 : long.Parse(capacity["Capacity:".Length..].Trim(), CultureInfo.InvariantCulture);
    }

    public override async Task<IReadOnlyList<StaleFinding>> FindStaleStateAsync(string? chain, CancellationToken cancellationToken)
    {
        var findings = new List<StaleFinding>();
        var job = await BackupJobAsync(cancellationToken).ConfigureAwait(false);
        if (job is not null)
        {
            var (ours, export) = job.Value;
            if (!ours)
            {
                throw new ReplicaException("ForeignBackupJob", ReplicaErrorCategory.ResourceUnavailable,
                    $"{Vm.DisplayName} runs a backup job that ReplicaTools did not start (export '{export}'); a domain has one backup job at a time.", Host.Name, Vm.Name)
                {
                    RecommendedAction = "Let that backup finish (virsh domjobinfo shows it), or end it with virsh domjobabort if it is abandoned.",
                };
            }

            findings.Add(new StaleFinding(StaleStateKind.BackupJob, export, "a pull-mode backup whose point in time was never released"));
        }

        if (chain is not null && SupportsCheckpoints)
        {
            var links = Chain(await GetCheckpointsAsync(cancellationToken).ConfigureAwait(false), chain);
            if (links.Count > 1)
            {
                findings.Add(new StaleFinding(StaleStateKind.CheckpointRotation, string.Join(", ", links.Select(l => l.Name)), "more than one checkpoint of this destination's chain: the last run did not finish"));
            }
        }

        foreach (var file in await FindScratchFilesAsync(cancellationToken).ConfigureAwait(false))
        {
            findings.Add(new StaleFinding(StaleStateKind.ScratchFile, file, $"on host '{Host.Name}'"));
        }

        return findings;
    }

    public override async Task RepairAsync(IReadOnlyList<StaleFinding> findings, string? chain, string? keep, CancellationToken cancellationToken)
    {
        var report = OperationContext.Reporter;
        if (findings.Any(f => f.Type == StaleStateKind.BackupJob))
        {
            // Ending a pull backup only drops the export and the scratch file: the guest always wrote to its disk.
            report.Warning($"Repair: ending the stale backup job on {Vm.DisplayName} (virsh domjobabort; no guest write is lost).");
            await AbortJobAsync(cancellationToken).ConfigureAwait(false);
        }

        if (chain is not null && SupportsCheckpoints)
        {
            var links = Chain(await GetCheckpointsAsync(cancellationToken).ConfigureAwait(false), chain);
            var keeper = keep is null ? null : links.FirstOrDefault(l => l.Name == keep && l.Usable);
            foreach (var link in links.Where(l => links.Count > 1 && l != keeper))
            {
                report.Warning($"Repair: deleting the checkpoint '{link.Name}' of an unfinished rotation on {Vm.DisplayName}.");
                await RemoveCheckpointAsync(link.Name, cancellationToken).ConfigureAwait(false);
            }
        }

        var scratch = findings.Where(f => f.Type == StaleStateKind.ScratchFile).Select(f => f.Name).ToList();
        if (scratch.Count > 0)
        {
            report.Warning($"Repair: deleting leftover files on host '{Host.Name}': {string.Join(", ", scratch)}.");
            await DeleteFilesAsync(scratch, cancellationToken).ConfigureAwait(false);
        }
    }

    public override async Task<IReadOnlyList<DiskCheckpoint>> GetCheckpointsAsync(CancellationToken cancellationToken)
    {
        var list = await domain.RunVirshAsync(domain.Virsh("checkpoint-list", "--name", "--", domain.DomainName), cancellationToken).ConfigureAwait(false);
        var checkpoints = new List<DiskCheckpoint>();
        foreach (var name in list.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var checkpoint = await DescribeCheckpointAsync(name, cancellationToken).ConfigureAwait(false);
            if (checkpoint is not null)
            {
                checkpoints.Add(checkpoint);
            }
        }

        return checkpoints;
    }

    /// <summary>checkpoint-dumpxml --size: the disk's size attribute (dirty bytes) is there only when its bitmap exists and is consistent.</summary>
    private async Task<DiskCheckpoint?> DescribeCheckpointAsync(string name, CancellationToken cancellationToken)
    {
        var dump = await Host.RunAsync(domain.Virsh(new[] { "checkpoint-dumpxml", "--size", "--no-domain", "--", domain.DomainName, name }, TimeSpan.FromMinutes(2)), cancellationToken).ConfigureAwait(false);
        var xml = XDocument.Parse(dump.StandardOutput).Root!;
        var disk = xml.Element("disks")?.Elements("disk").FirstOrDefault(d => (string?)d.Attribute("name") == Disk.Drive);
        if (disk is null || (string?)disk.Attribute("checkpoint") != "bitmap")
        {
            return null;
        }

        var size = (string?)disk.Attribute("size");
        var created = (string?)xml.Element("creationTime");
        return new DiskCheckpoint(Vm.Target)
        {
            Drive = Disk.Drive,
            Name = name,
            Bitmap = (string?)disk.Attribute("bitmap") ?? name,
            DirtyBytes = size is null ? null : long.Parse(size, CultureInfo.InvariantCulture),
            Usable = size is not null,
            Recording = size is null ? null : true,
            Persistent = true,
            CreationTime = created is null ? null : DateTimeOffset.FromUnixTimeSeconds(long.Parse(created, CultureInfo.InvariantCulture)),
            Parent = (string?)xml.Element("parent")?.Element("name"),
            Problem = size is null ? "its bitmap is missing or inconsistent in the image (QEMU was killed, or the image was replaced)" : null,
        };
    }

    public override async Task<string?> CheckpointProblemAsync(string checkpoint, string? savedXml, CancellationToken cancellationToken)
    {
        var names = (await domain.RunVirshAsync(domain.Virsh("checkpoint-list", "--name", "--", domain.DomainName), cancellationToken).ConfigureAwait(false))
            .StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var redefined = false;
        if (!names.Contains(checkpoint))
        {
            if (savedXml is null)
            {
                return $"libvirt has no checkpoint '{checkpoint}' for {Vm.DisplayName}";
            }

            // A transient domain loses checkpoint metadata when it is re-created; the bitmap may still be in the qcow2.
            var file = $"{ScratchDirectory}/{CloneNames.Prefix}{VmKey}-redefine-{CloneNames.NewRunId()}.xml";
            await WriteFileAsync(file, WithoutParent(savedXml), cancellationToken).ConfigureAwait(false);
            try
            {
                var result = await Host.RunAsync(domain.Virsh(new[] { "checkpoint-create", "--redefine", "--", domain.DomainName, file }, TimeSpan.FromMinutes(2)), cancellationToken).ConfigureAwait(false);
                OperationContext.Reporter.Verbose($"[{Host.Name}] redefined the checkpoint '{checkpoint}' from the clone's metadata: {result.StandardOutput.Trim()}");
                redefined = true;
            }
            catch (CommandFailedException ex)
            {
                return $"libvirt has no checkpoint '{checkpoint}' and redefining it from the clone's metadata failed: {CommandFailedException.StderrTail(ex.StandardError)}";
            }
            finally
            {
                await DeleteFilesAsync(new[] { file }, CancellationToken.None).ConfigureAwait(false);
            }
        }

        var described = await DescribeCheckpointAsync(checkpoint, cancellationToken).ConfigureAwait(false);
        if (described is { Usable: true })
        {
            if (redefined)
            {
                OperationContext.Reporter.Warning($"{Vm.DisplayName} had lost the metadata of checkpoint '{checkpoint}' (a transient domain re-created?); it was redefined from the clone's metadata and its bitmap is intact.");
            }

            return null;
        }

        if (redefined)
        {
            await Host.RunAsync(Lenient(domain.Virsh(new[] { "checkpoint-delete", "--metadata", "--", domain.DomainName, checkpoint }, TimeSpan.FromMinutes(2))), CancellationToken.None).ConfigureAwait(false);
        }

        return described is null
            ? $"the checkpoint '{checkpoint}' does not track disk '{Disk.Drive}'"
            : $"the checkpoint '{checkpoint}': {described.Problem}";
    }

    /// <summary>
    /// The point in time in three steps: the new checkpoint's definition, the pull-mode backup (virsh backup-begin, retried
    /// on another port while ports are taken), and the port libvirt's NBD server listens on.
    /// </summary>
    public override async Task<PointInTimeExport> StartAsync(PointInTimeRequest request, CancellationToken cancellationToken)
    {
        runId = request.RunId;
        scratchFile = CloneNames.ScratchFile(ScratchDirectory, VmKey, runId);
        var disks = LibvirtVirtualMachine.ParseDisks(await domain.GetXmlAsync(cancellationToken).ConfigureAwait(false));
        if (request.NewCheckpoint is not null)
        {
            await WriteFileAsync(DefinitionFile(runId, "checkpoint"), CheckpointXml(request.NewCheckpoint, disks), cancellationToken).ConfigureAwait(false);
            if (await CheckpointExistsAsync(request.NewCheckpoint, cancellationToken).ConfigureAwait(false))
            {
                // Names are chosen past every existing one; one that exists anyway is someone else's and is never touched.
                throw new ReplicaException("CheckpointExists", ReplicaErrorCategory.ResourceExists,
                    $"{Vm.DisplayName} already has a checkpoint named '{request.NewCheckpoint}'; no backup was started.", Host.Name, request.NewCheckpoint);
            }
        }

        await BeginBackupAsync(request, disks, cancellationToken).ConfigureAwait(false);

        // Seen once: a backup that ended by itself right after it began. Trust it only once libvirt lists it as running.
        if (await CheckAliveAsync(cancellationToken).ConfigureAwait(false) is { } problem)
        {
            throw new CloneFailedException($"{Vm.DisplayName}: the backup job ended right after virsh backup-begin: {problem}.", Host.Name, Vm.Name);
        }

        var port = await ExportPortAsync(cancellationToken).ConfigureAwait(false);
        OperationContext.Reporter.Verbose($"[{Host.Name}] point in time of {Vm.DisplayName} disk '{Disk.Drive}' exported as nbd://{request.Address}:{port}/{CloneNames.Export(runId)}");
        return new PointInTimeExport(new NbdExportAddress(request.Address, port, CloneNames.Export(runId)),
            request.IncrementalFrom is null ? null : "qemu:dirty-bitmap:" + CloneNames.ExportBitmap(runId), VirtualSize);
    }

    /// <summary>virsh backup-begin on a port picked at random from the range; a taken port is retried, other refusals say what to do.</summary>
    private async Task BeginBackupAsync(PointInTimeRequest request, IReadOnlyList<VmDisk> disks, CancellationToken cancellationToken)
    {
        var (newCheckpoint, incrementalFrom, address) = (request.NewCheckpoint, request.IncrementalFrom, request.Address);
        var random = new Random();
        var backupFile = DefinitionFile(runId!, "backup");
        var arguments = new List<string> { "backup-begin", "--", domain.DomainName, backupFile };
        if (newCheckpoint is not null)
        {
            arguments.Add(DefinitionFile(runId!, "checkpoint"));
        }

        for (var attempt = 1; ; attempt++)
        {
            var port = PickPort(random, request.Ports);
            await WriteFileAsync(backupFile, BackupXml(runId!, incrementalFrom, address, port, disks), cancellationToken).ConfigureAwait(false);
            var begin = await Host.RunAsync(Lenient(domain.Virsh(arguments, TimeSpan.FromMinutes(2))), cancellationToken).ConfigureAwait(false);
            if (begin.ExitCode == 0)
            {
                jobStarted = true;
                NewCheckpoint = newCheckpoint;
                return;
            }

            var error = CommandFailedException.StderrTail(begin.StandardError);
            if (newCheckpoint is not null && await CheckpointExistsAsync(newCheckpoint, CancellationToken.None).ConfigureAwait(false))
            {
                await RemoveCheckpointAsync(newCheckpoint, CancellationToken.None).ConfigureAwait(false);
            }

            if (error.Contains("Address already in use", StringComparison.Ordinal) && attempt < 10)
            {
                OperationContext.Reporter.Verbose($"[{Host.Name}] NBD port {port} is in use; trying another.");
                continue;
            }

            if (incrementalFrom is not null && (error.Contains("checkpoint inconsistent", StringComparison.OrdinalIgnoreCase) || error.Contains("Checkpoint", StringComparison.Ordinal) && error.Contains("not found", StringComparison.Ordinal)))
            {
                throw new IncrementalUnavailableException($"libvirt refused the incremental backup from '{incrementalFrom}': {error}");
            }

            if (error.Contains("Cannot assign requested address", StringComparison.OrdinalIgnoreCase))
            {
                throw new ReplicaException("ExportAddressInvalid", ReplicaErrorCategory.InvalidArgument,
                    $"{Vm.DisplayName}: QEMU cannot listen on '{address}' ({error}). Pass -ExportAddress with an address of host '{Host.Name}' that the destination can reach.", Host.Name, address);
            }

            throw new CommandFailedException(begin);
        }
    }

    /// <summary>The port the running backup's NBD server listens on (virsh backup-dumpxml).</summary>
    private async Task<int> ExportPortAsync(CancellationToken cancellationToken)
    {
        var dump = await Host.RunAsync(domain.Virsh(new[] { "backup-dumpxml", "--", domain.DomainName }, TimeSpan.FromMinutes(1)), cancellationToken).ConfigureAwait(false);
        var server = XDocument.Parse(dump.StandardOutput).Root!.Element("server")!;
        return int.Parse((string)server.Attribute("port")!, CultureInfo.InvariantCulture);
    }

    /// <summary>libvirt's domaincheckpoint: a bitmap on the cloned disk only.</summary>
    private string CheckpointXml(string name, IReadOnlyList<VmDisk> disks)
    {
        var xml = new StringBuilder($"<domaincheckpoint><name>{SecurityElement.Escape(name)}</name><disks>");
        foreach (var disk in disks)
        {
            xml.Append($"<disk name='{SecurityElement.Escape(disk.Drive)}' checkpoint='{(disk.Drive == Disk.Drive ? "bitmap" : "no")}'/>");
        }

        return xml.Append("</disks></domaincheckpoint>").ToString();
    }

    /// <summary>libvirt's domainbackup, pull mode: NBD on ADDRESS:PORT, the cloned disk exported (with its dirty bitmap for an incremental) over a scratch file.</summary>
    private string BackupXml(string run, string? incrementalFrom, string address, int port, IReadOnlyList<VmDisk> disks)
    {
        var xml = new StringBuilder("<domainbackup mode='pull'>");
        if (incrementalFrom is not null)
        {
            xml.Append($"<incremental>{SecurityElement.Escape(incrementalFrom)}</incremental>");
        }

        xml.Append($"<server transport='tcp' name='{SecurityElement.Escape(address)}' port='{port}'/><disks>");
        foreach (var disk in disks)
        {
            xml.Append(disk.Drive == Disk.Drive
                ? $"<disk name='{SecurityElement.Escape(disk.Drive)}' backup='yes' type='file' exportname='{CloneNames.Export(run)}' exportbitmap='{CloneNames.ExportBitmap(run)}'><scratch file='{SecurityElement.Escape(scratchFile!)}'/></disk>"
                : $"<disk name='{SecurityElement.Escape(disk.Drive)}' backup='no'/>");
        }

        return xml.Append("</disks></domainbackup>").ToString();
    }

    public override async Task<string?> CheckAliveAsync(CancellationToken cancellationToken)
    {
        var job = await BackupJobAsync(cancellationToken).ConfigureAwait(false);
        return job is { } j && j.Ours && j.Export == CloneNames.Export(runId ?? "-")
            ? null
            : $"the backup job of {Vm.DisplayName} is no longer running (aborted, failed, or the domain stopped)";
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        if (jobStarted)
        {
            await AbortJobAsync(cancellationToken).ConfigureAwait(false);
            jobStarted = false;
        }

        var files = xmlFiles.ToList();
        if (scratchFile is not null)
        {
            files.Add(scratchFile); // libvirt deletes it when the job ends; this covers a libvirtd restart in between
        }

        await DeleteFilesAsync(files, cancellationToken).ConfigureAwait(false);
        xmlFiles.Clear();
        scratchFile = null;
    }

    public override async Task CommitCheckpointsAsync(string chain, CancellationToken cancellationToken)
    {
        foreach (var old in Chain(await GetCheckpointsAsync(cancellationToken).ConfigureAwait(false), chain).Where(c => c.Name != NewCheckpoint))
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] deleting the superseded checkpoint '{old.Name}'");
            await RemoveCheckpointAsync(old.Name, cancellationToken).ConfigureAwait(false);
        }
    }

    public override async Task RollbackCheckpointAsync(CancellationToken cancellationToken)
    {
        if (NewCheckpoint is not null && await CheckpointExistsAsync(NewCheckpoint, cancellationToken).ConfigureAwait(false))
        {
            await RemoveCheckpointAsync(NewCheckpoint, cancellationToken).ConfigureAwait(false);
        }

        NewCheckpoint = null;
    }

    public override async Task<string?> GetCheckpointXmlAsync(string checkpoint, CancellationToken cancellationToken)
    {
        var dump = await Host.RunAsync(domain.Virsh(new[] { "checkpoint-dumpxml", "--no-domain", "--", domain.DomainName, checkpoint }, TimeSpan.FromMinutes(1)), cancellationToken).ConfigureAwait(false);
        return WithoutParent(dump.StandardOutput);
    }

    /// <summary>A checkpoint's XML without its parent: the parent may be another destination's checkpoint, gone by the time it is redefined.</summary>
    private static string WithoutParent(string xml)
    {
        var document = XDocument.Parse(xml);
        document.Root?.Element("parent")?.Remove();
        return document.ToString(SaveOptions.DisableFormatting);
    }

    /// <summary>checkpoint-delete; where the bitmap is already gone (libvirt then refuses), only the metadata.</summary>
    public override async Task RemoveCheckpointAsync(string name, CancellationToken cancellationToken)
    {
        var delete = await Host.RunAsync(Lenient(domain.Virsh(new[] { "checkpoint-delete", "--", domain.DomainName, name }, TimeSpan.FromMinutes(2))), cancellationToken).ConfigureAwait(false);
        if (delete.ExitCode != 0)
        {
            OperationContext.Reporter.Verbose($"[{Host.Name}] checkpoint-delete {name}: {delete.StandardError.Trim()}; deleting its metadata only.");
            await Host.RunAsync(domain.Virsh(new[] { "checkpoint-delete", "--metadata", "--", domain.DomainName, name }, TimeSpan.FromMinutes(2)), cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<bool> CheckpointExistsAsync(string name, CancellationToken cancellationToken)
    {
        var list = await domain.RunVirshAsync(domain.Virsh("checkpoint-list", "--name", "--", domain.DomainName), cancellationToken).ConfigureAwait(false);
        return list.StandardOutput.Split('\n', StringSplitOptions.TrimEntries).Contains(name);
    }

    /// <summary>The running backup job, if any: whether ReplicaTools started it (export name prefix) and its export name.</summary>
    private async Task<(bool Ours, string Export)?> BackupJobAsync(CancellationToken cancellationToken)
    {
        var info = await domain.RunVirshAsync(domain.Virsh("domjobinfo", "--", domain.DomainName), cancellationToken).ConfigureAwait(false);
        var operation = info.StandardOutput.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("Operation:", StringComparison.Ordinal));
        if (operation is null || !operation.Contains("Backup", StringComparison.Ordinal))
        {
            return null;
        }

        var dump = await Host.RunAsync(Lenient(domain.Virsh(new[] { "backup-dumpxml", "--", domain.DomainName }, TimeSpan.FromMinutes(1))), cancellationToken).ConfigureAwait(false);
        if (dump.ExitCode != 0)
        {
            return null; // ended in between
        }

        var export = XDocument.Parse(dump.StandardOutput).Root?.Element("disks")?.Elements("disk")
            .Select(d => (string?)d.Attribute("exportname")).FirstOrDefault(n => n is not null) ?? "(unnamed)";
        return (CloneNames.IsCloneObject(export), export);
    }

    private async Task AbortJobAsync(CancellationToken cancellationToken)
    {
        var abort = await Host.RunAsync(Lenient(domain.Virsh(new[] { "domjobabort", "--", domain.DomainName }, TimeSpan.FromMinutes(2))), cancellationToken).ConfigureAwait(false);
        if (abort.ExitCode != 0 && !abort.StandardError.Contains("no job is active", StringComparison.Ordinal) && !abort.StandardError.Contains("not running", StringComparison.Ordinal))
        {
            throw new CommandFailedException(abort);
        }
    }

    public override IReadOnlyList<PlannedCommand> PlanStart(string? drive, string address, bool incremental, bool createsCheckpoint)
    {
        var steps = new List<PlannedCommand>();
        if (createsCheckpoint)
        {
            steps.Add(new(Host.Name, WriteFileCommand(DefinitionFile("RUN", "checkpoint"), string.Empty), $"write the definition of the new checkpoint CHECKPOINT (a bitmap on disk {PlannedDrive(drive)})"));
        }

        steps.Add(new(Host.Name, WriteFileCommand(DefinitionFile("RUN", "backup"), string.Empty),
            $"write the pull-mode backup definition: disk {PlannedDrive(drive)}{(incremental ? ", incremental from BASE" : string.Empty)}, NBD on {address}:PORT, scratch file {CloneNames.ScratchFile(ScratchDirectory, VmKey, "RUN")}"));
        var begin = new List<string> { "backup-begin", "--", domain.DomainName, DefinitionFile("RUN", "backup") };
        if (createsCheckpoint)
        {
            begin.Add(DefinitionFile("RUN", "checkpoint"));
        }

        steps.Add(new(Host.Name, domain.Virsh(begin, TimeSpan.FromMinutes(2)), "freeze the point in time and export it read-only over NBD"));
        return steps;
    }

    public override IReadOnlyList<PlannedCommand> PlanStop() => new PlannedCommand[]
    {
        new(Host.Name, domain.Virsh("domjobabort", "--", domain.DomainName), "end the backup job (libvirt deletes the scratch file)"),
        new(Host.Name, new CommandSpec("rm", "-f", "--", DefinitionFile("RUN", "backup"), DefinitionFile("RUN", "checkpoint")), "delete the definitions"),
    };

    public override PlannedCommand PlanRemoveCheckpoint(string? drive, string name) =>
        new(Host.Name, domain.Virsh("checkpoint-delete", "--", domain.DomainName, name), $"delete the checkpoint (and its bitmaps)");

    /// <summary>A run's backup or checkpoint definition in the scratch directory (found again, when stale, by the scratch glob).</summary>
    private string DefinitionFile(string runId, string kind) => $"{ScratchDirectory}/{CloneNames.Prefix}{VmKey}-{runId}.{kind}.xml";

    private static CommandSpec WriteFileCommand(string path, string content) => HostFiles.WriteAtomically(path, Encoding.UTF8.GetBytes(content));

    private static CommandSpec Lenient(CommandSpec spec) => new(spec.Arguments) { Timeout = spec.Timeout, ThrowOnFailure = false };

    private async Task WriteFileAsync(string path, string content, CancellationToken cancellationToken)
    {
        xmlFiles.Add(path);
        await Host.RunAsync(WriteFileCommand(path, content), cancellationToken).ConfigureAwait(false);
    }
}
