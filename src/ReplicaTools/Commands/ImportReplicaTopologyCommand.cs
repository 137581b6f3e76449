using System.Management.Automation;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Topology;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsData.Import, "ReplicaTopology")]
[OutputType(typeof(ReplicaTopology))]
public sealed class ImportReplicaTopologyCommand : HostCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("FullName", "PSPath")]
    public string Path { get; set; } = string.Empty;

    protected override void ProcessRecord()
    {
        if (!HasArgument(Path, nameof(Path)))
        {
            return;
        }

        var session = ResolveSession();
        if (session.IsLocal)
        {
            var path = GetUnresolvedProviderPathFromPSPath(Path);
            var topology = TryRun(_ => Task.FromResult(TopologyLoader.Load(path)), path);
            if (topology is not null)
            {
                WriteObject(topology);
            }

            return;
        }

        // A topology kept on a management host: read it there, report errors against that host's path.
        var remote = TryRun(async token =>
        {
            var result = await session.Host.RunAsync(new CommandSpec("cat", "--", Path) { Timeout = TimeSpan.FromSeconds(60) }, token).ConfigureAwait(false);
            return TopologyLoader.Parse(result.StandardOutput, $"{session.Host.Name}:{Path}");
        }, Path);
        if (remote is not null)
        {
            WriteObject(remote);
        }
    }
}
