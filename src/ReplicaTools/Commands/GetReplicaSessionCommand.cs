using System.Management.Automation;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "ReplicaSession", DefaultParameterSetName = "All")]
[OutputType(typeof(ReplicaSession))]
public sealed class GetReplicaSessionCommand : ReplicaCmdlet
{
    [Parameter(ParameterSetName = "Id", Mandatory = true, ValueFromPipelineByPropertyName = true)]
    public int[] Id { get; set; } = Array.Empty<int>();

    [Parameter(ParameterSetName = "Name", Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    [SupportsWildcards]
    public string[] Name { get; set; } = Array.Empty<string>();

    [Parameter(ParameterSetName = "HostName", Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    [SupportsWildcards]
    [Alias("ComputerName")]
    public string[] HostName { get; set; } = Array.Empty<string>();

    protected override void ProcessRecord()
    {
        var sessions = ReplicaSessionRegistry.Sessions;
        switch (ParameterSetName)
        {
            case "Id":
                foreach (var id in Id)
                {
                    var match = sessions.FirstOrDefault(s => s.Id == id);
                    if (match is null)
                    {
                        WriteError(new ErrorRecord(new ItemNotFoundException($"There is no ReplicaTools session with Id {id}. Get-ReplicaSession lists the open ones."), "SessionNotFound", ErrorCategory.ObjectNotFound, id));
                    }
                    else
                    {
                        WriteObject(match);
                    }
                }

                break;
            case "Name" when HasArgument(Name, nameof(Name)):
                WriteObject(Selection(Name).Select(this, sessions, s => s.Name), enumerateCollection: true);
                break;
            case "HostName" when HasArgument(HostName, nameof(HostName)):
                WriteObject(Selection(HostName).Select(this, sessions, s => s.HostName), enumerateCollection: true);
                break;
            case "Name" or "HostName":
                break;
            default:
                WriteObject(sessions, enumerateCollection: true);
                break;
        }
    }

    /// <summary>How the session cmdlets pick sessions by name or host name (<see cref="WildcardSelection"/>).</summary>
    internal static WildcardSelection Selection(string[] patterns) =>
        new(patterns, "SessionNotFound", pattern => $"There is no ReplicaTools session for '{pattern}'. Get-ReplicaSession lists the open ones.");
}
