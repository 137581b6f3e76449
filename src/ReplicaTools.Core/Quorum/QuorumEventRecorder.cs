using System.Globalization;
using System.Text.Json;
using ReplicaTools.Core.Clone;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Quorum;

/// <summary>
/// Keeps a VM's QUORUM_REPORT_BAD and QUORUM_FAILURE events in a file on the VM host, so that they outlive the cmdlet that
/// attached the disk. QEMU keeps no event history: it sends events to the QMP clients connected at that moment and
/// replays nothing to a client that connects later. The recorder is a small detached python3 process on the VM host
/// (one per VM), started by New-QuorumDisk, that stays connected and appends each quorum event as a JSON line:
/// <list type="bullet">
/// <item>bare QEMU: it needs a QMP monitor of its own, because QEMU serves one client per monitor and QMP cannot add a
/// monitor at runtime (chardev-add can add the socket, but there is no command to put a monitor on it): the VM must be
/// started with a second <c>-qmp unix:PATH,server=on,wait=off</c>, given to New-QuorumDisk as -EventQmpSocket.</item>
/// <item>libvirt: <c>virsh qemu-monitor-event --loop</c> (libvirt fans QEMU's events out to any number of listeners).</item>
/// </list>
/// It ends when QEMU closes the monitor (bare QEMU) or the domain stops running (checked every 10 s). The file is
/// <c>STATE/&lt;vm key&gt;.quorum-events</c>, its pid file next to it; STATE is <c>$REPLICATOOLS_QUORUM_STATE_DIR</c> or
/// <c>~/.local/state/replicatools/quorum</c> on the local machine, <c>.local/state/replicatools/quorum</c> under the login
/// directory on a remote host.
/// </summary>
public static class QuorumEventRecorder
{
    public const string StateDirectoryVariable = "REPLICATOOLS_QUORUM_STATE_DIR";
    public const string DefaultRelativeStateDirectory = ".local/state/replicatools/quorum";

    /// <summary>The word in the recorder's command line by which it is recognised.</summary>
    public const string Marker = "rt-quorum-recorder";

    /// <summary>Events read back from the file: the most recent this many lines.</summary>
    public const int MaxEvents = 5000;

    private static readonly string Python = "/usr/bin/python3";

    public const string Source = """
import json, os, re, socket, subprocess, sys, time

mode = sys.argv[2]
events, pidfile = sys.argv[-2], sys.argv[-1]
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)   # let the command that started it end: nothing keeps its pipes open


def record(name, data, seconds, micros):
    line = json.dumps({"event": name, "data": data, "timestamp": {"seconds": seconds, "microseconds": micros}})
    with open(events, "a") as out:
        out.write(line + "\n")


def ready():
    with open(pidfile + ".tmp", "w") as out:
        out.write("%d\n" % os.getpid())
    os.rename(pidfile + ".tmp", pidfile)


def qmp(path):
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(path)
    stream = connection.makefile("rwb")
    stream.readline()
    stream.write(b'{"execute": "qmp_capabilities"}\n')
    stream.flush()
    stream.readline()
    ready()
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        name = message.get("event", "")
        if name.startswith("QUORUM_"):
            stamp = message.get("timestamp", {})
            record(name, message.get("data"), stamp.get("seconds", 0), stamp.get("microseconds", 0))


def libvirt(uri, domain):
    pattern = re.compile(r"^event (\S+) at (\d+)\.(\d+) for domain .*?: (.*)$")
    listener = subprocess.Popen(["virsh", "-q", "-c", uri, "qemu-monitor-event", "--domain", domain, "--regex", "--event", "^QUORUM_", "--loop"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    os.set_blocking(listener.stdout.fileno(), False)
    ready()
    pending, checked = "", time.monotonic()
    import select
    while listener.poll() is None:
        readable, _, _ = select.select([listener.stdout], [], [], 10)
        if readable:
            chunk = listener.stdout.read()
            if chunk:
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    match = pattern.match(line.strip())
                    if match:
                        try:
                            data = json.loads(match.group(4))
                        except ValueError:
                            data = None
                        record(match.group(1), data, int(match.group(2)), int(match.group(3)))
        if time.monotonic() - checked >= 10:
            checked = time.monotonic()
            state = subprocess.run(["virsh", "-q", "-c", uri, "domstate", "--", domain], capture_output=True, text=True)
            if state.returncode != 0 or state.stdout.strip() not in ("running", "paused", "pmsuspended", "in shutdown"):
                listener.kill()
                break


try:
    if mode == "qmp":
        qmp(sys.argv[3])
    else:
        libvirt(sys.argv[3], sys.argv[4])
finally:
    try:
        with open(pidfile) as current:
            if current.read().strip() == str(os.getpid()):
                os.unlink(pidfile)
    except OSError:
        pass
""";

    /// <summary>The state directory on the VM host (absolute; resolves the login directory of a remote host).</summary>
    public static async Task<string> StateDirectoryAsync(IReplicaHost host, CancellationToken cancellationToken)
    {
        if (host.IsLocal)
        {
            var configured = Environment.GetEnvironmentVariable(StateDirectoryVariable);
            return !string.IsNullOrEmpty(configured)
                ? Path.GetFullPath(configured)
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), DefaultRelativeStateDirectory);
        }

        var home = (await host.RunAsync(new CommandSpec("pwd", "-P") { Timeout = TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false)).StandardOutput.TrimEnd('\n');
        if (!home.StartsWith('/'))
        {
            throw new QuorumException(QuorumErrorIds.AttachFailed, ReplicaErrorCategory.InvalidResult,
                $"On host '{host.Name}', the login directory could not be determined ('pwd -P' printed '{home}'), so the quorum event file cannot be placed.", host.Name);
        }

        return home.TrimEnd('/') + "/" + DefaultRelativeStateDirectory;
    }

    /// <summary>The event file of <paramref name="vm"/> in <paramref name="stateDirectory"/>.</summary>
    public static string EventFile(string stateDirectory, VirtualMachine vm) => $"{stateDirectory.TrimEnd('/')}/{CloneNames.Hash(vm.Target.Identity)}.quorum-events";

    /// <summary>The command that starts the recorder (detached: setsid -f; it writes its pid file once listening).</summary>
    /// <param name="eventSocket">For a bare QEMU: the QMP socket the recorder keeps (not the one the module's cmdlets use).</param>
    public static CommandSpec StartCommand(VirtualMachine vm, string eventFile, string? eventSocket)
    {
        var arguments = new List<string> { "setsid", "-f", Python, "-c", Source, Marker };
        if (vm is LibvirtVirtualMachine libvirt)
        {
            arguments.AddRange(new[] { "libvirt", libvirt.ConnectionUri, libvirt.DomainName });
        }
        else
        {
            arguments.AddRange(new[] { "qmp", eventSocket ?? throw new ArgumentNullException(nameof(eventSocket)) });
        }

        arguments.Add(eventFile);
        arguments.Add(eventFile + ".pid");
        return new CommandSpec(arguments) { Timeout = TimeSpan.FromSeconds(30) };
    }

    /// <summary>The plan step that starts the recorder, shown without the script's text.</summary>
    public static PlannedCommand PlanStart(VirtualMachine vm, string eventFile, string? eventSocket)
    {
        var shown = StartCommand(vm, eventFile, eventSocket).Arguments.Select(a => a == Source ? "RECORDER-SCRIPT" : a).ToArray();
        return new PlannedCommand(vm.Host.Name, new CommandSpec(shown), "start the quorum event recorder (python3, detached) that appends events to " + eventFile);
    }

    /// <summary>True when a recorder writes <paramref name="eventFile"/> (its pid file names a live process with the marker and the file).</summary>
    public static async Task<bool> IsRunningAsync(IReplicaHost host, string eventFile, CancellationToken cancellationToken)
    {
        var check = new CommandSpec("sh", "-c", "read pid < \"$1\" && tr '\\0' '\\n' < \"/proc/$pid/cmdline\"", "sh", eventFile + ".pid")
        {
            ThrowOnFailure = false,
            Timeout = TimeSpan.FromSeconds(30),
        };
        var result = await host.RunAsync(check, cancellationToken).ConfigureAwait(false);
        var words = result.StandardOutput.Split('\n');
        return result.Succeeded && words.Contains(Marker) && words.Contains(eventFile);
    }

    /// <summary>
    /// Starts the recorder unless one already runs for this file, and waits (up to 10 s) until it listens.
    /// </summary>
    /// <exception cref="QuorumException">QuorumToolMissing (no /usr/bin/python3) or AttachFailed (it did not start).</exception>
    public static async Task EnsureRunningAsync(VirtualMachine vm, string eventFile, string? eventSocket, CancellationToken cancellationToken)
    {
        var host = vm.Host;
        if (await IsRunningAsync(host, eventFile, cancellationToken).ConfigureAwait(false))
        {
            OperationContext.Reporter.Verbose($"[{host.Name}] The quorum event recorder for {vm.DisplayName} already runs ({eventFile}).");
            return;
        }

        var directory = eventFile[..eventFile.LastIndexOf('/')];
        await host.RunAsync(new CommandSpec("mkdir", "-p", "-m", "0700", "--", directory) { Timeout = TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false);
        OperationContext.Reporter.Verbose(PlanStart(vm, eventFile, eventSocket).ToString());
        var started = await host.RunAsync(new CommandSpec(StartCommand(vm, eventFile, eventSocket).Arguments) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false);
        if (started.ExitCode == 127 || started.StandardError.Contains("No such file", StringComparison.Ordinal))
        {
            throw new QuorumException(QuorumErrorIds.ToolMissing, ReplicaErrorCategory.NotInstalled,
                $"On host '{host.Name}', the quorum event recorder needs {Python} and setsid (util-linux): {started.StandardError.Trim()}", host.Name, Python);
        }

        for (var i = 0; i < 50; i++)
        {
            if (await IsRunningAsync(host, eventFile, cancellationToken).ConfigureAwait(false))
            {
                return;
            }

            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }

        throw new QuorumException(QuorumErrorIds.AttachFailed, ReplicaErrorCategory.InvalidResult,
            $"On host '{host.Name}', the quorum event recorder for {vm.DisplayName} did not start listening within 10 s" +
            (vm is LibvirtVirtualMachine ? "." : $" on '{eventSocket}' (is it a second QMP socket of this QEMU, and free?)."), host.Name, eventFile);
    }

    /// <summary>The recorded events (the last <see cref="MaxEvents"/>); an absent file means none.</summary>
    public static async Task<IReadOnlyList<QuorumEvent>> ReadAsync(IReplicaHost host, string eventFile, CancellationToken cancellationToken)
    {
        var result = await host.RunAsync(new CommandSpec("tail", "-n", MaxEvents.ToString(CultureInfo.InvariantCulture), "--", eventFile)
        {
            ThrowOnFailure = false,
            Timeout = TimeSpan.FromSeconds(30),
        }, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            return Array.Empty<QuorumEvent>();
        }

        return result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(ParseLine).OfType<QuorumEvent>().ToArray();
    }

    /// <summary>One line of the event file (the QMP event's name, data and timestamp); null for a line that is not one.</summary>
    public static QuorumEvent? ParseLine(string line)
    {
        try
        {
            var root = JsonDocument.Parse(line).RootElement;
            var stamp = root.GetProperty("timestamp");
            return FromQmp(root.GetProperty("event").GetString() ?? string.Empty, root.GetProperty("data"),
                DateTimeOffset.FromUnixTimeSeconds(stamp.GetProperty("seconds").GetInt64()).AddTicks(stamp.GetProperty("microseconds").GetInt64() * 10), "recorder");
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }

    /// <summary>A QMP quorum event as a <see cref="QuorumEvent"/> (sectors of 512 bytes turned into bytes); null for other events.</summary>
    public static QuorumEvent? FromQmp(string name, JsonElement data, DateTimeOffset timestamp, string source)
    {
        if (name is not (QuorumEvent.ReportBad or QuorumEvent.Failure) || data.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        var node = name == QuorumEvent.ReportBad ? data.GetProperty("node-name").GetString() : data.GetProperty("reference").GetString();
        return new QuorumEvent
        {
            Timestamp = timestamp,
            Name = name,
            NodeName = node ?? string.Empty,
            Type = data.TryGetProperty("type", out var type) ? type.GetString() : null,
            Error = data.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.String ? error.GetString() : null,
            Offset = data.GetProperty("sector-num").GetInt64() * 512,
            Length = data.GetProperty("sectors-count").GetInt64() * 512,
            Source = source,
        };
    }
}
