using System.Management.Automation;
using ReplicaTools.Core.Drbd;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "ReplicatedDisk")]
[OutputType(typeof(ReplicatedDisk))]
public sealed class GetReplicatedDiskCommand : ReplicatedDiskCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    [AllowNull]
    [AllowEmptyCollection]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        var hosts = StorageHosts;
        var selection = new WildcardSelection(Name, "ReplicatedDiskNotFound",
            name => $"There is no replicated disk '{name}' on {string.Join(" or ", hosts.Select(h => $"'{h.Host.Name}'"))}. Get-ReplicatedDisk without -Name lists them.");
        var disks = TryRun(token => Manager.GetAsync(hosts, selection.Matcher, token), Name);
        if (disks is not null)
        {
            WriteObject(selection.Select(this, disks, d => d.Name), enumerateCollection: true);
        }
    }
}
