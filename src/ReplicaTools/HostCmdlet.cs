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
    protected ReplicaSession ResolveSession()
    {
        try
        {
            return HostResolver.Resolve(Session, HostName);
        }
        catch (Exception ex) when (IsReportable(ex))
        {
            ThrowTerminating(ex, HostName);
            throw;
        }
    }
}
