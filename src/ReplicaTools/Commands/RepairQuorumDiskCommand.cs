using System.Management.Automation;
using ReplicaTools.Core.Quorum;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsDiagnostic.Repair, "QuorumDisk", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(QuorumDisk))]
public sealed class RepairQuorumDiskCommand : QuorumCmdlet
{
    /// <summary>The replica: its node name or location. Null or empty: every replica Test-QuorumDisk finds out of the majority.</summary>
    [Parameter(Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("NodeName")]
    public string? Replica { get; set; }

    /// <summary>A new image that takes the replica's place (path on the VM host, nfs:// or nbd:// URL); created if missing.</summary>
    [Parameter]
    public string? Destination { get; set; }

    /// <summary>The format of a -Destination that is created.</summary>
    [Parameter]
    public DiskImageFormat? Format { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        var manager = OpenManager();
        var target = TargetName(manager.Vm.Target);
        QuorumReplicaLocation? destination = null;
        if (!string.IsNullOrEmpty(Destination))
        {
            if (string.IsNullOrEmpty(Replica))
            {
                ThrowTerminating(new ArgumentException("-Destination replaces one replica: name it with -Replica.", nameof(Replica)), Destination);
            }

            try
            {
                destination = QuorumReplicaLocation.Parse(StorageCmdletHelpers.ResolvePath(this, manager.Vm.Session, Destination), nameof(Destination));
            }
            catch (ArgumentException ex)
            {
                WriteError(ToErrorRecord(ex, Destination));
                return;
            }
        }

        IReadOnlyList<string> replicas;
        if (!string.IsNullOrEmpty(Replica))
        {
            replicas = new[] { Replica };
        }
        else
        {
            var test = TryRun(token => manager.TestAsync(DriveOrNull, token), target);
            if (test is null)
            {
                return;
            }

            if (test.NoMajority is { } noMajority)
            {
                WriteError(ToErrorRecord(noMajority));
            }

            replicas = test.Replicas.Where(r => !r.InMajority).Select(r => r.NodeName).ToArray();
            if (replicas.Count == 0)
            {
                WriteVerbose($"Every replica of {target} agrees with the majority: nothing to repair.");
            }
        }

        foreach (var replica in replicas)
        {
            var plan = TryRun(token => manager.PlanRepairAsync(DriveOrNull, replica, destination, Format, token), replica);
            if (plan is null)
            {
                continue;
            }

            var what = plan.Mode == QuorumRepairMode.InPlace
                ? $"Rewrite replica {plan.Replica.NodeName} ({plan.Replica.Location.Text}) from the majority{(plan.PausesVm ? "; the vCPUs pause for the final switch (milliseconds)" : string.Empty)}:"
                : $"Replace replica {plan.Replica.NodeName} ({plan.Replica.Location.Text}) by {plan.NewReplica!.Location.Text}, synced live from the majority:";
            if (!ShouldProcess($"quorum disk '{plan.Disk.Drive}' of {manager.Vm.Name} on {manager.Vm.Host.Name}", $"{what}{Environment.NewLine}{plan.Describe()}"))
            {
                continue;
            }

            var disk = TryRun(token => manager.RepairAsync(plan, token), replica);
            if (disk is not null && PassThru)
            {
                WriteObject(disk);
            }
        }
    }
}
