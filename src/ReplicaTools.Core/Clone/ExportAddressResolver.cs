using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Clone;

/// <summary>
/// Where the NBD export listens and the destination connects, when -ExportAddress is not given:
/// both hosts local → 127.0.0.1; VM host remote → the address the VM host accepted our SSH connection on (its side of
/// $SSH_CONNECTION), which this machine can reach; VM host local, destination remote → this machine's address as the
/// destination sees it (the client side of the destination's $SSH_CONNECTION).
/// </summary>
public static class ExportAddressResolver
{
    public static async Task<string> ResolveAsync(IReplicaHost vmHost, IReplicaHost destinationHost, string? explicitAddress, CancellationToken cancellationToken)
    {
        if (!string.IsNullOrWhiteSpace(explicitAddress))
        {
            return explicitAddress.Trim();
        }

        if (vmHost.IsLocal && destinationHost.IsLocal)
        {
            return "127.0.0.1";
        }

        var (host, field) = vmHost.IsLocal ? (destinationHost, 0) : (vmHost, 2);
        var result = await host.RunAsync(new CommandSpec("printenv", "SSH_CONNECTION") { ThrowOnFailure = false, Timeout = TimeSpan.FromSeconds(60) }, cancellationToken).ConfigureAwait(false);
        var fields = result.StandardOutput.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length != 4)
        {
            throw new ReplicaException("ExportAddressUnknown", ReplicaErrorCategory.InvalidArgument,
                $"Cannot tell which address of the VM host the destination can reach (SSH_CONNECTION on '{host.Name}' is '{result.StandardOutput.Trim()}').", host.Name, host.Name)
            {
                RecommendedAction = "Pass -ExportAddress with an address of the VM host that the destination host can reach.",
            };
        }

        return fields[field];
    }
}
