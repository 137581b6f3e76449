using System.Management.Automation;
using ReplicaTools.Core.Mirror;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Start, "DriveMirror", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(DriveMirrorJob))]
public sealed class StartDriveMirrorCommand : MirrorCmdlet
{
    /// <summary>The mirror copy: an absolute path on the VM host or an nfs://server/export/file URL.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("Target")]
    public string Destination { get; set; } = string.Empty;

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? Format { get; set => field = Given(value); }

    [Parameter]
    public MirrorSyncMode Sync { get; set; } = MirrorSyncMode.Full;

    [Parameter]
    public SwitchParameter ReuseExisting { get; set; }

    [Parameter]
    [ValidateRange(0, 1048576)]
    public int BandwidthMBps { get; set; }

    [Parameter]
    public SwitchParameter Wait { get; set; }

    /// <summary>With -Wait: give up waiting after this many seconds (the job keeps running). 0 = no limit.</summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int TimeoutSeconds { get; set; }

    [Parameter]
    [ValidateRange(1, 3600)]
    public int ProbeTimeoutSeconds { get; set; } = 10;

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Destination, nameof(Destination)))
        {
            return;
        }

        var backend = OpenBackend();
        var target = TargetName(backend.VirtualMachine.Target);
        MirrorStartRequest request;
        try
        {
            request = new MirrorStartRequest
            {
                Drive = DriveOrNull,
                Destination = ImageLocation.Parse(Destination),
                Format = Format,
                Sync = Sync,
                ReuseExisting = ReuseExisting,
                BandwidthMBps = BandwidthMBps,
                ProbeTimeout = TimeSpan.FromSeconds(ProbeTimeoutSeconds),
            };
        }
        catch (ArgumentException ex)
        {
            WriteError(ToErrorRecord(ex, Destination));
            return;
        }

        var plan = TryRun(token => backend.PlanStartAsync(request, token), target);
        if (plan is null)
        {
            return;
        }

        var what = $"Mirror drive '{plan.Disk.Drive}' ({plan.Disk.Source}) to {plan.Destination} as {plan.Format}, {(plan.CreatesDestination ? "creating it" : "reusing the existing image")}:{Environment.NewLine}{plan.Describe()}";
        if (!ShouldProcess($"{plan.VirtualMachine.Name}:{plan.Disk.Drive} on {backend.VirtualMachine.Host.Name}", what))
        {
            return;
        }

        var job = TryRun(token => backend.StartAsync(plan, token), target);
        if (job is null)
        {
            return;
        }

        if (Wait)
        {
            var options = new MirrorWaitOptions { Timeout = TimeoutSeconds > 0 ? TimeSpan.FromSeconds(TimeoutSeconds) : null };
            job = TryRun(token => backend.WaitAsync(plan.Disk.Drive, options, token), job);
        }

        if (job is not null && PassThru)
        {
            WriteObject(job);
        }
    }
}
