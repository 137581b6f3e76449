using System.Management.Automation;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.Get, "DiskImage")]
[OutputType(typeof(DiskImage))]
public sealed class GetDiskImageCommand : HostCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    [Alias("FullName")]
    public string[] Path { get; set; } = Array.Empty<string>();

    protected override void ProcessRecord()
    {
        if (!HasArgument(Path, nameof(Path)))
        {
            return;
        }

        var session = ResolveSession();
        var service = DiskImageService.For(session);
        foreach (var item in Path)
        {
            var path = StorageCmdletHelpers.ResolvePath(this, session, item);
            var image = TryRun(token => service.GetAsync(path, token), path);
            if (image is not null)
            {
                WriteObject(image);
            }
        }
    }
}
