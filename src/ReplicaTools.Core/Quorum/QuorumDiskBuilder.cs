using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Quorum;

/// <summary>One replica as the caller gave it: a path or URL, and the host an image object was read on (null for text).</summary>
/// <param name="Text">The path or URL.</param>
/// <param name="HostName">The host a DiskImage object came from (its HostName); null when given as text.</param>
public sealed record QuorumReplicaInput(string Text, string? HostName = null);

/// <summary>What New-QuorumDisk is asked to build.</summary>
public sealed record QuorumDiskRequest
{
    public required IReadOnlyList<QuorumReplicaInput> Replicas { get; init; }

    public required int VoteThreshold { get; init; }

    public QuorumReadPattern ReadPattern { get; init; } = QuorumReadPattern.Quorum;

    public bool RewriteCorrupted { get; init; }

    public bool Blkverify { get; init; }

    /// <summary>The format of replicas that are created (default raw); existing replicas keep the format qemu-img finds.</summary>
    public DiskImageFormat? Format { get; init; }

    /// <summary>The size in bytes: missing replicas are created with it, existing ones must have it. Null: create nothing.</summary>
    public long? Size { get; init; }

    /// <summary>Accept existing replicas whose data differ (the quorum outvotes or rewrites the odd ones).</summary>
    public bool Force { get; init; }

    /// <summary>The guest device id (default quorum0); with <see cref="NoDevice"/>, the name the disk goes by.</summary>
    public string? Drive { get; init; }

    /// <summary>The quorum node's name (default DRIVE-quorum).</summary>
    public string? NodeName { get; init; }

    /// <summary>The device driver for device_add / -device (default virtio-blk-pci).</summary>
    public string? DeviceDriver { get; init; }

    /// <summary>Add no guest device: the quorum node is left for the user's own device.</summary>
    public bool NoDevice { get; init; }

    /// <summary>How long a replica probe may take (libnfs and a hung server: qemu-img is killed after this).</summary>
    public TimeSpan ProbeTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>What New-QuorumDisk found and will do: the definition, the replicas it creates, the exact steps.</summary>
public sealed class QuorumDiskPlan
{
    public required QuorumDefinition Definition { get; init; }

    /// <summary>The replicas that do not exist yet and are created (in order).</summary>
    public required IReadOnlyList<CreateDiskImagePlan> Creates { get; init; }

    /// <summary>The disk's size in bytes.</summary>
    public long Size { get; init; }

    /// <summary>Every step: the image creations, then (when attaching) the recorder and the QMP steps.</summary>
    public required IReadOnlyList<PlannedCommand> Steps { get; init; }

    /// <summary>Findings worth telling (replicas that differ, accepted with -Force).</summary>
    public IReadOnlyList<string> Warnings { get; init; } = Array.Empty<string>();

    /// <summary>The steps, one per line, as -WhatIf shows them.</summary>
    public string Describe() => PlannedCommand.Describe(Steps);
}

/// <summary>
/// Checks the replicas of a new quorum disk from the VM host, where QEMU will open them, and creates the missing ones:
/// everything that can be wrong is found before anything is created or attached (options, names, the same replica
/// twice, missing or unreachable replicas, sizes, differing data).
/// </summary>
public sealed partial class QuorumDiskBuilder
{
    public const string DefaultDrive = "quorum0";

    public QuorumDiskBuilder(ReplicaSession vmHost, StorageOptions? storageOptions = null)
    {
        ArgumentNullException.ThrowIfNull(vmHost);
        Session = vmHost;
        Images = new DiskImageService(vmHost.Host, vmHost, storageOptions);
    }

    /// <summary>The VM host (where QEMU runs and opens the replicas).</summary>
    public ReplicaSession Session { get; }

    public IReplicaHost Host => Session.Host;

    private DiskImageService Images { get; }

    /// <summary>
    /// Validates <paramref name="request"/> and works out the definition and the creations. Runs only read-only commands
    /// (qemu-img info, compare, stat) on the VM host.
    /// </summary>
    /// <exception cref="QuorumException">Any of the QuorumErrorIds for bad input, with the replica and what to do.</exception>
    public async Task<QuorumDiskPlan> PlanAsync(QuorumDiskRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var drive = string.IsNullOrEmpty(request.Drive) ? DefaultDrive : request.Drive;
        var nodeName = string.IsNullOrEmpty(request.NodeName) ? (request.NoDevice ? drive : drive + "-quorum") : request.NodeName;
        QuorumDefinition.CheckOptions(request.Replicas.Count, request.VoteThreshold, request.ReadPattern, request.RewriteCorrupted, request.Blkverify, nodeName);
        if (!request.NoDevice)
        {
            QuorumDefinition.CheckName(drive, "Drive");
        }

        if (request.Size is <= 0)
        {
            throw new QuorumException(QuorumErrorIds.SizeMismatch, ReplicaErrorCategory.InvalidArgument, $"-Size must be positive; got {request.Size} bytes.");
        }

        var locations = ParseReplicas(request.Replicas);
        await CheckSameFilesAsync(locations, cancellationToken).ConfigureAwait(false);

        // Probe all replicas: which exist, their format and size; unreachable or unreadable ones stop here.
        var probes = await Task.WhenAll(locations.Select(l => QuorumProbe.ProbeAsync(Host, l, request.ProbeTimeout, cancellationToken))).ConfigureAwait(false);
        var missing = new List<QuorumReplicaLocation>();
        for (var i = 0; i < locations.Count; i++)
        {
            var probe = probes[i];
            switch (probe.Status)
            {
                case QuorumProbeStatus.Readable:
                    break;
                case QuorumProbeStatus.NotFound when request.Size is not null && locations[i].CanCreate:
                    missing.Add(locations[i]);
                    break;
                case QuorumProbeStatus.NotFound:
                    throw new QuorumException(QuorumErrorIds.ReplicaNotFound, ReplicaErrorCategory.ObjectNotFound,
                        $"Replica {i + 1} '{locations[i].Text}' does not exist (seen from VM host '{Host.Name}'): {probe.Reason}.", Host.Name, locations[i].Text)
                    {
                        RecommendedAction = locations[i].CanCreate
                            ? "Check the path, or pass -Size (and -Format) to create the missing replicas."
                            : "Check the NBD URL; an NBD export must exist before it can be a replica.",
                    };
                case QuorumProbeStatus.Unreachable:
                    throw new QuorumException(QuorumErrorIds.ReplicaUnreachable, ReplicaErrorCategory.ConnectionError,
                        $"Replica {i + 1} '{locations[i].Text}' cannot be reached from VM host '{Host.Name}': {probe.Reason}.", Host.Name, locations[i].Text)
                    {
                        RecommendedAction = $"Check that the storage host{(locations[i].StorageHost is { } s ? " '" + s + "'" : string.Empty)} is up and serves the replica.",
                    };
                default:
                    throw new QuorumException(QuorumErrorIds.ReplicaUnreadable, ReplicaErrorCategory.ReadError,
                        $"Replica {i + 1} '{locations[i].Text}' cannot be opened on VM host '{Host.Name}': {probe.Reason}.", Host.Name, locations[i].Text);
            }
        }

        var size = CheckSizes(locations, probes, request.Size);
        await CheckNotInUseAsync(locations, probes, cancellationToken).ConfigureAwait(false);
        var warnings = new List<string>();
        var existing = Enumerable.Range(0, locations.Count).Where(i => probes[i].Status == QuorumProbeStatus.Readable).ToArray();
        await CheckDataAsync(locations, probes, existing, missing.Count > 0, size, request.Force, warnings, cancellationToken).ConfigureAwait(false);

        var format = request.Format ?? DiskImageFormat.Raw;
        var creates = new List<CreateDiskImagePlan>();
        foreach (var location in missing)
        {
            creates.Add(await Images.PlanCreateAsync(location.Text, size, format, false, cancellationToken).ConfigureAwait(false));
        }

        var now = DateTimeOffset.UtcNow;
        var specs = locations.Select((l, i) => new QuorumReplicaSpec(
            QuorumDefinition.ReplicaNodeName(nodeName, i + 1), l,
            probes[i].Status == QuorumProbeStatus.Readable ? probes[i].Format! : format.ToQemuName())).ToArray();
        var definition = new QuorumDefinition
        {
            NodeName = nodeName,
            DeviceId = request.NoDevice ? null : drive,
            DeviceDriver = request.NoDevice ? null : request.DeviceDriver ?? QuorumDefinition.DefaultDevice,
            Replicas = specs,
            VoteThreshold = request.VoteThreshold,
            ReadPattern = request.ReadPattern,
            RewriteCorrupted = request.RewriteCorrupted,
            Blkverify = request.Blkverify,
            NextIndex = specs.Length + 1,
            Since = specs.ToDictionary(s => s.NodeName, _ => now, StringComparer.Ordinal),
        };
        return new QuorumDiskPlan
        {
            Definition = definition,
            Creates = creates,
            Size = size,
            Steps = creates.SelectMany(c => c.Steps).ToArray(),
            Warnings = warnings,
        };
    }

    /// <summary>Creates the missing replicas of a plan; on failure removes the ones it created.</summary>
    public async Task CreateReplicasAsync(QuorumDiskPlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var created = new List<ImageLocation>();
        try
        {
            foreach (var create in plan.Creates)
            {
                OperationContext.Reporter.Verbose($"[{Host.Name}] Creating replica {create.Location.Text} ({Text.ByteSize.Format(plan.Size)}, {create.Format.ToQemuName()}).");
                await Images.CreateAsync(create, cancellationToken).ConfigureAwait(false);
                created.Add(create.Location);
            }
        }
        catch
        {
            await RemoveCreatedAsync(created).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Removes replicas a failed New-QuorumDisk created (paths only: libnfs cannot delete files; those are named in a warning).</summary>
    public async Task RemoveCreatedAsync(IEnumerable<ImageLocation> created)
    {
        foreach (var location in created)
        {
            if (location.IsNfsUrl)
            {
                OperationContext.Reporter.Warning($"The replica {location.Text} was created but the quorum disk was not; it is left in place (files on NFS cannot be removed through libnfs).");
                continue;
            }

            try
            {
                await Host.RunAsync(new CommandSpec("rm", "-f", "--", location.Text) { Timeout = TimeSpan.FromSeconds(30) }, CancellationToken.None).ConfigureAwait(false);
            }
            catch (ReplicaException ex)
            {
                OperationContext.Reporter.Warning($"Removing the replica {location.Text} that this command created failed: {ex.Message}");
            }
        }
    }

    private List<QuorumReplicaLocation> ParseReplicas(IReadOnlyList<QuorumReplicaInput> inputs)
    {
        var locations = new List<QuorumReplicaLocation>();
        for (var i = 0; i < inputs.Count; i++)
        {
            var input = inputs[i];
            QuorumReplicaLocation location;
            try
            {
                location = QuorumReplicaLocation.Parse(input.Text);
            }
            catch (ArgumentException ex)
            {
                throw new QuorumException(QuorumErrorIds.ReplicaNotFound, ReplicaErrorCategory.InvalidArgument, $"Replica {i + 1}: {ex.Message}", Host.Name, input.Text, ex);
            }

            // A path is opened by QEMU on the VM host: an image object read on another host names a file QEMU cannot see.
            if (location.Transport == QuorumTransport.File && input.HostName is { } imageHost && !SameHost(imageHost, Session.HostName))
            {
                throw new QuorumException(QuorumErrorIds.ReplicaOnOtherHost, ReplicaErrorCategory.InvalidArgument,
                    $"Replica {i + 1} '{input.Text}' is a path on host '{imageHost}', but QEMU runs on '{Session.HostName}' and opens paths there.", imageHost, input.Text)
                {
                    RecommendedAction = $"Give the replica as a URL QEMU on '{Session.HostName}' can open: nfs://{imageHost}/EXPORT/FILE when '{imageHost}' exports it over NFS, or nbd://{imageHost}/EXPORT (New-NbdExport).",
                };
            }

            var twin = locations.FindIndex(l => l.Equals(location));
            if (twin >= 0)
            {
                throw new QuorumException(QuorumErrorIds.ReplicaTwice, ReplicaErrorCategory.InvalidArgument,
                    $"Replicas {twin + 1} and {i + 1} are the same image ('{locations[twin].Text}' and '{input.Text}'): a quorum needs independent copies.", Host.Name, input.Text)
                {
                    RecommendedAction = "Give each replica once, each on its own storage.",
                };
            }

            locations.Add(location);
        }

        return locations;
    }

    private static bool SameHost(string a, string b) =>
        string.Equals(a, b, StringComparison.OrdinalIgnoreCase) || (IsLocalName(a) && IsLocalName(b));

    private static bool IsLocalName(string name) => name is "localhost" or "127.0.0.1" or "::1";

    /// <summary>Two different paths to one file (a symlink, a bind mount): caught by device and inode on the VM host.</summary>
    private async Task CheckSameFilesAsync(IReadOnlyList<QuorumReplicaLocation> locations, CancellationToken cancellationToken)
    {
        var paths = locations.Where(l => l.Transport == QuorumTransport.File).Select(l => l.Text).ToArray();
        if (paths.Length < 2)
        {
            return;
        }

        var stat = await Host.RunAsync(new CommandSpec(new[] { "stat", "-L", "-c", "%d:%i %n", "--" }.Concat(paths)) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false);
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in stat.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var space = line.IndexOf(' ');
            if (space < 0)
            {
                continue;
            }

            var inode = line[..space];
            var path = line[(space + 1)..];
            if (seen.TryGetValue(inode, out var other))
            {
                throw new QuorumException(QuorumErrorIds.ReplicaTwice, ReplicaErrorCategory.InvalidArgument,
                    $"The replicas '{other}' and '{path}' are the same file on VM host '{Host.Name}' (device and inode {inode}): a quorum needs independent copies.", Host.Name, path);
            }

            seen[inode] = path;
        }
    }

    /// <summary>A replica file another QEMU holds (QEMU's image locks, <see cref="ImageLocks"/>) cannot join a quorum.</summary>
    private async Task CheckNotInUseAsync(IReadOnlyList<QuorumReplicaLocation> locations, IReadOnlyList<QuorumProbeResult> probes, CancellationToken cancellationToken)
    {
        var paths = Enumerable.Range(0, locations.Count)
            .Where(i => locations[i].Transport == QuorumTransport.File && probes[i].Status == QuorumProbeStatus.Readable)
            .Select(i => locations[i].Text).ToArray();
        if (paths.Length == 0)
        {
            return;
        }

        foreach (var state in await ImageLocks.ProbeManyAsync(Host, paths, cancellationToken).ConfigureAwait(false))
        {
            if (state.InUse)
            {
                throw new QuorumException(QuorumErrorIds.ReplicaInUse, ReplicaErrorCategory.ResourceUnavailable,
                    $"The replica '{state.Path}' on VM host '{Host.Name}' is in use: {state.Describe()}. A replica must belong to this quorum disk only.", Host.Name, state.Path)
                {
                    RecommendedAction = "Detach it from the VM or program that holds it, or pick another image.",
                };
            }
        }
    }

    private long CheckSizes(IReadOnlyList<QuorumReplicaLocation> locations, IReadOnlyList<QuorumProbeResult> probes, long? requested)
    {
        var sizes = Enumerable.Range(0, locations.Count).Where(i => probes[i].VirtualSize is not null).Select(i => (Index: i, Size: probes[i].VirtualSize!.Value)).ToArray();
        var expected = requested ?? (sizes.Length > 0 ? sizes[0].Size : 0);
        if (sizes.Any(s => s.Size != expected))
        {
            var list = string.Join(", ", sizes.Select(s => $"'{locations[s.Index].Text}' {s.Size.ToString(CultureInfo.InvariantCulture)} bytes ({Text.ByteSize.Format(s.Size)})"));
            throw new QuorumException(QuorumErrorIds.SizeMismatch, ReplicaErrorCategory.InvalidArgument,
                $"The replicas differ in size{(requested is null ? string.Empty : $" or from -Size {requested} bytes")}: {list}. QEMU's quorum needs replicas of one size.", Host.Name)
            {
                RecommendedAction = "Resize them to one size (qemu-img resize) or pick replicas of the same size.",
            };
        }

        return expected;
    }

    /// <summary>
    /// Replicas that already hold data must be identical (qemu-img compare, first differing offset in the error); when
    /// new empty replicas join, the existing ones must hold only zeros. -Force turns both into warnings.
    /// </summary>
    private async Task CheckDataAsync(IReadOnlyList<QuorumReplicaLocation> locations, IReadOnlyList<QuorumProbeResult> probes, IReadOnlyList<int> existing,
        bool creating, long size, bool force, List<string> warnings, CancellationToken cancellationToken)
    {
        if (existing.Count == 0)
        {
            return;
        }

        var reference = existing[0];
        var checks = existing.Skip(1).Select(i => (Other: i, Target: locations[i].Text, Format: probes[i].Format!)).ToList();
        if (creating)
        {
            // An empty new replica reads as zeros: the existing data must be zeros too (the null-co driver reads zeros).
            var zeros = new JsonObject { ["driver"] = "null-co", ["size"] = size, ["read-zeroes"] = true }.ToJsonString();
            checks.Add((Other: -1, Target: "json:" + zeros, Format: "raw"));
        }

        foreach (var (other, target, format) in checks)
        {
            var touchesNfs = locations[reference].Transport == QuorumTransport.Nfs || (other >= 0 && locations[other].Transport == QuorumTransport.Nfs);
            var spec = StorageCommands.ImageCommand(Images.Options, touchesNfs, Images.Options.LongCommandTimeout,
                "qemu-img", "compare", "-U", "-p", "-f", probes[reference].Format!, "-F", format, locations[reference].Text, target);
            var what = other >= 0 ? $"'{locations[reference].Text}' with '{locations[other].Text}'" : $"'{locations[reference].Text}' with the empty new replicas";
            var result = await StorageCommands.RunWithProgressAsync(Host, spec, "New-QuorumDisk", "Comparing " + what, cancellationToken).ConfigureAwait(false);
            if (result.ExitCode == 0)
            {
                continue;
            }

            if (result.ExitCode != 1)
            {
                throw new QuorumException(QuorumErrorIds.ReplicaUnreadable, ReplicaErrorCategory.ReadError,
                    $"On VM host '{Host.Name}', comparing {what} failed (qemu-img compare exit code {result.ExitCode}): {StorageCommands.TrimQemuMessage(result.StandardError)}", Host.Name, locations[reference].Text);
            }

            var offset = MismatchPattern().Match(result.StandardOutput) is { Success: true } m ? m.Groups["o"].Value : "?";
            var message = other >= 0
                ? $"The replicas '{locations[reference].Text}' and '{locations[other].Text}' already hold data and differ (first at offset {offset}): a new quorum disk starts from identical replicas."
                : $"The replica '{locations[reference].Text}' holds data (first non-zero byte at offset {offset}) but the replicas to be created would be empty: they would disagree everywhere it holds data.";
            if (!force)
            {
                throw new QuorumException(QuorumErrorIds.ReplicasDiffer, ReplicaErrorCategory.InvalidData, message, Host.Name, other >= 0 ? locations[other].Text : locations[reference].Text)
                {
                    RecommendedAction = other >= 0
                        ? "Copy one replica over the others first (qemu-img convert), or pass -Force to let the quorum outvote the odd ones (Repair-QuorumDisk rewrites them)."
                        : "Create the new replicas as copies of the existing one (qemu-img convert), or pass -Force and run Repair-QuorumDisk on each new replica.",
                };
            }

            warnings.Add(message + " Accepted because of -Force.");
        }
    }

    [GeneratedRegex(@"mismatch at offset (?<o>\d+)", RegexOptions.CultureInvariant)]
    private static partial Regex MismatchPattern();
}
