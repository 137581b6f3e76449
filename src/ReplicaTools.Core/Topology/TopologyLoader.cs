using System.Globalization;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Text;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace ReplicaTools.Core.Topology;

/// <summary>
/// Reads a topology file. Walks YamlDotNet's representation model rather than deserialising into classes, so that
/// every unknown key, missing value and dangling reference is reported with its file, line and column.
/// </summary>
public static class TopologyLoader
{
    public static readonly IReadOnlyList<string> KnownRoles = new[] { "kvm", "storage", "nfs", "nbd", "iscsi", "drbd" };

    private static readonly string[] TopKeys = { "defaults", "hosts", "disks" };
    private static readonly string[] ConnectionKeys = { "transport", "user", "port", "keyFile", "knownHostsFile", "jumpHost", "connectTimeoutSeconds", "acceptNewHostKey", "sshOptions" };
    private static readonly string[] HostKeys = ConnectionKeys.Concat(new[] { "address", "roles" }).ToArray();
    private static readonly string[] DiskKeys = { "vm", "host", "drive", "format", "size", "copies" };
    private static readonly string[] CopyKeys = { "host", "path" };
    private static readonly string[] Formats = { "raw", "qcow2", "vdi" };

    public static ReplicaTopology Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ReplicaException("TopologyNotReadable", ReplicaErrorCategory.ReadError, $"Cannot read topology file '{path}': {ex.Message}", null, path, ex);
        }

        return Parse(text, path);
    }

    /// <param name="filePath">Named in error messages; also the base for relative key file paths.</param>
    public static ReplicaTopology Parse(string yaml, string filePath)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(yaml));
        }
        catch (YamlException ex) when (ex.Message.StartsWith("Duplicate key ", StringComparison.Ordinal))
        {
            throw new TopologyException(filePath, ex.Start.Line, ex.Start.Column, $"key '{ex.Message["Duplicate key ".Length..]}' appears twice in the same mapping.", ex);
        }
        catch (YamlException ex)
        {
            throw new TopologyException(filePath, ex.Start.Line, ex.Start.Column, $"not valid YAML: {Unwrap(ex)}", ex);
        }

        var reader = new Reader(filePath);
        if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is YamlScalarNode { Value: null or "" })
        {
            throw new TopologyException(filePath, 1, 1, "the file is empty; it needs at least a 'hosts' mapping.");
        }

        if (stream.Documents.Count > 1)
        {
            throw reader.Error(stream.Documents[1].RootNode, "the file holds more than one YAML document; put everything in one.");
        }

        var root = reader.Mapping(stream.Documents[0].RootNode, "the top level");
        reader.OnlyKeys(root, TopKeys, "the top level");

        var defaults = reader.Get(root, "defaults") is { } defaultsNode ? reader.Mapping(defaultsNode, "'defaults'") : null;
        if (defaults is not null)
        {
            reader.OnlyKeys(defaults, ConnectionKeys, "'defaults'");
        }

        var hostsNode = reader.Get(root, "hosts") ?? throw reader.Error(root, "the required key 'hosts' is missing.");
        var hosts = new List<TopologyHost>();
        foreach (var (keyNode, valueNode) in reader.Mapping(hostsNode, "'hosts'").Children)
        {
            var name = reader.Name(keyNode, "host name");
            hosts.Add(ReadHost(reader, name, keyNode, reader.Mapping(valueNode, $"host '{name}'"), defaults));
        }

        if (hosts.Count == 0)
        {
            throw reader.Error(hostsNode, "'hosts' is empty; name at least one host.");
        }

        var disks = new List<TopologyDisk>();
        if (reader.Get(root, "disks") is { } disksNode)
        {
            foreach (var (keyNode, valueNode) in reader.Mapping(disksNode, "'disks'").Children)
            {
                var name = reader.Name(keyNode, "disk name");
                disks.Add(ReadDisk(reader, name, keyNode, reader.Mapping(valueNode, $"disk '{name}'"), hosts));
            }
        }

        return new ReplicaTopology(filePath, hosts, disks);
    }

    private static TopologyHost ReadHost(Reader reader, string name, YamlNode keyNode, YamlMappingNode node, YamlMappingNode? defaults)
    {
        var what = $"host '{name}'";
        reader.OnlyKeys(node, HostKeys, what);
        var address = reader.RequiredString(node, "address", what);
        if (address.StartsWith('-') || address.Any(char.IsWhiteSpace))
        {
            throw reader.Error(reader.Get(node, "address")!, $"{what}: 'address' must be a host name or IP address.");
        }

        YamlNode? Setting(string key) => reader.Get(node, key) ?? (defaults is null ? null : reader.Get(defaults, key));

        var roles = reader.Get(node, "roles") is { } rolesNode ? reader.StringList(rolesNode, $"{what}: 'roles'") : new List<(string, YamlNode)>();
        foreach (var (role, roleNode) in roles)
        {
            if (!KnownRoles.Contains(role))
            {
                throw reader.Error(roleNode, $"{what}: unknown role '{role}'. Known roles: {string.Join(", ", KnownRoles)}.");
            }
        }

        var keyFile = Setting("keyFile") is { } keyNodeValue ? reader.String(keyNodeValue, $"{what}: 'keyFile'") : null;
        var transport = Setting("transport") is { } transportNode ? reader.Transport(transportNode, $"{what}: 'transport'") : (SessionTransport?)null;
        var sshOptions = Setting("sshOptions") is { } optionsNode ? reader.SshOptions(optionsNode, $"{what}: 'sshOptions'") : Array.Empty<string>();
        var knownHostsFile = Setting("knownHostsFile") is { } knownNode ? reader.String(knownNode, $"{what}: 'knownHostsFile'") : null;
        if ((transport ?? SessionTransports.Default) == SessionTransport.SshNet)
        {
            // sshOptions configure the OpenSSH client. A host of its own may not set them; the defaults' apply to OpenSsh
            // hosts only, except that their UserKnownHostsFile is this host's known_hosts file too.
            if (reader.Get(node, "sshOptions") is { } own)
            {
                throw reader.Error(own, $"{what}: 'sshOptions' configure the OpenSSH client and do not apply to transport SshNet; use 'knownHostsFile' for the known_hosts file.");
            }

            knownHostsFile ??= sshOptions.Select(SshConnectionOptions.ParseOption)
                .Where(o => string.Equals(o.Key, "UserKnownHostsFile", StringComparison.OrdinalIgnoreCase)).Select(o => o.Value).FirstOrDefault();
            sshOptions = Array.Empty<string>();
        }

        return new TopologyHost(name, address)
        {
            Transport = transport,
            KnownHostsPath = knownHostsFile is null ? null : ResolvePath(knownHostsFile, reader.FilePath),
            UserName = Setting("user") is { } user ? reader.String(user, $"{what}: 'user'") : null,
            Port = Setting("port") is { } port ? reader.Int(port, $"{what}: 'port'", 1, 65535) : 22,
            KeyFilePath = keyFile is null ? null : ResolvePath(keyFile, reader.FilePath),
            JumpHost = Setting("jumpHost") is { } jump ? reader.String(jump, $"{what}: 'jumpHost'") : null,
            ConnectTimeoutSeconds = Setting("connectTimeoutSeconds") is { } timeout ? reader.Int(timeout, $"{what}: 'connectTimeoutSeconds'", 1, 3600) : 10,
            AcceptNewHostKey = Setting("acceptNewHostKey") is { } accept && reader.Bool(accept, $"{what}: 'acceptNewHostKey'"),
            SshOption = sshOptions,
            Roles = roles.Select(r => r.Item1).ToArray(),
            Line = (int)keyNode.Start.Line,
        };
    }

    private static TopologyDisk ReadDisk(Reader reader, string name, YamlNode keyNode, YamlMappingNode node, List<TopologyHost> hosts)
    {
        var what = $"disk '{name}'";
        reader.OnlyKeys(node, DiskKeys, what);
        var vm = reader.RequiredString(node, "vm", what);
        var host = reader.RequiredString(node, "host", what);
        reader.HostReference(reader.Get(node, "host")!, host, hosts, what);

        string? format = null;
        if (reader.Get(node, "format") is { } formatNode)
        {
            format = reader.String(formatNode, $"{what}: 'format'");
            if (!Formats.Contains(format))
            {
                throw reader.Error(formatNode, $"{what}: format '{format}' is not one of {string.Join(", ", Formats)}.");
            }
        }

        long? size = null;
        if (reader.Get(node, "size") is { } sizeNode)
        {
            var text = reader.String(sizeNode, $"{what}: 'size'");
            if (!ByteSize.TryParse(text, out var bytes) || bytes <= 0)
            {
                throw reader.Error(sizeNode, $"{what}: size '{text}' is not a size such as 20GB, 512MiB or 1073741824.");
            }

            size = bytes;
        }

        var copies = new List<TopologyDiskCopy>();
        if (reader.Get(node, "copies") is { } copiesNode)
        {
            if (copiesNode is not YamlSequenceNode sequence)
            {
                throw reader.Error(copiesNode, $"{what}: 'copies' must be a list of {{host, path}} entries.");
            }

            foreach (var item in sequence.Children)
            {
                var copy = reader.Mapping(item, $"{what}: a copy");
                reader.OnlyKeys(copy, CopyKeys, $"{what}: a copy");
                var copyHost = reader.RequiredString(copy, "host", $"{what}: a copy");
                reader.HostReference(reader.Get(copy, "host")!, copyHost, hosts, what);
                copies.Add(new TopologyDiskCopy(copyHost, reader.RequiredString(copy, "path", $"{what}: a copy")));
            }
        }

        return new TopologyDisk(name, vm, host)
        {
            Drive = reader.Get(node, "drive") is { } drive ? reader.String(drive, $"{what}: 'drive'") : null,
            Format = format,
            Size = size,
            Copies = copies,
            Line = (int)keyNode.Start.Line,
        };
    }

    private static string ResolvePath(string path, string topologyFile)
    {
        if (path == "~" || path.StartsWith("~/", StringComparison.Ordinal))
        {
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), path.Length > 2 ? path[2..] : string.Empty);
        }

        return Path.IsPathRooted(path) ? path : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(topologyFile)) ?? ".", path));
    }

    private static string Unwrap(YamlException ex)
    {
        var message = ex.InnerException is YamlException inner ? inner.Message : ex.Message;
        var close = message.IndexOf("): ", StringComparison.Ordinal);
        return message.StartsWith("(Line", StringComparison.Ordinal) && close > 0 ? message[(close + 3)..] : message;
    }

    private sealed class Reader(string filePath)
    {
        public string FilePath { get; } = filePath;

        public TopologyException Error(YamlNode node, string problem) => new(FilePath, node.Start.Line, node.Start.Column, problem);

        public YamlMappingNode Mapping(YamlNode node, string what) =>
            node as YamlMappingNode ?? throw Error(node, $"{what} must be a mapping of keys to values.");

        public YamlNode? Get(YamlMappingNode node, string key) =>
            node.Children.FirstOrDefault(pair => pair.Key is YamlScalarNode scalar && scalar.Value == key).Value;

        public void OnlyKeys(YamlMappingNode node, string[] allowed, string what)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var key in node.Children.Keys)
            {
                var name = (key as YamlScalarNode)?.Value;
                if (name is null || !allowed.Contains(name, StringComparer.Ordinal))
                {
                    var hint = name is null ? string.Empty : allowed.FirstOrDefault(a => string.Equals(a, name, StringComparison.OrdinalIgnoreCase)) is { } near ? $" Did you mean '{near}'?" : string.Empty;
                    throw Error(key, $"{what}: unknown key '{name}'.{hint} Allowed keys: {string.Join(", ", allowed)}.");
                }

                if (!seen.Add(name))
                {
                    throw Error(key, $"{what}: key '{name}' appears twice.");
                }
            }
        }

        public string Name(YamlNode node, string what)
        {
            var name = String(node, what);
            if (name.Length == 0 || name.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)))
            {
                throw Error(node, $"{what} '{name}' must be a non-empty word without spaces.");
            }

            return name;
        }

        public string String(YamlNode node, string what)
        {
            if (node is not YamlScalarNode scalar || scalar.Value is null)
            {
                throw Error(node, $"{what} must be a single value.");
            }

            if (scalar.Style == YamlDotNet.Core.ScalarStyle.Plain && scalar.Value is "" or "~" or "null")
            {
                throw Error(node, $"{what} has no value.");
            }

            return scalar.Value;
        }

        public string RequiredString(YamlMappingNode node, string key, string what) =>
            Get(node, key) is { } value ? String(value, $"{what}: '{key}'") : throw Error(node, $"{what}: the required key '{key}' is missing.");

        public int Int(YamlNode node, string what, int min, int max)
        {
            var text = String(node, what);
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value < min || value > max)
            {
                throw Error(node, $"{what} must be a whole number from {min} to {max}, not '{text}'.");
            }

            return value;
        }

        public SessionTransport Transport(YamlNode node, string what)
        {
            var text = String(node, what);
            return Enum.GetNames<SessionTransport>().FirstOrDefault(n => string.Equals(n, text, StringComparison.OrdinalIgnoreCase)) is { } name
                ? Enum.Parse<SessionTransport>(name)
                : throw Error(node, $"{what} must be one of {string.Join(", ", Enum.GetNames<SessionTransport>())}, not '{text}'.");
        }

        public bool Bool(YamlNode node, string what) => String(node, what).ToLowerInvariant() switch
        {
            "true" or "yes" => true,
            "false" or "no" => false,
            var other => throw Error(node, $"{what} must be true or false, not '{other}'."),
        };

        public List<(string, YamlNode)> StringList(YamlNode node, string what)
        {
            if (node is YamlScalarNode)
            {
                return new List<(string, YamlNode)> { (String(node, what), node) };
            }

            if (node is not YamlSequenceNode sequence)
            {
                throw Error(node, $"{what} must be a list.");
            }

            return sequence.Children.Select(item => (String(item, what), item)).ToList();
        }

        public string[] SshOptions(YamlNode node, string what)
        {
            var options = new List<string>();
            foreach (var (key, value) in Mapping(node, what).Children)
            {
                var option = $"{String(key, what)}={String(value, what)}";
                try
                {
                    SshConnectionOptions.ParseOption(option);
                }
                catch (ArgumentException ex)
                {
                    throw Error(key, $"{what}: {ex.Message.Split(" (Parameter", 2)[0]}");
                }

                options.Add(option);
            }

            return options.ToArray();
        }

        public void HostReference(YamlNode node, string name, List<TopologyHost> hosts, string what)
        {
            if (!hosts.Any(h => h.Name == name))
            {
                throw Error(node, $"{what}: host '{name}' is not defined under 'hosts' (defined: {string.Join(", ", hosts.Select(h => h.Name))}).");
            }
        }
    }
}
