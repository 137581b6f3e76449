using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ReplicaTools.Core.Nbd;

/// <summary>The JSON file kept per export on its host, so any later session can list and remove the export.</summary>
internal sealed class NbdStateRecord
{
    public const int CurrentVersion = 1;

    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    public int Version { get; set; } = CurrentVersion;

    /// <summary>"starting" while the server is being started, "running" once it listens.</summary>
    public string Status { get; set; } = "starting";

    public string Name { get; set; } = string.Empty;

    public NbdServerKind Server { get; set; }

    public string Path { get; set; } = string.Empty;

    public bool IsDevice { get; set; }

    public bool ReadOnly { get; set; }

    public string ListenAddress { get; set; } = string.Empty;

    public int Port { get; set; }

    public string Uri { get; set; } = string.Empty;

    public int ProcessId { get; set; }

    public string? Format { get; set; }

    public string? Bitmap { get; set; }

    public DateTimeOffset CreatedAt { get; set; }

    public string? ConfigFile { get; set; }

    public string PidFile { get; set; } = string.Empty;

    public List<string> ServerArguments { get; set; } = new();

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, Options);

    public static NbdStateRecord Parse(string json) =>
        JsonSerializer.Deserialize<NbdStateRecord>(json, Options) ?? throw new JsonException("The state file is empty (null).");
}

/// <summary>Parses <c>ss -ltnH</c> output into the set of listening TCP ports.</summary>
public static class ListeningPorts
{
    public static IReadOnlySet<int> ParseSs(string output)
    {
        var ports = new HashSet<int>();
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
                ports.Add(port);
            }
        }

        return ports;
    }
}

/// <summary>Writes nbd-server configuration files (GLib key files) for one export.</summary>
public static class NbdServerConfig
{
    public static string Build(string exportName, string path, bool readOnly, string listenAddress, int port, int maxConnections)
    {
        var builder = new StringBuilder();
        builder.Append("# Written by ReplicaTools (New-NbdExport) for one export; Remove-NbdExport deletes it.\n");
        builder.Append("[generic]\n");
        builder.Append("listenaddr = ").Append(Escape(listenAddress)).Append('\n');
        builder.Append("port = ").Append(port.ToString(CultureInfo.InvariantCulture)).Append('\n');
        builder.Append("allowlist = true\n");
        builder.Append('[').Append(exportName).Append("]\n");
        builder.Append("exportname = ").Append(Escape(path)).Append('\n');
        builder.Append("readonly = ").Append(readOnly ? "true" : "false").Append('\n');

        // The default virtstyle (ipliteral) substitutes %s in the path with the client's address: take paths literally.
        builder.Append("virtstyle = none\n");
        builder.Append("maxconnections = ").Append(maxConnections.ToString(CultureInfo.InvariantCulture)).Append('\n');
        if (!readOnly)
        {
            builder.Append("flush = true\n");
            builder.Append("fua = true\n");
        }

        return builder.ToString();
    }

    /// <summary>Escapes a key file value so GLib reads back exactly <paramref name="value"/> (backslashes, newlines, leading and trailing blanks).</summary>
    public static string Escape(string value)
    {
        var builder = new StringBuilder(value.Length + 8);
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            switch (c)
            {
                case '\\': builder.Append("\\\\"); break;
                case '\n': builder.Append("\\n"); break;
                case '\r': builder.Append("\\r"); break;
                case '\t': builder.Append("\\t"); break;
                case ' ' when i == 0 || i == value.Length - 1: builder.Append("\\s"); break;
                default: builder.Append(c); break;
            }
        }

        return builder.ToString();
    }
}
