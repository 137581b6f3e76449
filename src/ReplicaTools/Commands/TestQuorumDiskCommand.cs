using System.Management.Automation;
using ReplicaTools.Core.Quorum;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsDiagnostic.Test, "QuorumDisk")]
[OutputType(typeof(QuorumComparison))]
public sealed class TestQuorumDiskCommand : QuorumCmdlet
{
    protected override void ProcessRecord()
    {
        var manager = OpenManager();
        var target = TargetName(manager.Vm.Target);
        var result = TryRun(token => manager.TestAsync(DriveOrNull, token), target);
        if (result is null)
        {
            return;
        }

        foreach (var replica in result.Replicas)
        {
            if (!replica.InMajority)
            {
                WriteWarning($"Replica {replica.NodeName} ({replica.Location}) of quorum disk '{replica.Drive}' differs from the majority: first at offset {replica.FirstDifference}, {replica.DifferingBytes} bytes in {replica.DifferingRegions} range(s).");
            }

            WriteObject(replica);
        }

        if (result.NoMajority is { } noMajority)
        {
            WriteError(ToErrorRecord(noMajority));
        }
    }
}
