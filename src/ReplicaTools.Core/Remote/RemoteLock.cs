using System.Text;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// An exclusive lock on a host, held for as long as this object lives and its run's children run. A POSIX sh holder on
/// the host takes flock(2) on the lock file, records who holds it in LOCK.owner and then waits for end-of-file on its
/// standard input: closing it (or this process dying, or the connection dropping) ends the hold. The lock is released
/// only once every child started under <see cref="ControllerGuard"/> with this lock path has ended too (they hold a
/// shared lock on LOCK.children), so no retry can start while a copier of a killed run still writes.
/// </summary>
/// <remarks>
/// A second taker finds the lock held and reads LOCK.owner: while the holding run lives it is refused at once
/// (<see cref="LockHeldException"/>, naming the run); while a run whose controller is gone is still ending its children
/// ("draining"), it waits for them, up to the drain timeout.
/// </remarks>
public sealed class RemoteLock : IAsyncDisposable
{
    /// <summary>The holder's exit code when the lock is held by someone else.</summary>
    private const int ConflictExitCode = 75;

    private const string HolderScript =
        "l=$1; owner=$2; wait=$3; " +
        "exec 9>>\"$l\" || exit 1; " +
        "if ! flock -n 9; then " +
        "  o=$(cat -- \"$l.owner\" 2>/dev/null); " +
        "  case $o in draining*) printf 'waiting %s\\n' \"$o\"; flock -w \"$wait\" 9 || { printf 'held %s\\n' \"$(cat -- \"$l.owner\" 2>/dev/null)\"; exit 75; } ;; " +
        "  *) printf 'held %s\\n' \"$o\"; exit 75 ;; esac; " +
        "fi; " +
        "printf '%s\\n' \"$owner\" > \"$l.owner\"; " +
        "echo locked; " +
        "while read -r _; do :; done; " +
        "printf 'draining %s\\n' \"$owner\" > \"$l.owner\"; " +
        "exec 8>>\"$l" + ControllerGuard.ChildrenSuffix + "\"; flock -x 8; " +
        "printf 'released %s\\n' \"$owner\" > \"$l.owner\"";

    private readonly IHostProcess holder;

    private RemoteLock(IHostProcess holder, string path, string owner)
    {
        this.holder = holder;
        Path = path;
        Owner = owner;
    }

    public string Path { get; }

    /// <summary>Who holds it, as recorded in LOCK.owner (e.g. "Invoke-NbdClone run r1a2b3c4, pid 4711 on ctl1, since ...").</summary>
    public string Owner { get; }

    /// <summary>How long a taker waits for the children of a run whose controller is gone (they get SIGKILL 5 s after SIGTERM).</summary>
    public static TimeSpan DefaultDrainWait { get; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Takes the lock for <paramref name="owner"/>, or throws <see cref="LockHeldException"/> naming the holder when a live
    /// run holds it. A run whose controller is gone is waited for while its children end (up to <paramref name="drainWait"/>).
    /// </summary>
    public static async Task<RemoteLock> AcquireAsync(IReplicaHost host, string lockPath, string owner, TimeSpan? drainWait = null, CancellationToken cancellationToken = default)
    {
        var wait = (int)Math.Ceiling((drainWait ?? DefaultDrainWait).TotalSeconds);
        var holder = await host.StartAsync(BuildHolderCommand(lockPath, owner, drainWait), cancellationToken).ConfigureAwait(false);
        try
        {
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            limit.CancelAfter(TimeSpan.FromSeconds(60 + wait));
            var reader = new LineReader(holder.StandardOutput);
            while (true)
            {
                var line = await reader.ReadLineAsync(limit.Token).ConfigureAwait(false);
                if (line == "locked")
                {
                    return new RemoteLock(holder, lockPath, owner);
                }

                if (line is not null && line.StartsWith("waiting ", StringComparison.Ordinal))
                {
                    OperationContext.Reporter.Warning($"On host '{host.Name}', the lock '{lockPath}' is held by a run whose controller is gone ({line["waiting draining ".Length..]}); waiting up to {wait} s for its remote children to end.");
                    continue;
                }

                var exitCode = await holder.WaitForExitAsync(limit.Token).ConfigureAwait(false);
                if (exitCode == ConflictExitCode)
                {
                    var held = line is not null && line.StartsWith("held ", StringComparison.Ordinal) ? line["held ".Length..].Trim() : string.Empty;
                    throw new LockHeldException(host.Name, lockPath, held.Length > 0 ? held : null);
                }

                throw new ReplicaException("LockFailed", ReplicaErrorCategory.ResourceUnavailable,
                    $"On host '{host.Name}', taking the lock '{lockPath}' with flock failed (exit code {exitCode}): {holder.StandardError.Trim()}", host.Name, lockPath);
            }
        }
        catch (Exception ex)
        {
            await holder.DisposeAsync().ConfigureAwait(false);
            if (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                throw new ReplicaException("LockFailed", ReplicaErrorCategory.OperationTimeout, $"On host '{host.Name}', flock did not answer within {60 + wait} s for '{lockPath}'.", host.Name, lockPath);
            }

            throw;
        }
    }

    /// <summary>
    /// The holder: <c>sh -c SCRIPT rt-lock LOCK OWNER DRAIN-SECONDS</c>. It prints <c>locked</c> once it holds the lock, or
    /// <c>held OWNER</c> and exits 75; <c>waiting draining OWNER</c> while it waits for a run whose controller is gone.
    /// </summary>
    public static CommandSpec BuildHolderCommand(string lockPath, string owner, TimeSpan? drainWait = null) =>
        new("sh", "-c", HolderScript, "rt-lock", lockPath, owner.Replace('\n', ' '),
            ((int)Math.Ceiling((drainWait ?? DefaultDrainWait).TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>Ends the hold: the holder waits for the run's guarded children (normally long gone), then releases the lock.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            holder.StandardInput.Close();
            await holder.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or TimeoutException or ObjectDisposedException or ReplicaException)
        {
            // Killed below.
        }

        await holder.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Reads LF-terminated lines from a raw stream without buffering past what the holder printed.</summary>
    private sealed class LineReader(Stream stream)
    {
        private readonly byte[] one = new byte[1];

        public async Task<string?> ReadLineAsync(CancellationToken cancellationToken)
        {
            var bytes = new List<byte>();
            while (true)
            {
                var n = await stream.ReadAsync(one, cancellationToken).ConfigureAwait(false);
                if (n == 0)
                {
                    return bytes.Count == 0 ? null : Encoding.UTF8.GetString(bytes.ToArray());
                }

                if (one[0] == (byte)'\n')
                {
                    return Encoding.UTF8.GetString(bytes.ToArray());
                }

                bytes.Add(one[0]);
            }
        }
    }
}

/// <summary>Someone else holds the lock; <see cref="Holder"/> names them when the lock recorded it.</summary>
public sealed class LockHeldException(string hostName, string lockPath, string? holder = null)
    : ReplicaException("LockHeld", ReplicaErrorCategory.ResourceUnavailable,
        $"On host '{hostName}', the lock '{lockPath}' is held by {holder ?? "another process"}.", hostName, lockPath)
{
    public string LockPath { get; } = lockPath;

    /// <summary>The holder as recorded in LOCK.owner, or null.</summary>
    public string? Holder { get; } = holder;
}
