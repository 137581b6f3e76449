using System.Management.Automation;
using ReplicaTools.Core.Remote;

namespace ReplicaTools;

/// <summary>
/// A cmdlet that acts on one host: -Session (a session object, also bound from any piped object's Session
/// property) or -HostName; with neither, the local machine.
/// </summary>
public abstract class HostCmdlet : ReplicaCmdlet
{
    [Parameter(ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    public ReplicaSession? Session { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("ComputerName")]
    public string? HostName { get; set; }

    /// <summary>The session this invocation targets, per the module-wide rule (see <see cref="HostResolver"/>).</summary>
    protected ReplicaSession ResolveSession() => ResolveSession(Session, HostName, ReplicaSession.Local);

    /// <summary>
    /// A host given by a further pair of parameters (a clone's -DestinationSession/-DestinationHostName, a comparison's
    /// -ReferenceSession/-ReferenceHostName): the same rule, with <paramref name="fallback"/> when neither is given.
    /// A mistake (closed session, session and host name that disagree) is a terminating error.
    /// </summary>
    protected ReplicaSession ResolveSession(ReplicaSession? session, string? hostName, ReplicaSession fallback)
    {
        if (session is null && string.IsNullOrEmpty(hostName))
        {
            return fallback;
        }

        try
        {
            return HostResolver.Resolve(session, hostName);
        }
        catch (Exception ex) when (IsReportable(ex))
        {
            ThrowTerminating(ex, hostName);
            throw;
        }
    }
}
