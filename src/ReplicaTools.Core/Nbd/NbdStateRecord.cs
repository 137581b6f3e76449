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
