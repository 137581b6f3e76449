using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Storage;

/// <summary>Timeouts of the storage operations.</summary>
public sealed class StorageOptions
{
    public static StorageOptions Default { get; } = new();

    /// <summary>
    /// How long a qemu-img/qemu-io call against an nfs:// URL may take before it is killed with SIGKILL
    /// (<c>timeout -s KILL</c>): a hung NFS server makes libnfs wait forever, and only SIGKILL ends it.
    /// </summary>
    public TimeSpan NfsTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Short commands (info, stat, chattr, btrfs subvolume ...).</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>Commands that read whole images (qemu-img compare).</summary>
    public TimeSpan LongCommandTimeout { get; init; } = TimeSpan.FromHours(6);
}

/// <summary>Builds and runs the storage tools' commands: kill-timeouts for nfs:// URLs, qemu-img error classification, progress.</summary>
internal static partial class StorageCommands
{
    [GeneratedRegex(@"\((?<p>\d+(?:\.\d+)?)/100%\)", RegexOptions.CultureInvariant)]
    private static partial Regex ProgressPattern();

    /// <summary>
    /// A command over images; when any of them is an nfs:// URL it runs under <c>timeout -s KILL</c> (a hung NFS server
    /// blocks libnfs forever, and nothing but SIGKILL ends it).
    /// </summary>
    public static CommandSpec ImageCommand(StorageOptions options, bool touchesNfs, TimeSpan timeout, params string[] arguments)
    {
        if (!touchesNfs)
        {
            return new CommandSpec(arguments) { Timeout = timeout, ThrowOnFailure = false };
        }

        var kill = timeout < options.NfsTimeout ? timeout : options.NfsTimeout;
        var seconds = Math.Max(1, (int)Math.Ceiling(kill.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        return new CommandSpec(new[] { "timeout", "-s", "KILL", seconds }.Concat(arguments))
        {
            Timeout = kill + TimeSpan.FromSeconds(15),
            ThrowOnFailure = false,
        };
    }

    public static bool IsKillTimeoutWrapped(CommandSpec spec) => spec.Arguments.Count > 4 && spec.Arguments[0] == "timeout" && spec.Arguments[1] == "-s";

    public static async Task<CommandResult> RunAsync(IReplicaHost host, CommandSpec spec, CancellationToken cancellationToken)
    {
        try
        {
            return await host.RunAsync(spec, cancellationToken).ConfigureAwait(false);
        }
        catch (ProgramNotFoundException ex) when (IsKillTimeoutWrapped(spec) && ex.Program == "timeout" && !ex.Message.Contains("'timeout'", StringComparison.Ordinal))
        {
            throw new ProgramNotFoundException(host.Name, spec.Arguments[4], ex.Message);
        }
        catch (ProgramNotFoundException ex) when (IsKillTimeoutWrapped(spec) && ex.Message.Contains(spec.Arguments[4], StringComparison.Ordinal))
        {
            throw new ProgramNotFoundException(host.Name, spec.Arguments[4], ex.Message);
        }
    }

    /// <summary>Runs a command that must succeed (plain tools: stat, chattr, btrfs ...), throwing CommandFailedException otherwise.</summary>
    public static async Task<CommandResult> RunCheckedAsync(IReplicaHost host, StorageOptions options, CancellationToken cancellationToken, params string[] arguments)
    {
        var result = await RunAsync(host, new CommandSpec(arguments) { Timeout = options.CommandTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            throw new CommandFailedException(result);
        }

        return result;
    }

    /// <summary>
    /// Runs a command that prints qemu-img's progress (-p: "(12.50/100%)" lines ended by CR) and reports it as
    /// progress; returns the result with the exit code (never throws for the exit code).
    /// </summary>
    public static async Task<CommandResult> RunWithProgressAsync(IReplicaHost host, CommandSpec spec, string activity, string status, CancellationToken cancellationToken)
    {
        var stopwatch = Stopwatch.StartNew();
        var lastReport = TimeSpan.MinValue;
        var withProgress = spec.WithOutputLines(line =>
        {
            var match = ProgressPattern().Match(line);
            if (match.Success && stopwatch.Elapsed - lastReport > TimeSpan.FromMilliseconds(250))
            {
                lastReport = stopwatch.Elapsed;
                var percent = double.Parse(match.Groups["p"].Value, CultureInfo.InvariantCulture);
                OperationContext.Reporter.Progress(new OperationProgress(activity, $"{status} ({percent:0.0} %)", (int)percent));
            }
        });
        try
        {
            return await RunAsync(host, withProgress, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            OperationContext.Reporter.Progress(new OperationProgress(activity, status, Completed: true));
        }
    }

    public static bool IsLockError(string stderr) =>
        stderr.Contains("lock", StringComparison.OrdinalIgnoreCase) && stderr.Contains("Is another process using the image", StringComparison.Ordinal)
        || stderr.Contains("Failed to get \"write\" lock", StringComparison.Ordinal)
        || stderr.Contains("Failed to get shared \"write\" lock", StringComparison.Ordinal);

    public static bool IsNotFound(string stderr) =>
        stderr.Contains("No such file or directory", StringComparison.Ordinal) || stderr.Contains("NFS3ERR_NOENT", StringComparison.Ordinal);

    public static bool IsNfsUnreachable(string stderr) =>
        stderr.Contains("Failed to mount nfs share", StringComparison.Ordinal)
        || stderr.Contains("nfs_service failed", StringComparison.Ordinal)
        || stderr.Contains("RPC error", StringComparison.Ordinal)
        || stderr.Contains("Failed to connect", StringComparison.Ordinal) && stderr.Contains("nfs", StringComparison.OrdinalIgnoreCase);

    /// <summary>Turns a failed qemu-img/qemu-io call on one image into an error that names host, image and what to do.</summary>
    public static ReplicaException ImageError(CommandResult result, ImageLocation image, string what)
    {
        var host = result.HostName;
        var detail = TrimQemuMessage(result.StandardError);
        if (result.ExitCode == 137 && result.Arguments.Count > 0 && result.Arguments[0] == "timeout")
        {
            return new ReplicaException(StorageErrorIds.NfsServerNotResponding, ReplicaErrorCategory.OperationTimeout,
                $"On host '{host}', {what} '{image.Text}' got no answer from NFS server '{image.NfsServer}' within {result.Arguments[3]} s; qemu-img was killed (a hung NFS server blocks libnfs forever).",
                host, image.Text)
            {
                RecommendedAction = $"Check that the NFS server '{image.NfsServer}' is up and answering (ganesha or nfsd running, not frozen), and that '{host}' reaches it.",
            };
        }

        if (image.IsNfsUrl && IsNfsUnreachable(result.StandardError))
        {
            return new ReplicaException(StorageErrorIds.NfsServerUnreachable, ReplicaErrorCategory.ConnectionError,
                $"On host '{host}', {what} '{image.Text}' failed: NFS server '{image.NfsServer}' cannot be mounted ({detail}).", host, image.Text)
            {
                RecommendedAction = $"Check that the NFS server on '{image.NfsServer}' runs and exports '{image.NfsDirectory}' over NFSv3 (rpcbind, mountd, nfsd reachable from '{host}').",
            };
        }

        if (IsNotFound(result.StandardError))
        {
            return new ReplicaException(StorageErrorIds.ImageNotFound, ReplicaErrorCategory.ObjectNotFound,
                $"On host '{host}', the image '{image.Text}' does not exist ({detail}).", host, image.Text)
            {
                RecommendedAction = "Check the path (and for nfs:// URLs the export path) and the host.",
            };
        }

        if (IsLockError(result.StandardError))
        {
            return new ReplicaException(StorageErrorIds.ImageInUse, ReplicaErrorCategory.ResourceUnavailable,
                $"On host '{host}', the image '{image.Text}' is in use: a running QEMU holds its lock ({detail}).", host, image.Text)
            {
                RecommendedAction = "Stop or detach the VM that uses the image first.",
            };
        }

        return new ReplicaException(StorageErrorIds.ImageOpenFailed, ReplicaErrorCategory.InvalidResult,
            $"On host '{host}', {what} '{image.Text}' failed with exit code {result.ExitCode}: {(detail.Length > 0 ? detail : "(no message)")}", host, image.Text);
    }

    /// <summary>qemu-img prints "qemu-img: Could not open 'x': Could not open 'x': reason"; keep it on one line.</summary>
    public static string TrimQemuMessage(string stderr)
    {
        var text = string.Join(' ', stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return text.Length <= 1500 ? text : text[..1500] + "...";
    }
}
