using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Drbd;

/// <summary>
/// The drbd-utils command lines ReplicaTools runs, as argument lists. drbdadm always gets the resource's own file
/// (<c>-c FILE</c>), so nothing depends on what else /etc/drbd.conf includes.
/// </summary>
public static partial class DrbdCommands
{
    internal static readonly TimeSpan QuickTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The drbdadm sub-commands that need the kernel module.</summary>
    private static readonly HashSet<string> KernelVerbs = new(StringComparer.Ordinal) { "up", "down", "primary", "secondary" };

    /// <summary><c>drbdadm -c FILE VERB [ARGS] RESOURCE</c>.</summary>
    public static CommandSpec Drbdadm(string configFile, string verb, string resource, params string[] arguments) =>
        new(new[] { "drbdadm", "-c", configFile, verb }.Concat(arguments).Append(resource)) { Timeout = QuickTimeout };

    /// <summary><c>drbdadm -c - VERB RESOURCE</c> reading the configuration from standard input: validates a file before it is written.</summary>
    public static CommandSpec DrbdadmFromInput(string configText, string verb, string resource, bool dryRun = false) =>
        new(new[] { "drbdadm", "-c", "-" }.Concat(dryRun ? new[] { "-d" } : Array.Empty<string>()).Concat(new[] { verb, resource }))
        {
            Timeout = QuickTimeout,
            StandardInput = Encoding.UTF8.GetBytes(configText),
            ThrowOnFailure = false,
        };

    /// <summary>drbdmeta's dump of the internal metadata on <paramref name="disk"/> (minor "-": no kernel involved). Exit 1: none found.</summary>
    public static CommandSpec DumpMetadata(string disk) =>
        new("drbdmeta", "-", "v09", disk, "internal", "dump-md") { Timeout = QuickTimeout, ThrowOnFailure = false };

    /// <summary>True for the steps <see cref="IDrbdKernel.RunAsync"/> runs: drbdadm up, down, primary, secondary.</summary>
    public static bool IsKernelStep(CommandSpec command) =>
        command.Arguments.Count >= 5 && command.Arguments[0] == "drbdadm" && command.Arguments[1] == "-c" && KernelVerbs.Contains(command.Arguments[3]);

    /// <summary>The resource a kernel step acts on and its verb (and whether it forces).</summary>
    public static (string Verb, string Resource, bool Force) DescribeKernelStep(CommandSpec command) =>
        (command.Arguments[3], command.Arguments[^1], command.Arguments.Contains("--force"));

    /// <summary>
    /// Replaces the shared secret wherever drbd-utils print it (drbdsetup's --shared-secret=, the configuration's
    /// shared-secret statement), so tool output can go into errors and plans.
    /// </summary>
    public static string Scrub(string text) =>
        SharedSecretArgument().Replace(SharedSecretStatement().Replace(text, "shared-secret \"" + PlannedCommand.Redacted + "\";"), "--shared-secret=" + PlannedCommand.Redacted);

    /// <summary>Reads the dry-run output of drbdadm -d: the commands it would run, one a line (warnings left out).</summary>
    public static IReadOnlyList<string> DryRunLines(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(line => line.StartsWith("drbdsetup ", StringComparison.Ordinal) || line.StartsWith("drbdmeta ", StringComparison.Ordinal))
            .Select(Scrub)
            .ToArray();

    /// <summary>
    /// $1 disk. Prints "node NAME" (uname -n), "disk block|file|missing|other" and, for a block device, "size BYTES".
    /// </summary>
    internal const string ProbeHostScript =
        "printf 'node %s\\n' \"$(uname -n)\"; d=$1; " +
        "if [ -b \"$d\" ]; then echo 'disk block'; printf 'size %s\\n' \"$(blockdev --getsize64 \"$d\")\"; " +
        "elif [ -f \"$d\" ]; then echo 'disk file'; elif [ -e \"$d\" ]; then echo 'disk other'; else echo 'disk missing'; fi";

    /// <summary>
    /// $1 configuration directory, $2 this resource. For every other resource the directory's *.res files define for
    /// this host, prints RS NAME LF and drbdadm's normalised dump of it (device, disk and address of each node); their
    /// shared secrets never leave the host.
    /// </summary>
    internal const string OtherResourcesScript =
        "inc=\"include \\\"$1/*.res\\\";\"; ls -- \"$1\"/*.res >/dev/null 2>&1 || exit 0; " +
        "for r in $(printf '%s\\n' \"$inc\" | drbdadm -c - sh-resources 2>/dev/null); do [ \"$r\" = \"$2\" ] && continue; " +
        "printf '\\036%s\\n' \"$r\"; printf '%s\\n' \"$inc\" | drbdadm -c - dump \"$r\" 2>/dev/null | grep -v shared-secret; done";

    /// <summary>
    /// Reads one resource's <c>drbdadm dump</c> output: the device minor, backing disk and address of the node
    /// <paramref name="nodeName"/>; null when the resource has no section for it.
    /// </summary>
    public static (int? Minor, string? Disk, string? Address, int? Port)? ParseDumpForNode(string dump, string nodeName)
    {
        var start = dump.IndexOf($"on {nodeName} {{", StringComparison.Ordinal);
        if (start < 0)
        {
            return null;
        }

        var end = dump.IndexOf('}', start);
        var section = end < 0 ? dump[start..] : dump[start..end];
        var device = DumpDevice().Match(section);
        var disk = DumpDisk().Match(section);
        var address = DumpAddress().Match(section);
        return (
            device.Success ? int.Parse(device.Groups["minor"].Value, CultureInfo.InvariantCulture) : null,
            disk.Success ? disk.Groups["disk"].Value.Trim('"') : null,
            address.Success ? address.Groups["address"].Value.Trim('[', ']') : null,
            address.Success ? int.Parse(address.Groups["port"].Value, CultureInfo.InvariantCulture) : null);
    }

    [GeneratedRegex("--shared-secret=\\S+", RegexOptions.CultureInvariant)]
    private static partial Regex SharedSecretArgument();

    [GeneratedRegex("shared-secret\\s+(\"[^\"\\n]*\"|[^;\\s]+)\\s*;", RegexOptions.CultureInvariant)]
    private static partial Regex SharedSecretStatement();

    [GeneratedRegex(@"device\s+\S+\s+minor\s+(?<minor>\d+);", RegexOptions.CultureInvariant)]
    private static partial Regex DumpDevice();

    [GeneratedRegex(@"\bdisk\s+(?<disk>[^;\s]+);", RegexOptions.CultureInvariant)]
    private static partial Regex DumpDisk();

    [GeneratedRegex(@"address\s+ipv[46]\s+(?<address>\[[^\]]+\]|[^:\s]+):(?<port>\d+);", RegexOptions.CultureInvariant)]
    private static partial Regex DumpAddress();
}

/// <summary>The errors of the replicated-disk operations: one ErrorId each, the host and what to do.</summary>
internal static class DrbdErrors
{
    public static ReplicaException Invalid(string? hostName, object? target, string message) =>
        new("DrbdInvalidArgument", ReplicaErrorCategory.InvalidArgument, message, hostName, target);

    public static ReplicaException UtilsMissing(string hostName, string detail) =>
        new("ProgramNotFound", ReplicaErrorCategory.NotInstalled, $"On host '{hostName}', drbd-utils is not installed ({detail.Trim()}). Install the package 'drbd-utils' on that host.", hostName, "drbd-utils")
        {
            RecommendedAction = $"Install drbd-utils on '{hostName}' (Debian/Ubuntu: apt-get install drbd-utils).",
        };

    public static ReplicaException ModuleMissing(string hostName, string? detail) =>
        new("DrbdKernelModuleMissing", ReplicaErrorCategory.NotInstalled,
            $"On host '{hostName}', the DRBD kernel module is not available ({detail?.Trim()}). Nothing was changed on either host.", hostName, "drbd")
        {
            RecommendedAction = $"Load it on '{hostName}' (modprobe drbd; on Ubuntu install linux-modules-extra-$(uname -r) first), then run the command again.",
        };

    public static ReplicaException KernelStepFailed(string hostName, PlannedCommand step, string stderr) =>
        new("DrbdCommandFailed", ReplicaErrorCategory.InvalidResult,
            $"On host '{hostName}', '{step.Command.CommandLine}' ({step.Purpose}) failed: {DrbdCommands.Scrub(CommandFailedException.StderrTail(stderr))}", hostName, step.Command.CommandLine);

    public static ReplicaException CommandFailed(CommandResult result, string purpose) =>
        new("DrbdCommandFailed", ReplicaErrorCategory.InvalidResult,
            $"On host '{result.HostName}', '{result.CommandLine}' ({purpose}) failed with exit code {result.ExitCode}: {DrbdCommands.Scrub(CommandFailedException.StderrTail(result.StandardError + result.StandardOutput))}",
            result.HostName, result.CommandLine);
}
