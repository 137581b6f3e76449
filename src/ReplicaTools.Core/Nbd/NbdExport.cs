using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Nbd;

/// <summary>The program that serves an export.</summary>
public enum NbdServerKind
{
    /// <summary>nbd-server (package nbd-server): raw bytes of a file or device, one forking server per export.</summary>
    NbdServer,

    /// <summary>qemu-nbd (package qemu-utils): any image format qemu reads, block status, dirty bitmaps.</summary>
    QemuNbd,
}

public enum NbdExportState
{
    /// <summary>The recorded server process is alive and is the server that was started for this export.</summary>
    Running,

    /// <summary>The state record outlived its server (killed, host rebooted, start interrupted); Remove-NbdExport cleans it up.</summary>
    Stale,
}

/// <summary>An NBD export on a host, as recorded in the host's state directory and verified against its process.</summary>
public sealed class NbdExport
{
    public required string Name { get; init; }

    /// <summary>The host the export runs on (set by the cmdlets to the session's host name, so the object pipes on).</summary>
    public required string HostName { get; set; }

    /// <summary>The session of that host, when the export came through a cmdlet.</summary>
    public ReplicaSession? Session { get; set; }

    public NbdServerKind Server { get; init; }

    /// <summary>The exported file or block device (absolute, symbolic links resolved).</summary>
    public required string Path { get; init; }

    public bool IsDevice { get; init; }

    public bool ReadOnly { get; init; }

    public required string ListenAddress { get; init; }

    public int Port { get; init; }

    /// <summary>Where clients connect, e.g. <c>nbd://127.0.0.1:10809/vm1</c>.</summary>
    public required string Uri { get; init; }

    /// <summary>
    /// The server's process id on the host while it runs; null when the export is stale or the start never got that far
    /// (a recorded id of a process that is gone may already belong to another process, and 0 means "my process group"
    /// to kill(2) and Stop-Process).
    /// </summary>
    public int? ProcessId { get; init; }

    /// <summary>The image format qemu-nbd opens the path with (always raw for nbd-server).</summary>
    public string? Format { get; init; }

    /// <summary>The persistent dirty bitmap exported as the <c>qemu:dirty-bitmap:NAME</c> meta context (qemu-nbd only).</summary>
    public string? Bitmap { get; init; }

    /// <summary>The meta context a client asks for to read <see cref="Bitmap"/>, or null.</summary>
    public string? BitmapContext => Bitmap is null ? null : NbdContexts.DirtyBitmap(Bitmap);

    public DateTimeOffset CreatedAt { get; init; }

    public NbdExportState State { get; init; }

    /// <summary>Why the export is stale, or null when it runs.</summary>
    public string? StaleReason { get; init; }

    /// <summary>The JSON state record on the host.</summary>
    public required string StateFile { get; init; }

    /// <summary>The nbd-server configuration file on the host (null for qemu-nbd).</summary>
    public string? ConfigFile { get; init; }

    public required string PidFile { get; init; }

    /// <summary>The exact argument list the server was started with.</summary>
    public IReadOnlyList<string> ServerArguments { get; init; } = Array.Empty<string>();

    public string ServerCommandLine => PosixShell.Join(ServerArguments);

    /// <summary>The URI a client uses when it reaches this host by <paramref name="address"/> (for exports on 0.0.0.0 or ::).</summary>
    public string UriFor(string address) => NbdUri.Build(address, Port, Name);

    public override string ToString() => $"{Name} ({Uri}, {State})";
}

/// <summary>Names of NBD metadata contexts.</summary>
public static class NbdContexts
{
    public const string BaseAllocation = "base:allocation";

    public const string DirtyBitmapPrefix = "qemu:dirty-bitmap:";

    /// <summary>The context qemu-nbd -B NAME offers: <c>qemu:dirty-bitmap:NAME</c>.</summary>
    public static string DirtyBitmap(string bitmap)
    {
        ArgumentException.ThrowIfNullOrEmpty(bitmap);
        return bitmap.StartsWith(DirtyBitmapPrefix, StringComparison.Ordinal) ? bitmap : DirtyBitmapPrefix + bitmap;
    }
}

/// <summary>Builds NBD URIs (<c>nbd://host:port/export</c>), bracketing IPv6 literals.</summary>
public static class NbdUri
{
    public static string Build(string address, int port, string exportName)
    {
        ArgumentException.ThrowIfNullOrEmpty(address);
        var host = address.Contains(':', StringComparison.Ordinal) && !address.StartsWith('[') ? $"[{address}]" : address;
        return $"nbd://{host}:{port.ToString(System.Globalization.CultureInfo.InvariantCulture)}/{System.Uri.EscapeDataString(exportName)}";
    }
}
