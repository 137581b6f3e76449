namespace ReplicaTools.Core.Remote;

/// <summary>One of a connection's session channels (sshd's MaxSessions), held while a command runs; disposing frees it once.</summary>
internal sealed class ChannelSlot : IDisposable
{
    private SemaphoreSlim? semaphore;

    private ChannelSlot(SemaphoreSlim semaphore) => this.semaphore = semaphore;

    /// <summary>Waits for a free channel.</summary>
    public static async Task<ChannelSlot> TakeAsync(SemaphoreSlim semaphore, CancellationToken cancellationToken)
    {
        await semaphore.WaitAsync(cancellationToken).ConfigureAwait(false);
        return new ChannelSlot(semaphore);
    }

    public void Dispose() => Interlocked.Exchange(ref semaphore, null)?.Release();
}

/// <summary>A running command that holds a channel slot until it is disposed.</summary>
internal sealed class ChannelSlotProcess(IHostProcess inner, ChannelSlot slot) : IHostProcess
{
    public string HostName => inner.HostName;

    public IReadOnlyList<string> Arguments => inner.Arguments;

    public Stream StandardInput => inner.StandardInput;

    public Stream StandardOutput => inner.StandardOutput;

    public string StandardError => inner.StandardError;

    public bool HasExited => inner.HasExited;

    public Task<int> WaitForExitAsync(CancellationToken cancellationToken = default) => inner.WaitForExitAsync(cancellationToken);

    public Task KillAsync() => inner.KillAsync();

    public async ValueTask DisposeAsync()
    {
        try
        {
            await inner.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            slot.Dispose();
        }
    }
}
