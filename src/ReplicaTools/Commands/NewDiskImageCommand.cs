using System.Management.Automation;
using ReplicaTools.Core.Storage;
using ReplicaTools.Core.Text;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.New, "DiskImage", SupportsShouldProcess = true)]
[OutputType(typeof(DiskImage))]
public sealed class NewDiskImageCommand : HostCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("FullName")]
    public string Path { get; set; } = string.Empty;

    /// <summary>A string so that both PowerShell's 20GB (a number) and "20G"/"1.5TiB" bind.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyString]
    [Alias("VirtualSize")]
    public string Size { get; set; } = string.Empty;

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(DiskImageFormatCompleter))]
    public string Format { get; set => field = Given(value) ?? "qcow2"; } = "qcow2";

    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(Path, nameof(Path)) || !HasArgument(Size, nameof(Size)))
        {
            return;
        }

        long size;
        DiskImageFormat format;
        try
        {
            size = StorageCmdletHelpers.ParseSize(Size);
            format = DiskImageFormats.Parse(Format);
        }
        catch (ArgumentException ex)
        {
            WriteError(ToErrorRecord(ex, Size));
            return;
        }

        var session = ResolveSession();
        var path = StorageCmdletHelpers.ResolvePath(this, session, Path);
        var service = DiskImageService.For(session);
        var plan = TryRun(token => service.PlanCreateAsync(path, size, format, Force, token), path);
        if (plan is null)
        {
            return;
        }

        var what = $"Create a {format.ToQemuName()} image of {ByteSize.Format(size)}{(plan.ReplacesExisting ? ", replacing the existing one" : string.Empty)}" +
                   (plan.SetsNoCow ? " with No_COW (btrfs)" : string.Empty);
        if (!ShouldProcess(plan.Target, StorageCmdletHelpers.Describe(plan, what)))
        {
            return;
        }

        var image = TryRun(token => service.CreateAsync(plan, token), path);
        if (image is not null)
        {
            WriteObject(image);
        }
    }
}
