using System.Management.Automation;
using ReplicaTools.Core.Nbd;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.New, "NbdExport", SupportsShouldProcess = true, DefaultParameterSetName = "Path")]
[OutputType(typeof(NbdExport))]
public sealed class NewNbdExportCommand : HostCmdlet
{
    /// <summary>The file to export (on the target host).</summary>
    [Parameter(ParameterSetName = "Path", Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("FullName")]
    public string Path { get; set; } = string.Empty;

    /// <summary>The block device to export (on the target host).</summary>
    [Parameter(ParameterSetName = "Device", Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Device { get; set; } = string.Empty;

    [Parameter(Position = 1)]
    [ValidateNotNullOrEmpty]
    public string? Name { get; set; }

    [Parameter]
    public SwitchParameter ReadOnly { get; set; }

    /// <summary>0 (the default) picks a free port on the host.</summary>
    [Parameter]
    [ValidateRange(0, 65535)]
    public int Port { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string ListenAddress { get; set; } = "127.0.0.1";

    [Parameter]
    public NbdServerKind Server { get; set; } = NbdServerKind.QemuNbd;

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Format { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Bitmap { get; set; }

    [Parameter]
    [ValidateRange(1, 1024)]
    public int? MaxConnections { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(ParameterSetName == "Device" ? Device : Path, ParameterSetName == "Device" ? nameof(Device) : nameof(Path)))
        {
            return;
        }

        var session = ResolveSession();
        var isDevice = ParameterSetName == "Device";
        var path = isDevice ? Device : Path;
        if (session.IsLocal)
        {
            path = GetUnresolvedProviderPathFromPSPath(path);
        }

        var request = new NbdExportRequest
        {
            Name = Name ?? NbdExportRequest.DefaultNameFor(path),
            Path = path,
            IsDevice = isDevice,
            ReadOnly = ReadOnly,
            Port = Port,
            ListenAddress = ListenAddress,
            Server = Server,
            Format = Format,
            Bitmap = Bitmap,
            MaxConnections = MaxConnections,
        };
        var manager = new NbdExportManager(session.Host);

        // Planning only reads (path, format, free port), so -WhatIf can show the exact commands.
        var plan = TryRun(token => manager.PlanAsync(request, token), path);
        if (plan is null)
        {
            return;
        }

        var action = $"Export as '{request.Name}' at {plan.Uri} ({(request.ReadOnly ? "read-only" : "read-write")}) with these commands:{Environment.NewLine}{plan.Describe()}";
        if (!ShouldProcess($"{plan.Path} on {session.Host.Name}", action))
        {
            return;
        }

        var export = TryRun(token => manager.StartAsync(plan, token), path);
        if (export is not null)
        {
            export.Session = session;
            export.HostName = session.HostName;
            WriteObject(export);
        }
    }
}
