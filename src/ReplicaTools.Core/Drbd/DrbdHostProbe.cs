using System.Globalization;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Drbd;

/// <summary>Another resource configured on a host: what it occupies there (device minor, backing disk, address and port).</summary>
internal sealed record OtherResource(string Name, int? Minor, string? Disk, string? Address, int? Port);

/// <summary>What read-only commands found on one storage host; the facts every replicated-disk plan is decided from.</summary>
internal sealed class DrbdHostProbe
{
    private DrbdHostProbe(ReplicaSession session, DrbdHostLayout layout)
    {
        Session = session;
        Layout = layout;
    }

    public ReplicaSession Session { get; }

    public IReplicaHost Host => Session.Host;

    public string Name => Host.Name;

    public DrbdHostLayout Layout { get; }

    /// <summary>uname -n: the name drbdadm looks for in <c>on</c> sections.</summary>
    public string NodeName { get; private set; } = string.Empty;

    /// <summary>block, file, other or missing (New only).</summary>
    public string DiskKind { get; private set; } = "missing";

    public long? DiskSize { get; private set; }

    /// <summary>Our resource's file, if any (any content).</summary>
    public string? ConfigText { get; private set; }

    /// <summary>The resource, when the file is one ReplicaTools wrote.</summary>
    public DrbdResourceConfig? Config { get; private set; }

    public IReadOnlyList<OtherResource> Others { get; private set; } = Array.Empty<OtherResource>();

    public DrbdKernelStatus Kernel { get; private set; } = new(true, null, Array.Empty<DrbdResourceStatus>());

    /// <summary>The resource's live status here (null: not up).</summary>
    public DrbdResourceStatus? Status { get; private set; }

    /// <summary>The DRBD metadata on the disk (null: none, or not read because the resource is up).</summary>
    public DrbdMetadataDump? Metadata { get; private set; }

    public IReadOnlySet<(string Address, int Port)> Listening { get; private set; } = new HashSet<(string, int)>();

    /// <summary>Everything New-ReplicatedDisk needs to know about a host and its disk.</summary>
    public static async Task<DrbdHostProbe> ForNewAsync(ReplicaSession session, DrbdEnvironment environment, string resource, string disk, CancellationToken cancellationToken)
    {
        var probe = new DrbdHostProbe(session, environment.Layout(session.Host));
        var host = probe.Host;
        var facts = await host.RunAsync(new CommandSpec("sh", "-c", DrbdCommands.ProbeHostScript, "sh", disk) { Timeout = DrbdCommands.QuickTimeout }, cancellationToken).ConfigureAwait(false);
        foreach (var line in facts.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var space = line.IndexOf(' ');
            var (key, value) = space < 0 ? (line, string.Empty) : (line[..space], line[(space + 1)..]);
            switch (key)
            {
                case "node": probe.NodeName = value.Trim(); break;
                case "disk": probe.DiskKind = value.Trim(); break;
                case "size" when long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var size): probe.DiskSize = size; break;
            }
        }

        await probe.ReadConfigAsync(resource, cancellationToken).ConfigureAwait(false);
        await probe.ReadKernelAsync(environment, resource, cancellationToken).ConfigureAwait(false);
        var others = await host.RunAsync(new CommandSpec("sh", "-c", DrbdCommands.OtherResourcesScript, "sh", probe.Layout.ConfigDirectory.TrimEnd('/'), resource) { Timeout = DrbdCommands.QuickTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        probe.Others = others.StandardOutput.Split('\u001e', StringSplitOptions.RemoveEmptyEntries)
            .Select(chunk => (Name: chunk.Split('\n', 2)[0], Dump: chunk.Contains('\n') ? chunk[(chunk.IndexOf('\n') + 1)..] : string.Empty))
            .Select(r => (r.Name, Node: DrbdCommands.ParseDumpForNode(r.Dump, probe.NodeName)))
            .Where(r => r.Node is not null)
            .Select(r => new OtherResource(r.Name, r.Node!.Value.Minor, r.Node.Value.Disk, r.Node.Value.Address, r.Node.Value.Port))
            .ToArray();
        if (probe.Status is null && probe.DiskKind == "block")
        {
            var dump = await host.RunAsync(DrbdCommands.DumpMetadata(disk), cancellationToken).ConfigureAwait(false);
            probe.Metadata = dump.ExitCode == 0 ? DrbdMetadata.ParseDump(dump.StandardOutput) : null;
        }

        var sockets = await host.RunAsync(new CommandSpec(NbdHostScripts.ListeningSockets) { Timeout = DrbdCommands.QuickTimeout }, cancellationToken).ConfigureAwait(false);
        probe.Listening = ListeningPorts.ParseSsEndpoints(sockets.StandardOutput);
        return probe;
    }

    /// <summary>What Get/Switch/Remove need: the node name, the resource's file and its live status.</summary>
    public static async Task<DrbdHostProbe> ForExistingAsync(ReplicaSession session, DrbdEnvironment environment, string resource, CancellationToken cancellationToken)
    {
        var probe = new DrbdHostProbe(session, environment.Layout(session.Host));
        var node = await probe.Host.RunAsync(new CommandSpec("uname", "-n") { Timeout = DrbdCommands.QuickTimeout }, cancellationToken).ConfigureAwait(false);
        probe.NodeName = node.StandardOutput.Trim();
        await probe.ReadConfigAsync(resource, cancellationToken).ConfigureAwait(false);
        await probe.ReadKernelAsync(environment, resource, cancellationToken).ConfigureAwait(false);
        return probe;
    }

    /// <summary>The names of the resources ReplicaTools configured on a host.</summary>
    public static async Task<IReadOnlyList<string>> ListResourcesAsync(ReplicaSession session, DrbdEnvironment environment, CancellationToken cancellationToken)
    {
        var layout = environment.Layout(session.Host);
        var listing = await session.Host.RunAsync(HostFiles.ListByFirstLine(layout.ConfigDirectory.TrimEnd('/'), DrbdResourceConfig.Header, "*.res"), cancellationToken).ConfigureAwait(false);
        return HostFiles.ParseListing(listing.StandardOutput).Select(f => DrbdResourceConfig.Parse(f.Content)?.Name).OfType<string>().ToArray();
    }

    private async Task ReadConfigAsync(string resource, CancellationToken cancellationToken)
    {
        var file = Layout.ConfigFile(resource);
        var read = await Host.RunAsync(new CommandSpec("sh", "-c", "[ -e \"$1\" ] || exit 3; cat -- \"$1\"", "sh", file) { Timeout = DrbdCommands.QuickTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (read.ExitCode == 3)
        {
            return;
        }

        if (read.ExitCode != 0)
        {
            throw new ReplicaException("DrbdConfigUnreadable", ReplicaErrorCategory.ReadError,
                $"On host '{Name}', the resource file {file} exists but cannot be read ({CommandFailedException.StderrTail(read.StandardError)}).", Name, file);
        }

        ConfigText = read.StandardOutput;
        Config = DrbdResourceConfig.Parse(read.StandardOutput);
    }

    private async Task ReadKernelAsync(DrbdEnvironment environment, string resource, CancellationToken cancellationToken)
    {
        Kernel = await environment.Kernel.StatusAsync(Host, null, cancellationToken).ConfigureAwait(false);
        Status = Kernel.Resource(resource);
    }
}
