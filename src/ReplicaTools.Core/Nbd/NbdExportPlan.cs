using System.Globalization;
using System.Text;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Nbd;

/// <summary>
/// How an export will be started on a host: resolved path, format and port, and the exact commands, as data.
/// <see cref="Describe"/> is what -WhatIf prints; <see cref="NbdExportManager.StartAsync"/> runs it.
/// </summary>
public sealed class NbdExportPlan
{
    private NbdExportPlan(string hostName, NbdExportRequest request, string stateDirectory, string path, string format, int port, bool portIsAutomatic, string? uriHost)
    {
        HostName = hostName;
        Request = request;
        StateDirectory = stateDirectory;
        Path = path;
        Format = format;
        Port = port;
        PortIsAutomatic = portIsAutomatic;
        UriHost = uriHost;
        StateFile = $"{stateDirectory}/{request.Name}.json";
        PidFile = $"{stateDirectory}/{request.Name}.pid";
        ConfigFile = request.Server == NbdServerKind.NbdServer ? $"{stateDirectory}/{request.Name}.conf" : null;
        ConfigText = ConfigFile is null ? null : NbdServerConfig.Build(request.Name, path, request.ReadOnly, request.ListenAddress, port);
        ServerArguments = BuildServerArguments();
        Uri = NbdUri.Build(uriHost ?? request.ListenAddress, port, request.Name);

        var commands = new List<PlannedCommand>
        {
            new(hostName, new CommandSpec("mkdir", "-p", "-m", "0700", "--", stateDirectory) { Timeout = NbdExportManager.QuickTimeout }, "create the state directory"),
            new(hostName, new CommandSpec("sh", "-c", NbdHostScripts.CreateExclusive, "sh", StateFile) { Timeout = NbdExportManager.QuickTimeout, ThrowOnFailure = false }, "claim the export name (state record on standard input)"),
            new(hostName, new CommandSpec("rm", "-f", "--", PidFile) { Timeout = NbdExportManager.QuickTimeout }, "remove a pid file left by an earlier attempt"),
        };
        if (ConfigFile is not null)
        {
            commands.Add(new(hostName, HostFiles.WriteAtomically(ConfigFile, Encoding.UTF8.GetBytes(ConfigText!), timeout: NbdExportManager.QuickTimeout),
                "write the nbd-server configuration (on standard input)"));
        }

        commands.Add(new(hostName, new CommandSpec(ServerArguments) { Timeout = NbdExportManager.QuickTimeout, ThrowOnFailure = false }, "start the server"));
        commands.Add(new(hostName, HostFiles.WriteAtomically(StateFile, timeout: NbdExportManager.QuickTimeout), "record the running export (state record on standard input)"));
        Commands = commands;
    }

    public NbdExportRequest Request { get; }

    public string HostName { get; }

    public string StateDirectory { get; }

    /// <summary>The exported path, absolute with symbolic links resolved on the host.</summary>
    public string Path { get; }

    /// <summary>The format the server opens the path with (raw unless -Format says otherwise).</summary>
    public string Format { get; }

    public int Port { get; }

    /// <summary>True when the port was picked here; starting then retries with another free port if it is taken meanwhile.</summary>
    public bool PortIsAutomatic { get; }

    public string Uri { get; }

    public string StateFile { get; }

    public string PidFile { get; }

    public string? ConfigFile { get; }

    public string? ConfigText { get; }

    public IReadOnlyList<string> ServerArguments { get; }

    /// <summary>The state-changing commands, in order (read-only checks in between are not listed).</summary>
    public IReadOnlyList<PlannedCommand> Commands { get; }

    internal string? UriHost { get; }

    internal PlannedCommand MakeDirectory => Commands[0];

    internal PlannedCommand Claim => Commands[1];

    internal PlannedCommand RemovePidFile => Commands[2];

    internal PlannedCommand? WriteConfig => ConfigFile is null ? null : Commands[3];

    internal PlannedCommand StartServer => Commands[^2];

    internal PlannedCommand WriteRecord => Commands[^1];

    /// <summary>The plan as -WhatIf shows it: one <c>[host] command line</c> per step, and where the port came from.</summary>
    public string Describe()
    {
        var text = PlannedCommand.Describe(Commands);
        return PortIsAutomatic
            ? text + Environment.NewLine + $"(port {Port.ToString(CultureInfo.InvariantCulture)} was free on '{HostName}' just now; if it is taken before the server binds it, another free port is used)"
            : text;
    }

    public override string ToString() => Describe();

    internal static NbdExportPlan Create(string hostName, NbdExportRequest request, string stateDirectory, string path, string format, int port, bool portIsAutomatic, string? uriHost) =>
        new(hostName, request, stateDirectory, path, format, port, portIsAutomatic, uriHost);

    internal NbdExportPlan WithPort(int port) => new(HostName, Request, StateDirectory, Path, Format, port, PortIsAutomatic, UriHost);

    internal string ServerProgram => Request.Server == NbdServerKind.NbdServer ? "nbd-server" : "qemu-nbd";

    private IReadOnlyList<string> BuildServerArguments()
    {
        if (Request.Server == NbdServerKind.NbdServer)
        {
            return new[] { "nbd-server", "-C", ConfigFile!, "-p", PidFile };
        }

        var arguments = new List<string>
        {
            "qemu-nbd", "--fork", "--persistent", $"--shared={(Request.MaxConnections ?? NbdExportRequest.DefaultMaxConnections).ToString(CultureInfo.InvariantCulture)}", "--pid-file", PidFile,
            "-b", Request.ListenAddress, "-p", Port.ToString(CultureInfo.InvariantCulture), "-x", Request.Name,
        };
        if (Request.ReadOnly)
        {
            arguments.Add("-r");
        }

        arguments.AddRange(new[] { "-f", Format });
        if (Request.Bitmap is not null)
        {
            arguments.AddRange(new[] { "-B", Request.Bitmap });
        }

        arguments.Add(Path);
        return arguments;
    }
}
