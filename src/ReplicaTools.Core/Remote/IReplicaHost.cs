namespace ReplicaTools.Core.Remote;

/// <summary>A machine commands run on: the local machine, or a host reached over SSH.</summary>
public interface IReplicaHost
{
    /// <summary>How messages name this host, e.g. "localhost" or "nfs1".</summary>
    string Name { get; }

    bool IsLocal { get; }

    /// <summary>Runs a command to completion, honouring its timeout; a failing exit code throws <see cref="CommandFailedException"/> unless the spec says otherwise.</summary>
    Task<CommandResult> RunAsync(CommandSpec command, CancellationToken cancellationToken = default);

    /// <summary>Starts a long-running command whose standard streams the caller reads and writes while it runs. The spec's timeout is not applied; the caller owns the lifetime.</summary>
    Task<IHostProcess> StartAsync(CommandSpec command, CancellationToken cancellationToken = default);
}

/// <summary>A command running on a host, readable and writable as streams.</summary>
public interface IHostProcess : IAsyncDisposable
{
    string HostName { get; }

    IReadOnlyList<string> Arguments { get; }

    Stream StandardInput { get; }

    Stream StandardOutput { get; }

    /// <summary>Standard error captured so far.</summary>
    string StandardError { get; }

    bool HasExited { get; }

    /// <summary>Waits for the command to end and returns its exit code; transport failures throw.</summary>
    Task<int> WaitForExitAsync(CancellationToken cancellationToken = default);

    /// <summary>Kills the command on its host (the whole process group), then the local process.</summary>
    Task KillAsync();
}
