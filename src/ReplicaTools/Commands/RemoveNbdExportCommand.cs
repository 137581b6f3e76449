using System.Management.Automation;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Operations;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Remove, "NbdExport", SupportsShouldProcess = true, DefaultParameterSetName = "Name")]
public sealed class RemoveNbdExportCommand : HostCmdlet
{
    /// <summary>Exports from Get-NbdExport or New-NbdExport.</summary>
    [Parameter(ParameterSetName = "InputObject", Mandatory = true, ValueFromPipeline = true)]
    [ValidateNotNull]
    public NbdExport[] InputObject { get; set; } = Array.Empty<NbdExport>();

    [Parameter(ParameterSetName = "Name", Mandatory = true, Position = 0)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Name { get; set; } = Array.Empty<string>();

    /// <summary>Seconds between SIGTERM and SIGKILL.</summary>
    [Parameter]
    [ValidateRange(1, 3600)]
    public int GraceSeconds { get; set; } = (int)NbdExportManager.DefaultStopGrace.TotalSeconds;

    protected override void ProcessRecord()
    {
        var session = ResolveSession();
        var manager = new NbdExportManager(session.Host);
        IReadOnlyList<NbdExport> targets;
        if (ParameterSetName == "InputObject")
        {
            targets = InputObject;
        }
        else
        {
            var selection = NbdExportSelection.For(Name, session.Host.Name);
            var exports = TryRun(token => manager.ListAsync(selection.Matcher, warnAboutStale: false, token), session.Host.Name);
            if (exports is null)
            {
                return;
            }

            targets = selection.Select(this, exports, e => e.Name);
        }

        var grace = TimeSpan.FromSeconds(GraceSeconds);
        foreach (var export in targets)
        {
            // An export object knows its session: -InputObject $exports works whatever host they came from.
            var exportSession = ParameterSetName == "InputObject" && export.Session is { } own ? own : session;
            var exportManager = ReferenceEquals(exportSession, session) ? manager : new NbdExportManager(exportSession.Host);
            var plan = exportManager.PlanRemoval(export, grace);
            var server = export.Server == NbdServerKind.NbdServer ? "nbd-server" : "qemu-nbd";
            var action = $"Stop {server} ({(export.ProcessId is { } pid ? $"pid {pid}, " : string.Empty)}{export.State}) and remove the export's files with these commands:{Environment.NewLine}{PlannedCommand.Describe(plan)}";
            if (ShouldProcess($"NBD export '{export.Name}' ({export.Uri}) on {exportSession.Host.Name}", action))
            {
                TryRun(token => exportManager.RemoveAsync(export, grace, token), export);
            }
        }
    }
}
