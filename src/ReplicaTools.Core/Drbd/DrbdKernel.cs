using System.Globalization;
using System.Text.Json;
using ReplicaTools.Core.Iscsi;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Drbd;

/// <summary>What the DRBD kernel module reports on one host.</summary>
/// <param name="ModuleLoaded">False when drbdsetup cannot reach the module (not loaded, cannot be loaded).</param>
/// <param name="Problem">drbdsetup's message when the module is not there.</param>
/// <param name="Resources">The resources that are up (empty when none, or when the module is not there).</param>
public sealed record DrbdKernelStatus(bool ModuleLoaded, string? Problem, IReadOnlyList<DrbdResourceStatus> Resources)
{
    public DrbdResourceStatus? Resource(string name) => Resources.FirstOrDefault(r => r.Name == name);
}

/// <summary>
/// The part of DRBD that lives in the kernel: bringing a resource up and down, changing roles, its live status and its
/// block device. Everything else ReplicaTools does with DRBD (configuration, validation by drbdadm, metadata with
/// drbdmeta) runs as plain commands. Production uses <see cref="DrbdUtilsKernel"/>; the test lab, whose machines have
/// no DRBD module, substitutes a simulation at exactly this seam.
/// </summary>
public interface IDrbdKernel
{
    /// <summary><c>drbdsetup status [RESOURCE] --json</c> on the host.</summary>
    Task<DrbdKernelStatus> StatusAsync(IReplicaHost host, string? resource, CancellationToken cancellationToken = default);

    /// <summary>Runs a step that needs the kernel module: <c>drbdadm up|down|primary|secondary</c> (see <see cref="DrbdCommands.IsKernelStep"/>).</summary>
    Task RunAsync(IReplicaHost host, PlannedCommand step, CancellationToken cancellationToken = default);

    /// <summary>The block device of minor <paramref name="minor"/> on the host (/dev/drbdN).</summary>
    string DevicePath(IReplicaHost host, int minor);
}

/// <summary>The real kernel module, through drbd-utils on the host.</summary>
public sealed class DrbdUtilsKernel : IDrbdKernel
{
    public static DrbdUtilsKernel Instance { get; } = new();

    private DrbdUtilsKernel()
    {
    }

    public async Task<DrbdKernelStatus> StatusAsync(IReplicaHost host, string? resource, CancellationToken cancellationToken = default)
    {
        var arguments = new List<string> { "drbdsetup", "status" };
        if (resource is not null)
        {
            arguments.Add(resource);
        }

        arguments.Add("--json");
        CommandResult result;
        try
        {
            result = await host.RunAsync(new CommandSpec(arguments) { Timeout = DrbdCommands.QuickTimeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        }
        catch (ProgramNotFoundException ex)
        {
            throw DrbdErrors.UtilsMissing(host.Name, ex.Message);
        }

        if (result.ExitCode == 0)
        {
            try
            {
                return new DrbdKernelStatus(true, null, result.StandardOutput.Trim().Length == 0 ? Array.Empty<DrbdResourceStatus>() : DrbdStatusJson.Parse(result.StandardOutput));
            }
            catch (JsonException ex)
            {
                throw new ReplicaException("DrbdStatusUnreadable", ReplicaErrorCategory.InvalidResult,
                    $"On host '{host.Name}', drbdsetup status --json printed something that is not its JSON status ({ex.Message}).", host.Name, resource);
            }
        }

        var error = result.StandardError;
        if (error.Contains("No such resource", StringComparison.Ordinal))
        {
            return new DrbdKernelStatus(true, null, Array.Empty<DrbdResourceStatus>());
        }

        if (error.Contains("modprobe", StringComparison.OrdinalIgnoreCase) || error.Contains("netlink", StringComparison.OrdinalIgnoreCase) || error.Contains("kernel module", StringComparison.OrdinalIgnoreCase))
        {
            return new DrbdKernelStatus(false, CommandFailedException.StderrTail(error), Array.Empty<DrbdResourceStatus>());
        }

        throw new CommandFailedException(result);
    }

    public async Task RunAsync(IReplicaHost host, PlannedCommand step, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(step);
        var result = await host.RunAsync(new CommandSpec(step.Command.Arguments) { Timeout = step.Command.Timeout, ThrowOnFailure = false }, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw DrbdErrors.KernelStepFailed(host.Name, step, result.StandardError);
        }
    }

    public string DevicePath(IReplicaHost host, int minor) => "/dev/drbd" + minor.ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// Where a host keeps what a replicated disk needs besides DRBD itself. The defaults are the distributions' own places;
/// the test lab, whose hosts share one filesystem, gives each host its own.
/// </summary>
/// <param name="ConfigDirectory">DRBD's per-resource files (/etc/drbd.conf includes drbd.d/*.res).</param>
/// <param name="NbdStateDirectory">The NBD export state directory (null: New-NbdExport's default).</param>
/// <param name="TgtConfigDirectory">tgt's conf.d directory.</param>
/// <param name="TgtControlPort">The tgtd to use (tgtadm -C).</param>
public sealed record DrbdHostLayout(
    string ConfigDirectory = DrbdHostLayout.DefaultConfigDirectory,
    string? NbdStateDirectory = null,
    string TgtConfigDirectory = IscsiTargetRequest.DefaultConfigDirectory,
    int TgtControlPort = 0)
{
    public const string DefaultConfigDirectory = "/etc/drbd.d";

    /// <summary>The resource file: CONFIG_DIRECTORY/NAME.res.</summary>
    public string ConfigFile(string resource) => $"{ConfigDirectory.TrimEnd('/')}/{resource}.res";
}

/// <summary>The kernel and the per-host layout replicated-disk operations use.</summary>
public sealed class DrbdEnvironment
{
    public DrbdEnvironment(IDrbdKernel kernel, Func<IReplicaHost, DrbdHostLayout> layout)
    {
        Kernel = kernel;
        Layout = layout;
    }

    /// <summary>The real kernel and the default layout on every host.</summary>
    public static DrbdEnvironment Default { get; } = new(DrbdUtilsKernel.Instance, _ => new DrbdHostLayout());

    public IDrbdKernel Kernel { get; }

    public Func<IReplicaHost, DrbdHostLayout> Layout { get; }
}
