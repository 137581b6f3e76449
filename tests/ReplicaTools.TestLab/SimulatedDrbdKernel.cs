using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using ReplicaTools.Core.Drbd;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.TestLab;

/// <summary>
/// What cannot run on the build machines: the DRBD kernel module. This stands in for it at the module's one seam for it
/// (<see cref="IDrbdKernel"/>) and nowhere else; configuration, validation by drbdadm, metadata (drbdmeta create-md,
/// dump-md, wipe-md), exports and clients all run for real.
/// <list type="bullet">
/// <item>Every kernel step first runs the real <c>drbdadm -d</c> with the same arguments on the lab host (in its own
/// UTS namespace), so drbdadm checks the resource file and the command; the drbdsetup/drbdmeta lines it prints are
/// kept in <see cref="DryRuns"/>.</item>
/// <item>Roles and disk states follow DRBD 9's rules for two nodes: one primary at a time, promotion needs UpToDate
/// data or --force, demotion and down fail while the device is held open (checked for real: any process with the
/// stand-in device open), a forced primary resyncs an Inconsistent peer.</item>
/// <item>Status is produced in drbdsetup 9.22's JSON layout and read by the module's own parser. A running resync
/// advances by <see cref="SyncStepPercent"/> at each status read of a syncing node.</item>
/// <item>The block device of a minor is a stand-in chosen by the lab (<see cref="DeviceResolver"/>): replication itself
/// is not simulated, so the lab gives both nodes one device (what protocol C guarantees: identical data).</item>
/// </list>
/// </summary>
public sealed class SimulatedDrbdKernel : IDrbdKernel
{
    private readonly ConcurrentDictionary<string, Resource> resources = new();
    private readonly ConcurrentDictionary<string, string> nodeNames = new();
    private readonly ConcurrentQueue<string> dryRuns = new();
    private readonly object gate = new();

    public SimulatedDrbdKernel(Func<IReplicaHost, int, string> deviceResolver)
    {
        DeviceResolver = deviceResolver;
    }

    /// <summary>The stand-in for /dev/drbdN on a host.</summary>
    public Func<IReplicaHost, int, string> DeviceResolver { get; }

    /// <summary>How far a resync gets per status read of a syncing node, in percent (0 stalls it).</summary>
    public double SyncStepPercent { get; set; } = 100;

    /// <summary>"[node] drbdsetup ..." lines drbdadm -d printed for each kernel step, in order.</summary>
    public IReadOnlyList<string> DryRuns => dryRuns.ToArray();

    /// <summary>The kernel steps run, as "[node] verb resource [--force]".</summary>
    public List<string> Steps { get; } = new();

    /// <summary>The node is gone (power cut): its resources vanish, its peer loses the connection.</summary>
    public void PowerOff(string nodeName)
    {
        lock (gate)
        {
            foreach (var resource in resources.Values)
            {
                if (resource.Nodes.TryGetValue(nodeName, out var node))
                {
                    node.Up = false;
                    node.Role = "Secondary";
                }
            }
        }
    }

    public string DevicePath(IReplicaHost host, int minor) => DeviceResolver(host, minor);

    public async Task RunAsync(IReplicaHost host, PlannedCommand step, CancellationToken cancellationToken = default)
    {
        if (!DrbdCommands.IsKernelStep(step.Command))
        {
            throw new ArgumentException($"Not a kernel step: {step.Command.CommandLine}", nameof(step));
        }

        var (verb, name, force) = DrbdCommands.DescribeKernelStep(step.Command);
        var node = await NodeNameAsync(host, cancellationToken);
        var file = step.Command.Arguments[2];

        // The real drbdadm checks the file and the command, and says what it would do.
        var dryRun = await host.RunAsync(new CommandSpec(new[] { "drbdadm", "-d" }.Concat(step.Command.Arguments.Skip(1))) { ThrowOnFailure = false, Timeout = TimeSpan.FromMinutes(1) }, cancellationToken);
        if (dryRun.ExitCode != 0)
        {
            throw Failed(host, step, dryRun.StandardError);
        }

        foreach (var line in DrbdCommands.DryRunLines(dryRun.StandardOutput))
        {
            dryRuns.Enqueue($"[{node}] {line}");
        }

        var config = verb == "up" ? DrbdResourceConfig.Parse((await host.RunAsync(new CommandSpec("cat", "--", file), cancellationToken)).StandardOutput) : null;
        lock (gate)
        {
            Steps.Add($"[{node}] {verb} {name}{(force ? " --force" : string.Empty)}");
            var resource = resources.GetOrAdd(name, _ => new Resource(name));
            if (config is not null)
            {
                resource.Configure(config, DeviceSizeKiB(DeviceResolver(host, config.Minor)));
            }

            if (!resource.Nodes.TryGetValue(node, out var self))
            {
                throw Failed(host, step, $"{name}: No such resource (it was never brought up on {node})");
            }

            var peer = resource.Peer(node);
            var error = verb switch
            {
                "up" when self.Up => $"{name}: resource is already up",
                "up" => Do(() => self.Up = true),
                "primary" when !self.Up => $"{name}: No such resource",
                "primary" when self.Role == "Primary" => null,
                "primary" when resource.Connected && peer!.Role == "Primary" => "State change failed: (-1) Multiple primaries not allowed by config",
                "primary" when self.Disk != "UpToDate" && !force => "State change failed: (-2) Need access to UpToDate data",
                "primary" => Do(() => resource.Promote(self, peer)),
                "secondary" when !self.Up => $"{name}: No such resource",
                "secondary" when self.Role == "Primary" && IsHeldOpen(DeviceResolver(host, resource.Minor)) => "State change failed: (-12) Device is held open by someone",
                "secondary" => Do(() => self.Role = "Secondary"),
                "down" when self.Up && self.Role == "Primary" && IsHeldOpen(DeviceResolver(host, resource.Minor)) => "State change failed: (-12) Device is held open by someone",
                "down" => Do(() => { self.Up = false; self.Role = "Secondary"; }),
                _ => $"unknown kernel step {verb}",
            };
            if (error is not null)
            {
                throw Failed(host, step, error);
            }
        }
    }

    public async Task<DrbdKernelStatus> StatusAsync(IReplicaHost host, string? resource, CancellationToken cancellationToken = default)
    {
        var node = await NodeNameAsync(host, cancellationToken);
        var json = new StringBuilder("[\n");
        lock (gate)
        {
            var first = true;
            foreach (var r in resources.Values.Where(r => (resource is null || r.Name == resource) && r.Nodes.TryGetValue(node, out var n) && n.Up).OrderBy(r => r.Name, StringComparer.Ordinal))
            {
                if (!first)
                {
                    json.Append(",\n");
                }

                first = false;
                json.Append(r.StatusJson(node, SyncStepPercent));
            }
        }

        json.Append("]\n");
        return new DrbdKernelStatus(true, null, DrbdStatusJson.Parse(json.ToString()));
    }

    private static string? Do(Action action)
    {
        action();
        return null;
    }

    private static ReplicaTools.Core.ReplicaException Failed(IReplicaHost host, PlannedCommand step, string message) =>
        new("DrbdCommandFailed", ReplicaTools.Core.ReplicaErrorCategory.InvalidResult,
            $"On host '{host.Name}', '{step.Command.CommandLine}' ({step.Purpose}) failed: {DrbdCommands.Scrub(message.Trim())} [simulated DRBD kernel]", host.Name, step.Command.CommandLine);

    private async Task<string> NodeNameAsync(IReplicaHost host, CancellationToken cancellationToken)
    {
        if (!nodeNames.TryGetValue(host.Name, out var name))
        {
            name = (await host.RunAsync(new CommandSpec("uname", "-n"), cancellationToken)).StandardOutput.Trim();
            nodeNames[host.Name] = name;
        }

        return name;
    }

    private static long DeviceSizeKiB(string device) =>
        long.Parse(Tool.Run("blockdev", "--getsize64", device).Trim(), CultureInfo.InvariantCulture) / 1024;

    /// <summary>Whether any process has <paramref name="device"/> open (what makes DRBD refuse to demote).</summary>
    public static bool IsHeldOpen(string device)
    {
        var target = Path.GetFullPath(device);
        foreach (var process in Directory.EnumerateDirectories("/proc").Where(d => char.IsAsciiDigit(Path.GetFileName(d)[0])))
        {
            try
            {
                foreach (var fd in Directory.EnumerateFileSystemEntries(Path.Combine(process, "fd")))
                {
                    if (new FileInfo(fd).LinkTarget == target)
                    {
                        return true;
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // The process ended meanwhile.
            }
        }

        return false;
    }

    private sealed class NodeState(int nodeId)
    {
        public int NodeId { get; } = nodeId;

        public bool Up { get; set; }

        public string Role { get; set; } = "Secondary";

        /// <summary>Freshly created metadata is Inconsistent on both nodes until one is forced primary.</summary>
        public string Disk { get; set; } = "Inconsistent";
    }

    private sealed class Resource(string name)
    {
        public string Name { get; } = name;

        public int Minor { get; private set; }

        public long SizeKiB { get; private set; }

        public Dictionary<string, NodeState> Nodes { get; } = new(StringComparer.Ordinal);

        /// <summary>Fraction of the resync done while one node is UpToDate and the other Inconsistent.</summary>
        public double Synced { get; private set; } = 1;

        public bool Connected => Nodes.Count == 2 && Nodes.Values.All(n => n.Up);

        public NodeState? Peer(string node) => Nodes.Where(n => n.Key != node).Select(n => n.Value).FirstOrDefault();

        public void Configure(DrbdResourceConfig config, long sizeKiB)
        {
            Minor = config.Minor;
            SizeKiB = sizeKiB;
            foreach (var node in config.Nodes)
            {
                if (!Nodes.ContainsKey(node.NodeName))
                {
                    Nodes[node.NodeName] = new NodeState(node.NodeId);
                }
            }
        }

        public void Promote(NodeState self, NodeState? peer)
        {
            if (self.Disk != "UpToDate")
            {
                self.Disk = "UpToDate";
                if (peer is not null && peer.Disk != "UpToDate")
                {
                    peer.Disk = "Inconsistent";
                    Synced = 0;
                }
            }

            self.Role = "Primary";
        }

        /// <summary>This node's status in drbdsetup 9.22's JSON layout (user/v9/drbdsetup.c resource_status_json and callees).</summary>
        public string StatusJson(string node, double step)
        {
            var self = Nodes[node];
            var peerName = Nodes.Keys.FirstOrDefault(n => n != node);
            var peer = peerName is null ? null : Nodes[peerName];
            var syncing = Connected && Synced < 1 && Nodes.Values.Any(n => n.Disk == "UpToDate") && Nodes.Values.Any(n => n.Disk == "Inconsistent");
            if (syncing && step > 0)
            {
                Synced = Math.Min(1, Synced + step / 100);
                if (Synced >= 1)
                {
                    foreach (var n in Nodes.Values)
                    {
                        n.Disk = "UpToDate";
                    }

                    syncing = false;
                }
            }

            var outOfSync = syncing ? (long)(SizeKiB * (1 - Synced)) : 0;
            var replication = !Connected ? "Off" : syncing ? (self.Disk == "UpToDate" ? "SyncSource" : "SyncTarget") : "Established";
            var inSync = SizeKiB == 0 ? 0 : 100 * (1 - (double)outOfSync / SizeKiB);
            string F(double value) => value.ToString("0.00", CultureInfo.InvariantCulture);
            string B(bool value) => value ? "true" : "false";
            var json = new StringBuilder();
            json.Append("{\n");
            json.Append($"  \"name\": \"{Name}\",\n  \"node-id\": {self.NodeId},\n  \"role\": \"{self.Role}\",\n  \"suspended\": false,\n  \"suspended-user\": false,\n");
            json.Append("  \"suspended-no-data\": false,\n  \"suspended-fencing\": false,\n  \"suspended-quorum\": false,\n  \"force-io-failures\": false,\n  \"write-ordering\": \"flush\",\n  \"devices\": [\n");
            json.Append($"    {{\n      \"volume\": 0,\n      \"minor\": {Minor},\n      \"disk-state\": \"{self.Disk}\",\n      \"client\": false,\n      \"quorum\": true,\n");
            json.Append($"      \"size\": {SizeKiB},\n      \"read\": 0,\n      \"written\": 0,\n      \"al-writes\": 0,\n      \"bm-writes\": 0,\n      \"upper-pending\": 0,\n      \"lower-pending\": 0\n    }} ],\n");
            json.Append("  \"connections\": [\n");
            if (peer is not null)
            {
                json.Append($"    {{\n      \"peer-node-id\": {peer.NodeId},\n      \"name\": \"{peerName}\",\n      \"connection-state\": \"{(Connected ? "Connected" : "Connecting")}\", \n");
                json.Append($"      \"congested\": false,\n      \"peer-role\": \"{(Connected ? peer.Role : "Unknown")}\",\n      \"ap-in-flight\": 0,\n      \"rs-in-flight\": 0,\n      \"peer_devices\": [\n");
                json.Append($"        {{\n          \"volume\": 0,\n          \"replication-state\": \"{replication}\",\n          \"peer-disk-state\": \"{(Connected ? peer.Disk : "DUnknown")}\",\n");
                json.Append($"          \"peer-client\": false,\n          \"resync-suspended\": \"no\",\n          \"received\": 0,\n          \"sent\": 0,\n          \"out-of-sync\": {outOfSync},\n");
                json.Append($"          \"pending\": 0,\n          \"unacked\": 0,\n          \"has-sync-details\": {B(false)},\n          \"has-online-verify-details\": false,\n          \"percent-in-sync\": {F(inSync)}{(syncing ? "," : string.Empty)}\n");
                if (syncing)
                {
                    json.Append($"          \"percent-resync-done\": {F(inSync)}\n");
                }

                json.Append("        } ]\n    }");
            }

            json.Append(" ]\n}");
            return json.ToString();
        }
    }
}
