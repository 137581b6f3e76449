using System.Threading.Channels;
using Renci.SshNet;
using SshNetCommon = Renci.SshNet.Common;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// A command running over an SSH.NET session channel, with the same streams and exit semantics as a command carried by
/// the ssh client (<see cref="SpawnedProcess"/>): stdout as a stream, stderr captured (and scanned for the host-side
/// wrapper's process group), stdin closed to send EOF, 255 when the command ended by a signal (as ssh reports it).
/// </summary>
/// <remarks>
/// SSH.NET's output streams block their reader; each is drained by a thread of its own so that many concurrent
/// commands never starve the thread pool.
/// </remarks>
internal sealed class SshNetProcess : IHostProcess
{
    private readonly SshCommand command;
    private readonly Task execution;
    private readonly StderrCapture stderr = new(scanForPidMarker: true);
    private readonly ChunkPipe stdout;
    private readonly TaskCompletionSource stderrDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Func<int, Task> killRemote;
    private int killed;

    private SshNetProcess(string hostName, IReadOnlyList<string> arguments, SshCommand command, Task execution, Stream input, Func<int, Task> killRemote)
    {
        HostName = hostName;
        Arguments = arguments;
        this.command = command;
        this.execution = execution;
        this.killRemote = killRemote;
        StandardInput = new InputStream(input);
        stdout = new ChunkPipe();
        StartPump(command.OutputStream, stdout.Write, stdout.Complete);
        StartPump(command.ExtendedOutputStream, (buffer, count) => stderr.Write(buffer.AsSpan(0, count)), () =>
        {
            stderr.Complete();
            stderrDone.TrySetResult();
        });
    }

    public string HostName { get; }

    public IReadOnlyList<string> Arguments { get; }

    public Stream StandardInput { get; }

    public Stream StandardOutput => stdout;

    public string StandardError => stderr.Text;

    public bool HasExited => execution.IsCompleted;

    /// <summary>
    /// The longest command line sent in the exec request itself. SSH.NET sends packets of at most 68536 bytes; a longer
    /// line (up to <see cref="PosixShell.MaxCommandLineBytes"/>, as OpenSSH carries it) goes first on standard input.
    /// </summary>
    internal const int MaxExecRequestBytes = 60000;

    /// <summary>
    /// Reads the command line, exactly <c>$1</c> bytes, from standard input and runs it; the rest of standard input is
    /// the command's (GNU head -c never reads past its count). A constant: only the byte count varies.
    /// </summary>
    private const string LongLineBootstrap = "l=$(head -c \"$1\") && exec sh -c \"$l\"";

    /// <summary>Opens a session channel and sends the exec request.</summary>
    /// <exception cref="SshNetCommon.SshException">The channel was refused (see sshd's MaxSessions).</exception>
    /// <exception cref="SshNetCommon.SshConnectionException">The connection is down.</exception>
    public static async Task<SshNetProcess> StartAsync(string hostName, IReadOnlyList<string> arguments, SshClient client, string commandLine, Func<int, Task> killRemote)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(commandLine);
        var prefix = bytes.Length > MaxExecRequestBytes ? bytes : null;
        if (prefix is not null)
        {
            commandLine = PosixShell.Join(new[] { "exec", "sh", "-c", LongLineBootstrap, "rt", bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        }

        var command = client.CreateCommand(commandLine);
        command.CommandTimeout = Timeout.InfiniteTimeSpan;
        try
        {
            // ExecuteAsync opens the channel and sends the exec request synchronously (two round trips), then returns the command's lifetime.
            var execution = await Task.Factory.StartNew(() => command.ExecuteAsync(CancellationToken.None), CancellationToken.None, TaskCreationOptions.DenyChildAttach, TaskScheduler.Default).ConfigureAwait(false);
            Stream input;
            try
            {
                input = command.CreateInputStream();
                if (prefix is not null)
                {
                    await Task.Factory.StartNew(() => input.Write(prefix), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
                }
            }
            catch (InvalidOperationException)
            {
                // Already finished: nothing will read input.
                input = Stream.Null;
            }

            return new SshNetProcess(hostName, arguments, command, execution, input, killRemote);
        }
        catch
        {
            command.Dispose();
            throw;
        }
    }

    public async Task<int> WaitForExitAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            await execution.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is SshNetCommon.SshConnectionException or SshNetCommon.SshException or ObjectDisposedException && !cancellationToken.IsCancellationRequested)
        {
            throw new SshConnectionException(HostName, stderr.Started
                ? $"the connection was lost while the command ran ({ex.Message}); it was ended on the host by its timeout guard or the lost connection."
                : $"the connection was lost before the command started ({ex.Message}).");
        }

        await Task.WhenAny(stderrDone.Task, Task.Delay(TimeSpan.FromSeconds(2), CancellationToken.None)).ConfigureAwait(false);
        if (command.ExitStatus is { } exitStatus)
        {
            return exitStatus;
        }

        // ssh reports 255 for a command ended by a signal; so does this transport.
        return 255;
    }

    public async Task KillAsync()
    {
        if (Interlocked.Exchange(ref killed, 1) == 1)
        {
            return;
        }

        if (stderr.Started && !execution.IsCompleted)
        {
            try
            {
                await killRemote(stderr.ProcessGroup).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ReplicaException or IOException or InvalidOperationException)
            {
                OperationContext.Reporter.Warning($"Could not kill the command on host '{HostName}' (remote pid {stderr.ProcessGroup}): {ex.Message}");
            }
        }

        // The group is gone, so the channel closes by itself; a command that never started is ended by closing it.
        if (!stderr.Started)
        {
            command.Dispose();
        }

        await Task.WhenAny(execution, Task.Delay(TimeSpan.FromSeconds(10), CancellationToken.None)).ConfigureAwait(false);
        if (!execution.IsCompleted)
        {
            OperationContext.Reporter.Warning($"The channel of the command on host '{HostName}' did not close 10 s after the command was killed.");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!execution.IsCompleted)
        {
            await KillAsync().ConfigureAwait(false);
        }

        StandardInput.Dispose();
        command.Dispose();
        stdout.Complete();
    }

    private static void StartPump(Stream source, Action<byte[], int> write, Action complete)
    {
        var thread = new Thread(() =>
        {
            var buffer = new byte[32768];
            try
            {
                int read;
                while ((read = source.Read(buffer, 0, buffer.Length)) > 0)
                {
                    write(buffer, read);
                }
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException)
            {
                // The command went away; what was read is kept.
            }
            finally
            {
                complete();
            }
        })
        {
            IsBackground = true,
            Name = "ssh.net output",
        };
        thread.Start();
    }

    /// <summary>A read-only stream fed in chunks by a pump thread; reading awaits without blocking a thread.</summary>
    private sealed class ChunkPipe : Stream
    {
        private readonly Channel<byte[]> chunks = Channel.CreateBounded<byte[]>(new BoundedChannelOptions(64) { SingleReader = true, SingleWriter = true });
        private readonly CancellationTokenSource abandoned = new();
        private byte[] current = Array.Empty<byte>();
        private int offset;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        /// <summary>Called by the pump thread; blocks while 64 chunks wait unread.</summary>
        public void Write(byte[] buffer, int count)
        {
            try
            {
                chunks.Writer.WriteAsync(buffer.AsSpan(0, count).ToArray(), abandoned.Token).AsTask().GetAwaiter().GetResult();
            }
            catch (Exception ex) when (ex is OperationCanceledException or ChannelClosedException)
            {
                // Nobody reads any more.
            }
        }

        public void Complete() => chunks.Writer.TryComplete();

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (offset == current.Length)
            {
                if (!await chunks.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false) || !chunks.Reader.TryRead(out var next))
                {
                    return 0;
                }

                current = next;
                offset = 0;
            }

            var count = Math.Min(buffer.Length, current.Length - offset);
            current.AsMemory(offset, count).CopyTo(buffer);
            offset += count;
            return count;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                abandoned.Cancel();
                Complete();
            }

            base.Dispose(disposing);
        }
    }

    /// <summary>The command's standard input: writes (which block while the channel window is full) run off the caller's thread; closing sends EOF.</summary>
    private sealed class InputStream(Stream channel) : Stream
    {
        private int closed;

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count)
        {
            try
            {
                channel.Write(buffer, offset, count);
            }
            catch (Exception ex) when (ex is SshNetCommon.SshException or InvalidOperationException or ObjectDisposedException)
            {
                throw new IOException($"The command's standard input is closed: {ex.Message}", ex);
            }
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            Task.Factory.StartNew(() => Write(buffer, offset, count), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            var copy = buffer.ToArray();
            return new ValueTask(WriteAsync(copy, 0, copy.Length, cancellationToken));
        }

        public override void Flush()
        {
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing && Interlocked.Exchange(ref closed, 1) == 0)
            {
                try
                {
                    channel.Dispose();
                }
                catch (Exception ex) when (ex is SshNetCommon.SshException or InvalidOperationException or ObjectDisposedException)
                {
                    // The channel is gone already; there is nobody to send EOF to.
                }
            }

            base.Dispose(disposing);
        }
    }
}
