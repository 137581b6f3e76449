using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Operations;

/// <summary>
/// One step of a command plan: what runs on which host, and why. The module's only plan type: -WhatIf prints it,
/// the operation executes it, tests assert on it. A step is either an argument list (<see cref="Command"/>) or a QMP
/// command to a VM's monitor socket (<see cref="Qmp"/>; <see cref="ForQmp"/>).
/// </summary>
/// <param name="HostName">The host the step runs on, as messages name it (<see cref="IReplicaHost.Name"/>).</param>
/// <param name="Command">
/// The argument list run on the host. For a QMP step: the <c>socat</c> bridge that carries the command to the
/// socket (what an operator would run by hand); the module itself talks QMP through <see cref="Qemu.QmpClient"/>.
/// </param>
/// <param name="Purpose">Why the step runs, in a few words (for verbose output and tests).</param>
public sealed record PlannedCommand(string HostName, CommandSpec Command, string Purpose)
{
    /// <summary>How secrets are shown in <see cref="ShownInput"/>.</summary>
    public const string Redacted = "********";

    /// <summary>The QMP command of a QMP step; null for an argument-list step.</summary>
    public QmpCommand? Qmp { get; init; }

    /// <summary>
    /// Standard input as the plan prints it, after <c>&lt;&lt;&lt;</c> (a domain XML, a file's content); null prints
    /// none. Set it with <see cref="ShowingInput"/>, which redacts secrets: it never holds one.
    /// </summary>
    public string? ShownInput { get; init; }

    /// <summary>The step without its host: the command line (and shown input), or <c>qmp SOCKET: {json}</c>.</summary>
    public string Text => Qmp is { } qmp
        ? $"qmp {qmp.SocketPath}: {qmp.Json}"
        : ShownInput is null ? Command.CommandLine : $"{Command.CommandLine} <<< {ShownInput}";

    /// <summary>A QMP step on <paramref name="hostName"/>.</summary>
    public static PlannedCommand ForQmp(string hostName, QmpCommand qmp, string purpose)
    {
        ArgumentNullException.ThrowIfNull(qmp);
        return new PlannedCommand(hostName, qmp.Bridge(), purpose) { Qmp = qmp };
    }

    /// <summary>
    /// This step with its standard input (UTF-8 text, e.g. a file it writes) shown in the plan, each of
    /// <paramref name="secrets"/> replaced by <see cref="Redacted"/>.
    /// </summary>
    public PlannedCommand ShowingInput(params string[] secrets)
    {
        var text = Encoding.UTF8.GetString(Command.StandardInput ?? Array.Empty<byte>());
        foreach (var secret in secrets.Where(s => !string.IsNullOrEmpty(s)))
        {
            text = text.Replace(secret, Redacted, StringComparison.Ordinal);
        }

        return this with { ShownInput = text };
    }

    /// <summary>The step as -WhatIf shows it: <c>[host] command line</c>.</summary>
    public override string ToString() => $"[{HostName}] {Text}";

    /// <summary>Every step on its own line, as -WhatIf and ShouldProcess show a plan.</summary>
    public static string Describe(IEnumerable<PlannedCommand> plan) => string.Join(Environment.NewLine, plan.Select(step => step.ToString()));
}

/// <summary>
/// A QMP command (QEMU Machine Protocol, docs/interop/qmp-spec) for a VM's monitor socket: <c>{"execute": NAME,
/// "arguments": {...}}</c>.
/// </summary>
/// <param name="SocketPath">The QMP socket on the VM host.</param>
/// <param name="Execute">The command name, e.g. drive-mirror.</param>
/// <param name="Arguments">Its arguments; null for none. Callers pass a copy (<see cref="CopyArguments"/>) to the client.</param>
public sealed record QmpCommand(string SocketPath, string Execute, JsonObject? Arguments = null)
{
    /// <summary>QMP commands as operators read them in -WhatIf and verbose output (no \u0022 escapes).</summary>
    public static readonly JsonSerializerOptions Display = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The command as one JSON line.</summary>
    public string Json
    {
        get
        {
            var command = new JsonObject { ["execute"] = Execute };
            if (Arguments is not null)
            {
                command["arguments"] = Arguments.DeepClone();
            }

            return command.ToJsonString(Display);
        }
    }

    /// <summary>A fresh copy of the arguments (a JsonObject can have one parent only).</summary>
    public JsonObject? CopyArguments() => (JsonObject?)Arguments?.DeepClone();

    /// <summary>The command as it can be sent by hand on the VM host: socat to the socket, capabilities negotiated first.</summary>
    internal CommandSpec Bridge() => new("socat", "-", $"UNIX-CONNECT:{SocketPath}")
    {
        StandardInput = Encoding.UTF8.GetBytes("{\"execute\":\"qmp_capabilities\"}\n" + Json + "\n"),
        Timeout = TimeSpan.FromMinutes(1),
    };
}
