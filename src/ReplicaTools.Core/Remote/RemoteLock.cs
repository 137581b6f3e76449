using System.Text;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// An exclusive lock on a host, held for as long as this object lives: flock(1) runs "cat" on the host while holding
/// the lock file. Closing its standard input (or losing the connection, or this process dying) ends cat and
/// releases the lock, so an interrupted run can never leave a lock behind.
/// </summary>
public sealed class RemoteLock : IAsyncDisposable
{
    /// <summary>flock's exit code when the lock is held by someone else (--conflict-exit-code).</summary>
    private const int ConflictExitCode = 75;
    private readonly IHostProcess holder;

    private RemoteLock(IHostProcess holder, string path)
    {
        this.holder = holder;
        Path = path;
    }

    public string Path { get; }

    /// <summary>Takes the lock or throws <see cref="LockHeldException"/> at once if another holder has it.</summary>
    public static async Task<RemoteLock> AcquireAsync(IReplicaHost host, string lockPath, CancellationToken cancellationToken = default)
    {
        var holder = await host.StartAsync(new CommandSpec("flock", "--nonblock", "--conflict-exit-code", "75", lockPath, "cat"), cancellationToken).ConfigureAwait(false);
        try
        {
            // cat echoes the probe only once flock holds the lock. If flock gave up at once, the pipe is already closed.
            try
            {
                await holder.StandardInput.WriteAsync("locked\n"u8.ToArray(), cancellationToken).ConfigureAwait(false);
                await holder.StandardInput.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (IOException)
            {
                // Its exit code below tells why.
            }

            var echo = new byte[7];
            var read = 0;
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            limit.CancelAfter(TimeSpan.FromSeconds(60));
            while (read < echo.Length)
            {
                var n = await holder.StandardOutput.ReadAsync(echo.AsMemory(read), limit.Token).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                read += n;
            }

            if (read == echo.Length && Encoding.ASCII.GetString(echo) == "locked\n")
            {
                return new RemoteLock(holder, lockPath);
            }

            var exitCode = await holder.WaitForExitAsync(limit.Token).ConfigureAwait(false);
            if (exitCode == ConflictExitCode)
            {
                throw new LockHeldException(host.Name, lockPath);
            }

            throw new ReplicaException("LockFailed", ReplicaErrorCategory.ResourceUnavailable,
                $"On host '{host.Name}', taking the lock '{lockPath}' with flock failed (exit code {exitCode}): {holder.StandardError.Trim()}", host.Name, lockPath);
        }
        catch (Exception ex) when (ex is not LockHeldException)
        {
            await holder.DisposeAsync().ConfigureAwait(false);
            if (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                throw new ReplicaException("LockFailed", ReplicaErrorCategory.OperationTimeout, $"On host '{host.Name}', flock did not answer within 60 s for '{lockPath}'.", host.Name, lockPath);
            }

            throw;
        }
        catch (LockHeldException)
        {
            await holder.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            holder.StandardInput.Close();
            await holder.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or TimeoutException or ObjectDisposedException or ReplicaException)
        {
            // Killed below.
        }

        await holder.DisposeAsync().ConfigureAwait(false);
    }
}

/// <summary>Someone else holds the lock.</summary>
public sealed class LockHeldException(string hostName, string lockPath)
    : ReplicaException("LockHeld", ReplicaErrorCategory.ResourceUnavailable, $"On host '{hostName}', the lock '{lockPath}' is held by another process.", hostName, lockPath)
{
    public string LockPath { get; } = lockPath;
}
