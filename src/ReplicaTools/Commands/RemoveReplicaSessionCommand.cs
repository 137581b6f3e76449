using System.Management.Automation;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Remove, "ReplicaSession", SupportsShouldProcess = true, DefaultParameterSetName = "Session")]
public sealed class RemoveReplicaSessionCommand : ReplicaCmdlet
{
    [Parameter(ParameterSetName = "Session", Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    public ReplicaSession[] Session { get; set; } = Array.Empty<ReplicaSession>();

    [Parameter(ParameterSetName = "Id", Mandatory = true)]
    public int[] Id { get; set; } = Array.Empty<int>();

    [Parameter(ParameterSetName = "HostName", Mandatory = true)]
    [SupportsWildcards]
    [Alias("ComputerName")]
    public string[] HostName { get; set; } = Array.Empty<string>();

    protected override void ProcessRecord()
    {
        var sessions = ReplicaSessionRegistry.Sessions;
        var matches = GetReplicaSessionCommand.Selection(HostName).Matcher;
        IEnumerable<ReplicaSession> targets = ParameterSetName switch
        {
            "Id" => sessions.Where(s => Id.Contains(s.Id)),
            "HostName" => sessions.Where(s => matches(s.HostName) || matches(s.Name)),
            _ => Session.Where(s => !s.IsLocal),
        };

        foreach (var session in targets.ToArray())
        {
            if (ShouldProcess($"session {session.Id} ({session.Name}, {session.HostName})", "Close SSH session"))
            {
                TryRun(_ => ReplicaSessionRegistry.RemoveAsync(session), session);
            }
        }
    }
}
