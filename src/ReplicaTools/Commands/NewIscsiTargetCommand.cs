using System.Management.Automation;
using ReplicaTools.Core.Iscsi;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.New, "IscsiTarget", SupportsShouldProcess = true)]
[OutputType(typeof(IscsiTarget))]
public sealed class NewIscsiTargetCommand : IscsiCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string Iqn { get; set; } = string.Empty;

    /// <summary>The file or block device the LUN serves, on the target host.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("Device", "Path")]
    public string BackingStore { get; set; } = string.Empty;

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 255)]
    public int Lun { get; set; } = 1;

    /// <summary>Initiator IQNs allowed to log in; with neither this nor -InitiatorAddress, every initiator may.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [AllowEmptyCollection]
    public string[] InitiatorName { get; set; } = Array.Empty<string>();

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [AllowEmptyCollection]
    public string[] InitiatorAddress { get; set; } = Array.Empty<string>();

    protected override void ProcessRecord()
    {
        if (!HasArgument(Iqn, nameof(Iqn)) || !HasArgument(BackingStore, nameof(BackingStore)))
        {
            return;
        }

        var session = ResolveSession();
        var manager = CreateManager(session);
        var request = new IscsiTargetRequest
        {
            Iqn = Iqn,
            BackingStore = StorageCmdletHelpers.ResolvePath(this, session, BackingStore),
            Lun = Lun,
            InitiatorName = InitiatorName,
            InitiatorAddress = InitiatorAddress,
        };
        var plan = TryRun(token => manager.PlanAsync(request, token), Iqn);
        if (plan is null)
        {
            return;
        }

        var access = request.InitiatorName.Count + request.InitiatorAddress.Count == 0 ? "every initiator" : string.Join(", ", request.InitiatorName.Concat(request.InitiatorAddress));
        var action = $"Serve {plan.Request.BackingStore} as LUN {request.Lun} of '{request.Iqn}'{(plan.Uri is null ? string.Empty : $" at {plan.Uri}")} to {access} with these commands:{Environment.NewLine}{plan.Describe()}";
        if (ShouldProcess($"iSCSI target '{request.Iqn}' on {session.Host.Name}", action))
        {
            var target = TryRun(token => manager.CreateAsync(plan, token), Iqn);
            if (target is not null)
            {
                WriteObject(Stamp(target, session));
            }
        }
    }
}
