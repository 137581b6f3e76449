using System.Management.Automation;
using ReplicaTools.Core.Clone;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "DiskCheckpoint")]
[OutputType(typeof(DiskCheckpoint))]
public sealed class GetDiskCheckpointCommand : HostCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Domain")]
    public string? VMName { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? QmpSocket { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? LibvirtUri { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? Drive { get; set => field = Given(value); }

    /// <summary>Checkpoint names; wildcards allowed.</summary>
    [Parameter(Position = 1)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[]? Name { get; set; }

    /// <summary>Only the checkpoints Invoke-NbdClone created (rtclone-CHAIN-GENERATION).</summary>
    [Parameter]
    public SwitchParameter CloneOnly { get; set; }

    protected override void ProcessRecord()
    {
        var session = ResolveSession();
        Core.Qemu.VirtualMachine vm;
        try
        {
            vm = VmParameters.Open(session, VMName, QmpSocket, LibvirtUri);
        }
        catch (ArgumentException ex)
        {
            ThrowTerminating(ex, VMName ?? QmpSocket);
            return;
        }

        var checkpoints = TryRun(token => DiskCheckpointManager.ListAsync(vm, Drive, token), vm.Name);
        if (checkpoints is null)
        {
            return;
        }

        var patterns = Name?.Select(n => WildcardPattern.Get(n, WildcardOptions.IgnoreCase)).ToArray();
        foreach (var checkpoint in checkpoints)
        {
            if ((!CloneOnly || checkpoint.IsCloneCheckpoint) && (patterns is null || patterns.Any(p => p.IsMatch(checkpoint.Name))))
            {
                WriteObject(checkpoint);
            }
        }

        foreach (var name in Name ?? Array.Empty<string>())
        {
            if (!WildcardPattern.ContainsWildcardCharacters(name) && !checkpoints.Any(c => string.Equals(c.Name, name, StringComparison.OrdinalIgnoreCase)))
            {
                WriteError(new ErrorRecord(new ItemNotFoundException($"{vm.DisplayName} has no checkpoint '{name}'{(Drive is null ? string.Empty : $" on disk '{Drive}'")}."),
                    "CheckpointNotFound", ErrorCategory.ObjectNotFound, name));
            }
        }
    }
}
