namespace ReplicaTools.Core.Remote;

/// <summary>The machine ReplicaTools runs on: commands are started directly from their argument list, no shell involved.</summary>
public sealed class LocalHost : IReplicaHost
{
    public static LocalHost Instance { get; } = new();

    private LocalHost()
    {
    }

    public string Name => "localhost";

    public bool IsLocal => true;

    public Task<CommandResult> RunAsync(CommandSpec command, CancellationToken cancellationToken = default) =>
        CommandRunner.RunAsync(Name, command, () => StartAsync(command, cancellationToken), cancellationToken);

    public Task<IHostProcess> StartAsync(CommandSpec command, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        foreach (var argument in command.Arguments)
        {
            // Quote() rejects what no command line could carry, so local and remote behave alike.
            PosixShell.Quote(argument);
        }

        IHostProcess process = SpawnedProcess.Start(Name, command.Arguments, command.Arguments[0], command.Arguments.Skip(1));
        return Task.FromResult(process);
    }

    public override string ToString() => Name;
}
