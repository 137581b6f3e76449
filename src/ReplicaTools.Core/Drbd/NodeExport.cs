using ReplicaTools.Core.Iscsi;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Drbd;

/// <summary>
/// The export of a replicated disk on one node, through the module's own NBD (nbd-server) and iSCSI (tgt) machinery:
/// running on the primary, configured but stopped (standby) on the secondary.
/// </summary>
internal sealed class NodeExport
{
    private readonly IReplicaHost host;
    private readonly DrbdResourceConfig config;
    private readonly DrbdNodeConfig node;
    private readonly DrbdHostLayout layout;
    private readonly string device;
    private NbdExport? nbdExport;
    private IscsiTarget? iscsiTarget;
    private bool standbyFile;

    public NodeExport(IReplicaHost host, DrbdResourceConfig config, DrbdNodeConfig node, DrbdHostLayout layout, string device)
    {
        this.host = host;
        this.config = config;
        this.node = node;
        this.layout = layout;
        this.device = device;
    }

    public ReplicatedDiskExportState State { get; private set; }

    /// <summary>The running export's URI.</summary>
    public string? Uri { get; private set; }

    private ReplicatedDiskExport Protocol => config.Export.Protocol;

    private NbdExportManager Nbd => new(host, layout.NbdStateDirectory);

    private IscsiTargetManager Iscsi => new(host, layout.TgtConfigDirectory, layout.TgtControlPort);

    /// <summary>Finds out whether the export runs, stands by, or is missing on the node.</summary>
    public async Task<NodeExport> ProbeAsync(CancellationToken cancellationToken)
    {
        switch (Protocol)
        {
            case ReplicatedDiskExport.Nbd:
                nbdExport = (await Nbd.ListAsync(n => n == config.Export.Name, warnAboutStale: false, cancellationToken).ConfigureAwait(false)).FirstOrDefault();
                var plan = await NbdPlanAsync(cancellationToken).ConfigureAwait(false);
                var test = await host.RunAsync(new CommandSpec("test", "-f", plan.ConfigFile!) { Timeout = DrbdCommands.QuickTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
                standbyFile = test.ExitCode == 0;
                State = nbdExport is { State: NbdExportState.Running } ? ReplicatedDiskExportState.Running : standbyFile ? ReplicatedDiskExportState.Standby : ReplicatedDiskExportState.Missing;
                Uri = State == ReplicatedDiskExportState.Running ? nbdExport!.Uri : null;
                break;
            case ReplicatedDiskExport.Iscsi:
                iscsiTarget = (await Iscsi.ListQuietlyAsync(cancellationToken).ConfigureAwait(false)).FirstOrDefault(t => t.Iqn == config.Export.Iqn);
                State = iscsiTarget?.State switch
                {
                    IscsiTargetState.Running => ReplicatedDiskExportState.Running,
                    IscsiTargetState.Standby or IscsiTargetState.Stopped => ReplicatedDiskExportState.Standby,
                    _ => ReplicatedDiskExportState.Missing,
                };
                Uri = State == ReplicatedDiskExportState.Running ? iscsiTarget!.Uri : null;
                break;
            default:
                State = ReplicatedDiskExportState.None;
                break;
        }

        return this;
    }

    /// <summary>Starts the export here (this node is, or is about to be, primary). Null when it already runs.</summary>
    public async Task<ReplicatedDiskAction?> PlanStartAsync(CancellationToken cancellationToken)
    {
        if (Protocol == ReplicatedDiskExport.None || State == ReplicatedDiskExportState.Running)
        {
            return null;
        }

        var description = $"start the {Protocol} export of {config.Name}";
        if (Protocol == ReplicatedDiskExport.Nbd)
        {
            var manager = Nbd;
            var plan = await NbdPlanAsync(cancellationToken).ConfigureAwait(false);
            var stale = nbdExport;
            var steps = (stale is null ? Array.Empty<PlannedCommand>() : manager.PlanRemoval(stale)).Concat(plan.Commands).ToArray();
            return new ReplicatedDiskAction(host.Name, description, steps, async token =>
            {
                if (stale is not null)
                {
                    await manager.RemoveAsync(stale, cancellationToken: token).ConfigureAwait(false);
                }

                await manager.StartAsync(plan, token).ConfigureAwait(false);
            });
        }

        var iscsi = Iscsi;
        var target = iscsiTarget is { State: IscsiTargetState.Standby or IscsiTargetState.Stopped } configured
            ? await iscsi.PlanActivationAsync(configured, cancellationToken).ConfigureAwait(false)
            : await iscsi.PlanAsync(IscsiRequest(start: true), resolveBackingStore: false, cancellationToken).ConfigureAwait(false);
        return new ReplicatedDiskAction(host.Name, description, ShowingFiles(target), token => iscsi.CreateAsync(target, token));
    }

    /// <summary>Configures the export without starting it (this node is secondary). Null when its configuration is in place or it runs.</summary>
    public async Task<ReplicatedDiskAction?> PlanStandbyAsync(CancellationToken cancellationToken)
    {
        if (Protocol == ReplicatedDiskExport.None || State != ReplicatedDiskExportState.Missing)
        {
            return null;
        }

        var description = $"configure the {Protocol} export of {config.Name} without starting it";
        if (Protocol == ReplicatedDiskExport.Nbd)
        {
            var steps = await NbdStandbyStepsAsync(cancellationToken).ConfigureAwait(false);
            return new ReplicatedDiskAction(host.Name, description, steps, token => RunAsync(steps, token));
        }

        var iscsi = Iscsi;
        var target = await iscsi.PlanAsync(IscsiRequest(start: false), resolveBackingStore: false, cancellationToken).ConfigureAwait(false);
        return new ReplicatedDiskAction(host.Name, description, ShowingFiles(target), token => iscsi.CreateAsync(target, token));
    }

    /// <summary>Stops the running export and leaves it configured (this node is about to become secondary). Null when it does not run.</summary>
    public async Task<ReplicatedDiskAction?> PlanStopAsync(CancellationToken cancellationToken)
    {
        if (State != ReplicatedDiskExportState.Running)
        {
            return null;
        }

        var description = $"stop the {Protocol} export of {config.Name} and keep it configured";
        if (Protocol == ReplicatedDiskExport.Nbd)
        {
            var manager = Nbd;
            var export = nbdExport!;
            var standby = await NbdStandbyStepsAsync(cancellationToken).ConfigureAwait(false);
            return new ReplicatedDiskAction(host.Name, description, manager.PlanRemoval(export).Concat(standby).ToArray(), async token =>
            {
                await manager.RemoveAsync(export, cancellationToken: token).ConfigureAwait(false);
                await RunAsync(standby, token).ConfigureAwait(false);
            });
        }

        var iscsi = Iscsi;
        var target = iscsiTarget!;
        return new ReplicatedDiskAction(host.Name, description, iscsi.PlanStandby(target), token => iscsi.StandbyAsync(target, token));
    }

    /// <summary>Removes the export for good, running or standby. Null when there is none.</summary>
    /// <param name="force">Disconnect iSCSI initiators that are logged in.</param>
    public async Task<ReplicatedDiskAction?> PlanRemoveAsync(bool force, CancellationToken cancellationToken)
    {
        var description = $"remove the {Protocol} export of {config.Name}";
        switch (Protocol)
        {
            case ReplicatedDiskExport.Nbd when nbdExport is not null || standbyFile:
                var manager = Nbd;
                var export = nbdExport;
                var file = (await NbdPlanAsync(cancellationToken).ConfigureAwait(false)).ConfigFile!;
                var steps = (export is null ? Array.Empty<PlannedCommand>() : manager.PlanRemoval(export))
                    .Append(new PlannedCommand(host.Name, new CommandSpec("rm", "-f", "--", file) { Timeout = DrbdCommands.QuickTimeout }, "remove the standby nbd-server configuration"))
                    .ToArray();
                return new ReplicatedDiskAction(host.Name, description, steps, async token =>
                {
                    if (export is not null)
                    {
                        await manager.RemoveAsync(export, cancellationToken: token).ConfigureAwait(false);
                    }

                    await host.RunAsync(steps[^1].Command, token).ConfigureAwait(false);
                });
            case ReplicatedDiskExport.Iscsi when iscsiTarget is not null:
                var iscsi = Iscsi;
                var target = iscsiTarget;
                return new ReplicatedDiskAction(host.Name, description, iscsi.PlanRemoval(target, force), token => iscsi.RemoveAsync(target, force, token));
            default:
                return null;
        }
    }

    private async Task<NbdExportPlan> NbdPlanAsync(CancellationToken cancellationToken)
    {
        var manager = Nbd;
        var request = new NbdExportRequest
        {
            Name = config.Export.Name!,
            Path = device,
            IsDevice = true,
            ListenAddress = node.ExportAddress,
            Port = config.Export.Port,
            Server = NbdServerKind.NbdServer,
            Format = "raw",
        };
        request.Validate(host.Name);
        var directory = await manager.GetStateDirectoryAsync(cancellationToken).ConfigureAwait(false);
        return NbdExportPlan.Create(host.Name, request, directory, device, "raw", config.Export.Port, portIsAutomatic: false, manager.UriHostFor(node.ExportAddress));
    }

    private async Task<PlannedCommand[]> NbdStandbyStepsAsync(CancellationToken cancellationToken)
    {
        var plan = await NbdPlanAsync(cancellationToken).ConfigureAwait(false);
        return new[] { plan.MakeDirectory, plan.WriteConfig!.ShowingInput() };
    }

    private IscsiTargetRequest IscsiRequest(bool start) => new()
    {
        Iqn = config.Export.Iqn!,
        BackingStore = device,
        Lun = config.Export.Lun,
        InitiatorName = config.Export.InitiatorName,
        InitiatorAddress = config.Export.InitiatorAddress,
        Start = start,
    };

    private static IReadOnlyList<PlannedCommand> ShowingFiles(IscsiTargetPlan plan) =>
        plan.Commands.Select(step => step.Command.StandardInput is null ? step : step.ShowingInput()).ToArray();

    private async Task RunAsync(IEnumerable<PlannedCommand> steps, CancellationToken cancellationToken)
    {
        foreach (var step in steps)
        {
            await host.RunAsync(step.Command, cancellationToken).ConfigureAwait(false);
        }
    }
}
