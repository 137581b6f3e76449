using System.Management.Automation;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

/// <summary>
/// Compares two images' content. Each side has its own host (-ReferenceSession/-ReferenceHostName,
/// -DifferenceSession/-DifferenceHostName); -Session/-HostName give the default for both.
/// </summary>
[Cmdlet(VerbsData.Compare, "DiskImage")]
[OutputType(typeof(ImageComparison), typeof(bool))]
public sealed class CompareDiskImageCommand : HostCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("Path", "FullName")]
    public string ReferencePath { get; set; } = string.Empty;

    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    public string DifferencePath { get; set; } = string.Empty;

    [Parameter]
    [ValidateNotNull]
    public ReplicaSession? ReferenceSession { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? ReferenceHostName { get; set; }

    [Parameter]
    [ValidateNotNull]
    public ReplicaSession? DifferenceSession { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? DifferenceHostName { get; set; }

    /// <summary>The address the comparing host uses to reach the exporting host's qemu-nbd (images on two hosts only).</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? NbdAddress { get; set; }

    /// <summary>Return only $true (identical) or $false.</summary>
    [Parameter]
    public SwitchParameter Quiet { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(ReferencePath, nameof(ReferencePath)) || !HasArgument(DifferencePath, nameof(DifferencePath)))
        {
            return;
        }

        var defaultSession = ResolveSession();
        var reference = ResolveSession(ReferenceSession, ReferenceHostName, defaultSession);
        var difference = ResolveSession(DifferenceSession, DifferenceHostName, defaultSession);
        var referencePath = StorageCmdletHelpers.ResolvePath(this, reference, ReferencePath);
        var differencePath = StorageCmdletHelpers.ResolvePath(this, difference, DifferencePath);
        var options = new CompareOptions { NbdAddress = NbdAddress };
        var result = TryRun(token => DiskImageComparer.CompareAsync(ImageEndpoint.For(reference, referencePath), ImageEndpoint.For(difference, differencePath), options, token), referencePath);
        if (result is not null)
        {
            WriteVerbose(result.Message);
            WriteObject(Quiet ? result.Identical : result);
        }
    }
}
