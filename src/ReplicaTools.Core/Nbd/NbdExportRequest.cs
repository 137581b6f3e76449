using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace ReplicaTools.Core.Nbd;

/// <summary>What to export and how: the input of <see cref="NbdExportManager.PlanAsync"/>.</summary>
public sealed partial class NbdExportRequest
{
    public const int DefaultMaxConnections = 8;

    /// <summary>Export name: also names the state, configuration and pid files on the host.</summary>
    public required string Name { get; init; }

    /// <summary>Absolute path of the file (or, with <see cref="IsDevice"/>, the block device) on the host.</summary>
    public required string Path { get; init; }

    /// <summary>True to export a block device (the path must be one); false for a regular file.</summary>
    public bool IsDevice { get; init; }

    public bool ReadOnly { get; init; }

    /// <summary>IP address the server listens on; 0.0.0.0 or :: for every address.</summary>
    public string ListenAddress { get; init; } = "127.0.0.1";

    /// <summary>TCP port, or 0 to pick a free one on the host (and try another if it is taken in the meantime).</summary>
    public int Port { get; init; }

    public NbdServerKind Server { get; init; } = NbdServerKind.QemuNbd;

    /// <summary>Image format (qemu-nbd -f). Null means raw, after checking the file does not look like another format.</summary>
    public string? Format { get; init; }

    /// <summary>A persistent dirty bitmap of a qcow2 image to offer as <c>qemu:dirty-bitmap:NAME</c> (qemu-nbd -B).</summary>
    public string? Bitmap { get; init; }

    /// <summary>
    /// How many clients may be connected at once: qemu-nbd --shared (null: <see cref="DefaultMaxConnections"/>; nbdcopy
    /// opens up to 4). Only for qemu-nbd: nbd-server 3.24's <c>maxconnections</c> counts every connection since the
    /// server started, not the open ones, so an export capped at N refuses every client after its N-th in total
    /// (seen with nbd-server 3.24 here); nbd-server exports are therefore left uncapped.
    /// </summary>
    public int? MaxConnections { get; init; }

    /// <summary>A usable export name derived from a path: its file name without extension, other characters replaced by '-'.</summary>
    public static string DefaultNameFor(string path)
    {
        var trimmed = path.TrimEnd('/');
        var fileName = trimmed[(trimmed.LastIndexOf('/') + 1)..];
        var dot = fileName.LastIndexOf('.');
        if (dot > 0)
        {
            fileName = fileName[..dot];
        }

        var builder = new StringBuilder();
        foreach (var c in fileName)
        {
            builder.Append(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' ? c : '-');
        }

        var name = builder.ToString().TrimStart('.', '-', '_');
        if (name.Length > 64)
        {
            name = name[..64];
        }

        return name.Length == 0 ? "export" : name;
    }

    /// <summary>Checks everything that can be checked without the host; throws <see cref="ReplicaException"/> naming the parameter.</summary>
    public void Validate(string hostName)
    {
        if (!NamePattern().IsMatch(Name ?? string.Empty))
        {
            throw Invalid(hostName, Name, $"The export name '{Name}' is not usable: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (it also names files on the host).");
        }

        if (string.IsNullOrEmpty(Path) || !Path.StartsWith('/') || Path.Contains('\0') || Path.Contains('\n'))
        {
            throw Invalid(hostName, Path, $"The path '{Path}' is not an absolute path on host '{hostName}'. Give the full path of the {(IsDevice ? "block device" : "file")} (it must not contain newlines).");
        }

        if (!IPAddress.TryParse(ListenAddress, out _))
        {
            throw Invalid(hostName, ListenAddress, $"-ListenAddress '{ListenAddress}' is not an IP address. Use e.g. 127.0.0.1 (this host only), the host's own address, or 0.0.0.0 (every address).");
        }

        if (Port is < 0 or > 65535)
        {
            throw Invalid(hostName, Port, $"-Port {Port} is out of range: give 1-65535, or 0 to pick a free port.");
        }

        if (MaxConnections is < 1 or > 1024)
        {
            throw Invalid(hostName, MaxConnections, $"MaxConnections {MaxConnections} is out of range (1-1024).");
        }

        if (MaxConnections is not null && Server == NbdServerKind.NbdServer)
        {
            throw Invalid(hostName, MaxConnections,
                "-MaxConnections works only with qemu-nbd: nbd-server counts every connection since it started (its 'maxconnections'), so the export would refuse all clients after that many in total. Leave it out (nbd-server exports are not capped), or use -Server QemuNbd.");
        }

        if (Format is not null && !FormatPattern().IsMatch(Format))
        {
            throw Invalid(hostName, Format, $"-Format '{Format}' is not an image format name (e.g. raw, qcow2, vdi, vmdk).");
        }

        if (Bitmap is not null && (Bitmap.Length is 0 or > 1023 || Bitmap.Any(char.IsControl)))
        {
            throw Invalid(hostName, Bitmap, $"-Bitmap '{Bitmap}' is not a usable bitmap name (1-1023 printable characters).");
        }

        if (Server == NbdServerKind.NbdServer)
        {
            if (Format is not null && Format != "raw")
            {
                throw Invalid(hostName, Format, $"nbd-server exports the raw bytes of a file; it cannot open a '{Format}' image. Use -Server QemuNbd for -Format {Format}.");
            }

            if (Bitmap is not null)
            {
                throw Invalid(hostName, Bitmap, "nbd-server cannot export a dirty bitmap. Use -Server QemuNbd with -Bitmap (and -Format qcow2).");
            }
        }
    }

    private static ReplicaException Invalid(string hostName, object? target, string message) =>
        new("NbdExportInvalidArgument", ReplicaErrorCategory.InvalidArgument, message, hostName, target);

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[a-z0-9][a-z0-9_-]{0,31}$")]
    private static partial Regex FormatPattern();
}
