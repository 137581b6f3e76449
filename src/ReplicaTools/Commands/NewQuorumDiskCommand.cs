using System.Management.Automation;
using ReplicaTools.Core;
using ReplicaTools.Core.Quorum;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.New, "QuorumDisk", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(QuorumDisk), ParameterSetName = new[] { LibvirtSet, QmpSet })]
[OutputType(typeof(QuorumDefinition), ParameterSetName = new[] { DefinitionSet })]
public sealed class NewQuorumDiskCommand : QuorumCmdlet
{
    /// <summary>No VM: validate and create the replicas, output the definition (-blockdev JSON, libvirt snippet).</summary>
    public const string DefinitionSet = "Definition";

    /// <summary>The replicas: paths on the VM host, nfs:// or nbd:// URLs, DiskImage or QuorumReplica objects.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    public object[] Replica { get; set; } = Array.Empty<object>();

    [Parameter(Mandatory = true)]
    [ValidateRange(1, 64)]
    public int VoteThreshold { get; set; }

    [Parameter]
    public QuorumReadPattern ReadPattern { get; set; } = QuorumReadPattern.Quorum;

    [Parameter]
    public SwitchParameter RewriteCorrupted { get; set; }

    [Parameter]
    public SwitchParameter Blkverify { get; set; }

    /// <summary>The format of replicas that are created; existing replicas keep theirs.</summary>
    [Parameter]
    public DiskImageFormat? Format { get; set; }

    /// <summary>A string so that both PowerShell's 20GB (a number) and "20G" bind.</summary>
    [Parameter]
    public string? Size { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    public string? NodeName { get; set; }

    [Parameter]
    public string? DeviceDriver { get; set; }

    [Parameter]
    public SwitchParameter NoDevice { get; set; }

    /// <summary>For a bare QEMU: a second QMP socket of the same QEMU that the event recorder keeps for itself.</summary>
    [Parameter(ParameterSetName = QmpSet)]
    public string? EventQmpSocket { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = DefinitionSet)]
    public SwitchParameter NoAttach { get; set; }

    protected override void ProcessRecord()
    {
        var session = ResolveSession();
        QuorumDiskRequest request;
        try
        {
            request = new QuorumDiskRequest
            {
                Replicas = Replica.Select(r => ToInput(r, session)).ToArray(),
                VoteThreshold = VoteThreshold,
                ReadPattern = ReadPattern,
                RewriteCorrupted = RewriteCorrupted,
                Blkverify = Blkverify,
                Format = Format,
                Size = string.IsNullOrEmpty(Size) ? null : StorageCmdletHelpers.ParseSize(Size),
                Force = Force,
                Drive = DriveOrNull,
                NodeName = string.IsNullOrEmpty(NodeName) ? null : NodeName,
                DeviceDriver = string.IsNullOrEmpty(DeviceDriver) ? null : DeviceDriver,
                NoDevice = NoDevice,
                ProbeTimeout = TimeSpan.FromSeconds(ProbeTimeoutSeconds),
            };
        }
        catch (ArgumentException ex)
        {
            ThrowTerminating(ex, Replica);
            return;
        }

        if (ParameterSetName == DefinitionSet)
        {
            Define(session, request);
            return;
        }

        var manager = OpenManager();
        var target = TargetName(manager.Vm.Target);
        var plan = TryRun(token => manager.PlanAttachAsync(request, EventQmpSocket, token), target);
        if (plan is null)
        {
            return;
        }

        var what = $"Attach quorum disk '{plan.Definition.Drive}' ({plan.Definition.Replicas.Count} replicas, vote-threshold {plan.Definition.VoteThreshold}" +
                   $"{(plan.Creates.Count > 0 ? $", creating {plan.Creates.Count} of them" : string.Empty)}):{Environment.NewLine}{plan.Describe()}";
        if (!ShouldProcess($"{manager.Vm.Name} on {manager.Vm.Host.Name}", what))
        {
            return;
        }

        if (plan.Definition.EventFile is null)
        {
            WriteWarning($"No event recorder for {manager.Vm.DisplayName}: give -EventQmpSocket (a second -qmp socket of this QEMU) to keep QUORUM_* events; without it Get-QuorumDisk sees only the events sent while it is connected.");
        }

        var disk = TryRun(token => manager.AttachAsync(plan, EventQmpSocket, token), target);
        if (disk is not null)
        {
            WriteObject(disk);
        }
    }

    private void Define(ReplicaSession session, QuorumDiskRequest request)
    {
        var builder = new QuorumDiskBuilder(session);
        var plan = TryRun(token => builder.PlanAsync(request, token), session.HostName);
        if (plan is null)
        {
            return;
        }

        foreach (var warning in plan.Warnings)
        {
            WriteWarning(warning);
        }

        if (plan.Creates.Count > 0)
        {
            var what = $"Create {plan.Creates.Count} missing replica(s) of {Core.Text.ByteSize.Format(plan.Size)}:{Environment.NewLine}{plan.Describe()}";
            if (!ShouldProcess($"quorum disk '{plan.Definition.Drive}' on {session.HostName}", what))
            {
                return;
            }

            if (!TryRun(token => builder.CreateReplicasAsync(plan, token), session.HostName))
            {
                return;
            }
        }

        WriteObject(plan.Definition);
    }

    /// <summary>A replica as given: text (a relative local path is resolved), a DiskImage, a QuorumReplica or a FileInfo.</summary>
    private QuorumReplicaInput ToInput(object item, ReplicaSession session) => (item is PSObject ps ? ps.BaseObject : item) switch
    {
        string text => new QuorumReplicaInput(StorageCmdletHelpers.ResolvePath(this, session, text)),
        DiskImage image => new QuorumReplicaInput(image.Path, image.HostName),
        QuorumReplica replica => new QuorumReplicaInput(replica.Location, replica.HostName),
        FileInfo file => new QuorumReplicaInput(file.FullName, ReplicaSession.Local.HostName),
        null => throw new ArgumentException("-Replica contains a null entry.", nameof(Replica)),
        var other => throw new ArgumentException($"-Replica: a {other.GetType().Name} ('{other}') is not a replica; give a path, an nfs:// or nbd:// URL, or a DiskImage object.", nameof(Replica)),
    };
}
