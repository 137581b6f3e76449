using System.Text.Json;

namespace ReplicaTools.Core.Quorum;

/// <summary>
/// QEMU's block graph from <c>x-debug-query-block-graph</c>: node names and parent-child edges. Used instead of
/// query-block and query-named-block-nodes because those stat every node (bdrv_get_allocated_file_size), and for an
/// nfs:// node whose server is dead that call blocks QEMU's main loop until the server returns (measured on QEMU 7.2);
/// walking the graph does no I/O. The command is marked x-debug, the only QMP command that lists edges with child names.
/// </summary>
public sealed class QuorumGraph
{
    private readonly Dictionary<long, (string Name, string Type)> nodes = new();
    private readonly List<(long Parent, long Child, string Name)> edges = new();

    /// <summary>Parses the reply of x-debug-query-block-graph.</summary>
    public static QuorumGraph Parse(JsonElement reply)
    {
        var graph = new QuorumGraph();
        foreach (var node in reply.GetProperty("nodes").EnumerateArray())
        {
            graph.nodes[node.GetProperty("id").GetInt64()] = (node.GetProperty("name").GetString() ?? string.Empty, node.GetProperty("type").GetString() ?? string.Empty);
        }

        foreach (var edge in reply.GetProperty("edges").EnumerateArray())
        {
            graph.edges.Add((edge.GetProperty("parent").GetInt64(), edge.GetProperty("child").GetInt64(), edge.GetProperty("name").GetString() ?? string.Empty));
        }

        return graph;
    }

    /// <summary>Every named block node (block-driver nodes with a node name).</summary>
    public IReadOnlySet<string> NodeNames => nodes.Values.Where(n => n.Type == "block-driver" && n.Name.Length > 0).Select(n => n.Name).ToHashSet(StringComparer.Ordinal);

    public bool HasNode(string nodeName) => Find(nodeName) is not null;

    /// <summary>The children of a node: (edge name such as "children.0", child node name), in edge order.</summary>
    public IReadOnlyList<(string Edge, string Child)> ChildrenOf(string nodeName)
    {
        if (Find(nodeName) is not { } id)
        {
            return Array.Empty<(string, string)>();
        }

        return edges.Where(e => e.Parent == id && nodes.ContainsKey(e.Child)).Select(e => (e.Name, nodes[e.Child].Name)).ToArray();
    }

    /// <summary>Nodes with quorum children: only QEMU's quorum driver names its child edges "children.N".</summary>
    public IReadOnlyList<string> QuorumNodes() => nodes.Where(n => n.Value.Type == "block-driver" && n.Value.Name.Length > 0
            && edges.Any(e => e.Parent == n.Key && e.Name.StartsWith("children.", StringComparison.Ordinal)))
        .Select(n => n.Value.Name).ToArray();

    /// <summary>The parents of a node: their names (a device's block backend shows as /machine/peripheral/ID/...; exports are unnamed).</summary>
    public IReadOnlyList<string> ParentsOf(string nodeName)
    {
        if (Find(nodeName) is not { } id)
        {
            return Array.Empty<string>();
        }

        return edges.Where(e => e.Child == id && nodes.ContainsKey(e.Parent)).Select(e => nodes[e.Parent].Name).ToArray();
    }

    /// <summary>The qdev id of the guest device whose block backend sits on <paramref name="nodeName"/>, if any.</summary>
    public string? DeviceOf(string nodeName)
    {
        const string prefix = "/machine/peripheral/";
        foreach (var parent in ParentsOf(nodeName))
        {
            if (parent.StartsWith(prefix, StringComparison.Ordinal))
            {
                var rest = parent[prefix.Length..];
                var slash = rest.IndexOf('/');
                return slash < 0 ? rest : rest[..slash];
            }
        }

        return null;
    }

    private long? Find(string nodeName)
    {
        foreach (var (id, node) in nodes)
        {
            if (node.Type == "block-driver" && node.Name == nodeName)
            {
                return id;
            }
        }

        return null;
    }
}
