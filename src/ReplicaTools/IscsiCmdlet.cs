using System.Management.Automation;
using ReplicaTools.Core.Iscsi;
using ReplicaTools.Core.Remote;

namespace ReplicaTools;

/// <summary>
/// A cmdlet that acts on the tgt iSCSI targets of one host: which tgtd (-ControlPort) and which conf.d directory
/// (-ConfigDirectory). Both bind by property name, so IscsiTarget objects pipe from one cmdlet into the next.
/// </summary>
public abstract class IscsiCmdlet : HostCmdlet
{
    /// <summary>Where the target files live (default /etc/tgt/conf.d, which tgt's targets.conf includes).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string ConfigDirectory { get; set => field = Given(value) ?? IscsiTargetRequest.DefaultConfigDirectory; } = IscsiTargetRequest.DefaultConfigDirectory;

    /// <summary>tgtd's management channel (tgtadm -C); 0, the default, is the system's tgtd.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(0, 32767)]
    public int ControlPort { get; set; }

    /// <summary>The manager for a session's host; a bad -ConfigDirectory is a terminating error.</summary>
    protected IscsiTargetManager CreateManager(ReplicaSession session)
    {
        try
        {
            return new IscsiTargetManager(session.Host, ConfigDirectory, ControlPort);
        }
        catch (Exception ex) when (IsReportable(ex))
        {
            ThrowTerminating(ex, ConfigDirectory);
            throw;
        }
    }

    /// <summary>Stamps the session on targets so they pipe on to the next cmdlet.</summary>
    protected static IscsiTarget Stamp(IscsiTarget target, ReplicaSession session)
    {
        target.Session = session;
        target.HostName = session.HostName;
        return target;
    }

    /// <summary>How the iSCSI cmdlets pick targets by IQN (<see cref="WildcardSelection"/>).</summary>
    private protected static WildcardSelection Selection(string[]? iqns, string hostName) => new(iqns, "IscsiTargetNotFound",
        iqn => $"On host '{hostName}', there is no iSCSI target '{iqn}'. Get-IscsiTarget lists the targets of a host.");
}
