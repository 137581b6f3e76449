using System.Collections;
using System.Management.Automation;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Topology;

namespace ReplicaTools;

/// <summary>
/// Lets a host parameter take what the module hands around: a session, a host name (an open session of that name is
/// reused, else one with default settings is opened), a topology host, or any object with a Session property.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
internal sealed class ReplicaHostAttribute : ArgumentTransformationAttribute
{
    public override object? Transform(EngineIntrinsics engineIntrinsics, object? inputData)
    {
        var value = inputData is PSObject wrapped ? wrapped.BaseObject : inputData;
        if (value is null or ReplicaSession)
        {
            return value;
        }

        if (value is string or TopologyHost || value is not IEnumerable)
        {
            return ToSession(value);
        }

        return ((IEnumerable)value).Cast<object?>().Select(item => ToSession(item is PSObject p ? p.BaseObject : item)).ToArray();
    }

    private static ReplicaSession ToSession(object? value) => value switch
    {
        ReplicaSession session => session,
        TopologyHost host => host.Session,
        string { Length: > 0 } name => HostResolver.Resolve(null, name),
        not null when PSObject.AsPSObject(value).Properties["Session"]?.Value is ReplicaSession session => session,
        _ => throw new ArgumentTransformationMetadataException(
            $"'{value}' is not a host: give a session (New-ReplicaSession), a host name or a topology host (Import-ReplicaTopology)."),
    };
}
