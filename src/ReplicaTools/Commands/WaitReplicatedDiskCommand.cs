using System.Management.Automation;
using ReplicaTools.Core.Drbd;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Wait, "ReplicatedDisk")]
[OutputType(typeof(ReplicatedDisk))]
public sealed class WaitReplicatedDiskCommand : ReplicatedDiskCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Name { get; set; } = string.Empty;

    [Parameter]
    [ValidateRange(1, 604800)]
    public int TimeoutSeconds { get; set; } = 86400;

    [Parameter]
    [ValidateRange(1, 3600)]
    public int PollSeconds { get; set; } = 2;

    protected override void ProcessRecord()
    {
        if (!HasArgument(Name, nameof(Name)))
        {
            return;
        }

        var hosts = StorageHosts;
        var disk = TryRun(token => Manager.WaitAsync(hosts, Name, TimeSpan.FromSeconds(TimeoutSeconds), TimeSpan.FromSeconds(PollSeconds), token), Name);
        if (disk is not null)
        {
            WriteObject(disk);
        }
    }
}
