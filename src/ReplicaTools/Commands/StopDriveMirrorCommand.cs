using System.Management.Automation;
using ReplicaTools.Core.Mirror;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Stop, "DriveMirror", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(DriveMirrorJob))]
public sealed class StopDriveMirrorCommand : MirrorCmdlet
{
    /// <summary>Switch the VM onto the mirror copy (the source is no longer written).</summary>
    [Parameter]
    public SwitchParameter Pivot { get; set; }

    /// <summary>Cancel a mirror that is not in sync yet, or clear a failed one.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>How long to wait for QEMU/libvirt to end the job.</summary>
    [Parameter]
    [ValidateRange(1, 86400)]
    public int TimeoutSeconds { get; set; } = 120;

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        var backend = OpenBackend();
        var target = TargetName(backend.VirtualMachine.Target);
        var plan = TryRun(token => backend.PlanStopAsync(DriveOrNull, Pivot, Force, token), target);
        if (plan is null)
        {
            return;
        }

        var job = plan.Job;
        if (!ShouldProcess($"{job.VM}:{job.Drive} on {backend.VirtualMachine.Host.Name} (mirror to {job.Destination})", $"{plan.Action}:{Environment.NewLine}{plan.Describe()}"))
        {
            return;
        }

        var result = TryRun(token => backend.StopAsync(plan, TimeSpan.FromSeconds(TimeoutSeconds), token), job);
        if (result is not null && PassThru)
        {
            WriteObject(result);
        }
    }
}
