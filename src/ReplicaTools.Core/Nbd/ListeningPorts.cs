using System.Globalization;

namespace ReplicaTools.Core.Nbd;

/// <summary>Parses <c>ss -ltnH</c> output into the set of listening TCP ports.</summary>
public static class ListeningPorts
{
    public static IReadOnlySet<int> ParseSs(string output) => ParseSsEndpoints(output).Select(e => e.Port).ToHashSet();

    /// <summary>The listening (address, port) pairs; the address as ss prints it without brackets (0.0.0.0, ::, * for any).</summary>
    public static IReadOnlySet<(string Address, int Port)> ParseSsEndpoints(string output)
    {
        var endpoints = new HashSet<(string, int)>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            // State Recv-Q Send-Q Local:Port Peer:Port [Process]; the local address may be [::]:22, *:22 or 10.0.0.1%eth0:22.
            var columns = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (columns.Length < 4)
            {
                continue;
            }

            var local = columns[3];
            var colon = local.LastIndexOf(':');
            if (colon >= 0 && int.TryParse(local.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port))
            {
                var address = local[..colon].Trim('[', ']');
                var zone = address.IndexOf('%');
                endpoints.Add((zone >= 0 ? address[..zone] : address, port));
            }
        }

        return endpoints;
    }
}
