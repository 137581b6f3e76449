using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Qemu;

/// <summary>An asynchronous QMP event: name, data and QEMU's timestamp.</summary>
public sealed record QmpEvent(string Name, JsonElement Data, DateTimeOffset Timestamp);

/// <summary>
/// A QEMU Machine Protocol client over any pair of streams: a local unix socket, or a bridge to the socket on a
/// remote host (socat through the session). Replies are matched to commands by id; events are queued as they arrive.
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    private readonly Stream reader;
    private readonly Stream writer;
    private readonly Func<ValueTask> closeTransport;
    private readonly ConcurrentDictionary<string, TaskCompletionSource<JsonElement>> pending = new();
    private readonly Channel<QmpEvent> events = Channel.CreateUnbounded<QmpEvent>();
    private readonly SemaphoreSlim writeLock = new(1, 1);
    private readonly CancellationTokenSource closing = new();
    private readonly TaskCompletionSource<JsonElement> greeting = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? readLoop;
    private long nextId;
    private Exception? failure;

    private QmpClient(string endpoint, Stream reader, Stream writer, Func<ValueTask> closeTransport)
    {
        Endpoint = endpoint;
        this.reader = reader;
        this.writer = writer;
        this.closeTransport = closeTransport;
    }

    /// <summary>Where this client is connected, for messages: "host:/path/to/qmp.sock".</summary>
    public string Endpoint { get; }

    /// <summary>QEMU's version from the greeting, e.g. "7.2.22".</summary>
    public string? QemuVersion { get; private set; }

    /// <summary>Events received and not yet taken.</summary>
    public ChannelReader<QmpEvent> Events => events.Reader;

    /// <summary>Connects to a QMP unix socket on the local machine.</summary>
    public static async Task<QmpClient> ConnectLocalAsync(string socketPath, CancellationToken cancellationToken = default)
    {
        var endpoint = $"localhost:{socketPath}";
        if (!File.Exists(socketPath))
        {
            throw new QmpConnectionException(endpoint, "the socket does not exist. Is the VM running, and is this its -qmp socket?", "localhost");
        }

        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            throw new QmpConnectionException(endpoint, $"cannot connect ({ex.SocketErrorCode}). Is the VM running?", "localhost", ex);
        }

        var stream = new NetworkStream(socket, ownsSocket: true);
        var client = new QmpClient(endpoint, stream, stream, () => stream.DisposeAsync());
        await client.HandshakeAsync(cancellationToken).ConfigureAwait(false);
        return client;
    }

    /// <summary>Connects to a QMP unix socket on a remote host, bridged through the session with socat.</summary>
    public static async Task<QmpClient> ConnectRemoteAsync(IReplicaHost host, string socketPath, CancellationToken cancellationToken = default)
    {
        if (host.IsLocal)
        {
            return await ConnectLocalAsync(socketPath, cancellationToken).ConfigureAwait(false);
        }

        var endpoint = $"{host.Name}:{socketPath}";
        var probe = await host.RunAsync(new CommandSpec("test", "-S", socketPath) { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(30) }, cancellationToken).ConfigureAwait(false);
        if (probe.ExitCode != 0)
        {
            throw new QmpConnectionException(endpoint, "the socket does not exist on that host. Is the VM running, and is this its -qmp socket?", host.Name);
        }

        var bridge = await host.StartAsync(new CommandSpec("socat", "-", $"UNIX-CONNECT:{socketPath}"), cancellationToken).ConfigureAwait(false);
        var client = new QmpClient(endpoint, bridge.StandardOutput, bridge.StandardInput, async () =>
        {
            try
            {
                bridge.StandardInput.Close();
                await bridge.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is TimeoutException or IOException or ReplicaException)
            {
                // The bridge did not end by itself.
            }

            await bridge.DisposeAsync().ConfigureAwait(false);
        });
        try
        {
            await client.HandshakeAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (QmpConnectionException ex) when (bridge.HasExited || bridge.StandardError.Length > 0)
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw new QmpConnectionException(endpoint, $"{ex.Message} (bridge: {bridge.StandardError.Trim()})", host.Name, ex);
        }

        return client;
    }

    /// <summary>Runs a QMP command and returns its "return" value; a QMP error throws <see cref="QmpException"/>.</summary>
    public async Task<JsonElement> ExecuteAsync(string command, object? arguments = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(command);
        if (failure is not null)
        {
            throw new QmpConnectionException(Endpoint, $"the connection is closed: {failure.Message}", null, failure);
        }

        var id = $"rt-{Interlocked.Increment(ref nextId)}";
        var message = new JsonObject { ["execute"] = command, ["id"] = id };
        if (arguments is not null)
        {
            message["arguments"] = arguments as JsonNode ?? JsonSerializer.SerializeToNode(arguments, arguments.GetType(), QmpJson.Options);
        }

        var reply = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        pending[id] = reply;
        try
        {
            await SendAsync(message, cancellationToken).ConfigureAwait(false);
            var response = await reply.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            if (response.TryGetProperty("error", out var error))
            {
                throw QmpException.Create(Endpoint, command,
                    error.TryGetProperty("class", out var cls) ? cls.GetString() ?? "GenericError" : "GenericError",
                    error.TryGetProperty("desc", out var desc) ? desc.GetString() ?? string.Empty : string.Empty);
            }

            return response.TryGetProperty("return", out var value) ? value : default;
        }
        finally
        {
            pending.TryRemove(id, out _);
        }
    }

    /// <summary>Waits for the first event (already queued or yet to come) that matches; other events are kept in order.</summary>
    public async Task<QmpEvent> WaitForEventAsync(Func<QmpEvent, bool> match, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        var skipped = new List<QmpEvent>();
        try
        {
            while (true)
            {
                QmpEvent next;
                try
                {
                    next = await events.Reader.ReadAsync(limit.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new TimeoutException($"QEMU at {Endpoint} sent no matching event within {timeout.TotalSeconds:0} s.");
                }
                catch (ChannelClosedException ex)
                {
                    throw new QmpConnectionException(Endpoint, "the connection closed while waiting for an event.", null, ex.InnerException ?? ex);
                }

                if (match(next))
                {
                    return next;
                }

                skipped.Add(next);
            }
        }
        finally
        {
            // Put back what others may be waiting for, in arrival order, ahead of newer events.
            if (skipped.Count > 0)
            {
                var rest = new List<QmpEvent>();
                while (events.Reader.TryRead(out var newer))
                {
                    rest.Add(newer);
                }

                foreach (var e in skipped.Concat(rest))
                {
                    events.Writer.TryWrite(e);
                }
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        closing.Cancel();
        await closeTransport().ConfigureAwait(false);
        if (readLoop is not null)
        {
            await Task.WhenAny(readLoop, Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
        }

        closing.Dispose();
    }

    private async Task HandshakeAsync(CancellationToken cancellationToken)
    {
        readLoop = Task.Run(ReadLoopAsync);
        JsonElement hello;
        try
        {
            // QEMU serves one QMP client at a time; a second one waits silently, hence the timeout.
            hello = await greeting.Task.WaitAsync(TimeSpan.FromSeconds(15), cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            throw new QmpConnectionException(Endpoint, "QEMU sent no greeting within 15 s. Another client (or libvirt) may hold its QMP socket.", null, ex);
        }

        if (hello.TryGetProperty("QMP", out var qmp) && qmp.TryGetProperty("version", out var version) && version.TryGetProperty("qemu", out var qemu))
        {
            QemuVersion = $"{qemu.GetProperty("major").GetInt32()}.{qemu.GetProperty("minor").GetInt32()}.{qemu.GetProperty("micro").GetInt32()}";
        }

        await ExecuteAsync("qmp_capabilities", cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    private async Task SendAsync(JsonObject message, CancellationToken cancellationToken)
    {
        var bytes = Encoding.UTF8.GetBytes(message.ToJsonString() + "\n");
        await writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await writer.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
            await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or SocketException)
        {
            throw new QmpConnectionException(Endpoint, "the connection closed while sending.", null, ex);
        }
        finally
        {
            writeLock.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        Exception? error = null;
        try
        {
            using var lines = new StreamReader(reader, Encoding.UTF8, false, 65536, leaveOpen: true);
            while (await lines.ReadLineAsync(closing.Token).ConfigureAwait(false) is { } line)
            {
                if (line.Length == 0)
                {
                    continue;
                }

                JsonElement message;
                try
                {
                    message = JsonDocument.Parse(line).RootElement;
                }
                catch (JsonException ex)
                {
                    throw new QmpConnectionException(Endpoint, $"QEMU sent something that is not JSON: {line[..Math.Min(line.Length, 200)]}", null, ex);
                }

                Dispatch(message);
            }

            error = new QmpConnectionException(Endpoint, "QEMU closed the connection.");
        }
        catch (OperationCanceledException)
        {
            error = new QmpConnectionException(Endpoint, "the client was closed.");
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or QmpConnectionException)
        {
            error = ex as QmpConnectionException ?? new QmpConnectionException(Endpoint, ex.Message, null, ex);
        }
        finally
        {
            failure = error;
            greeting.TrySetException(error ?? new QmpConnectionException(Endpoint, "closed"));
            foreach (var waiter in pending.Values)
            {
                waiter.TrySetException(error ?? new QmpConnectionException(Endpoint, "closed"));
            }

            events.Writer.TryComplete(error);
        }
    }

    private void Dispatch(JsonElement message)
    {
        if (message.TryGetProperty("QMP", out _))
        {
            greeting.TrySetResult(message);
        }
        else if (message.TryGetProperty("event", out var name))
        {
            var timestamp = DateTimeOffset.Now;
            if (message.TryGetProperty("timestamp", out var ts) && ts.TryGetProperty("seconds", out var seconds) && ts.TryGetProperty("microseconds", out var micro))
            {
                timestamp = DateTimeOffset.FromUnixTimeSeconds(seconds.GetInt64()).AddTicks(micro.GetInt64() * 10);
            }

            events.Writer.TryWrite(new QmpEvent(name.GetString() ?? string.Empty, message.TryGetProperty("data", out var data) ? data.Clone() : default, timestamp));
        }
        else if (message.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String && pending.TryGetValue(id.GetString()!, out var waiter))
        {
            waiter.TrySetResult(message.Clone());
        }
    }
}

internal static class QmpJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.KebabCaseLower,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };
}
