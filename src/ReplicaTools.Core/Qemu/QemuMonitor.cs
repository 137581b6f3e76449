using System.Text.Json;
using System.Text.Json.Nodes;
using ReplicaTools.Core.Libvirt;
using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Qemu;

/// <summary>
/// QMP access to a running VM for the length of one operation, whatever its back end: a connection to a bare QEMU's
/// socket (<see cref="QmpClient"/>), or libvirt's passthrough (<c>virsh qemu-monitor-command</c>), which libvirt logs and
/// marks the domain "tainted: custom-monitor" for. Used where libvirt has no API of its own (quorum nodes, for instance).
/// Every command has a timeout: a QEMU whose main loop is blocked (a hung NFS server it has open) must not hang the caller.
/// </summary>
public abstract class QemuMonitor : IAsyncDisposable
{
    protected QemuMonitor(VirtualMachine vm)
    {
        Vm = vm;
    }

    public VirtualMachine Vm { get; }

    public IReplicaHost Host => Vm.Host;

    /// <summary>The default time a QMP command may take.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Opens QMP access to <paramref name="vm"/>; a bare QEMU that does not answer is reported as not running.</summary>
    /// <exception cref="VmNotRunningException">Nothing answers on the QMP socket.</exception>
    public static async Task<QemuMonitor> OpenAsync(VirtualMachine vm, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vm);
        if (vm is LibvirtVirtualMachine libvirt)
        {
            await libvirt.EnsureRunningAsync(cancellationToken).ConfigureAwait(false);
            return new LibvirtMonitor(libvirt);
        }

        var qmp = (QmpVirtualMachine)vm;
        try
        {
            return new SocketMonitor(qmp, await qmp.ConnectAsync(cancellationToken).ConfigureAwait(false));
        }
        catch (QmpConnectionException ex)
        {
            throw new VmNotRunningException(vm, VmRunState.ShutOff, ex.Message);
        }
    }

    /// <summary>The step that runs <paramref name="command"/>, as -WhatIf prints it (a QMP step, or the virsh passthrough).</summary>
    public static PlannedCommand Plan(VirtualMachine vm, string command, JsonObject? arguments, string purpose)
    {
        if (vm is LibvirtVirtualMachine libvirt)
        {
            return new PlannedCommand(vm.Host.Name, LibvirtMonitor.Passthrough(libvirt, command, arguments, DefaultTimeout), purpose);
        }

        return PlannedCommand.ForQmp(vm.Host.Name, new QmpCommand(vm.Name, command, (JsonObject?)arguments?.DeepClone()), purpose);
    }

    /// <summary>Runs a QMP command and returns its "return" value (cloned).</summary>
    /// <exception cref="QmpException">QEMU refused the command (its error class and text are kept).</exception>
    /// <exception cref="ReplicaException">QmpTimeout: no answer within <paramref name="timeout"/>.</exception>
    public abstract Task<JsonElement> ExecuteAsync(string command, JsonObject? arguments = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// The QMP events this monitor has received since it opened and not yet handed out. A bare QEMU sends events to every
    /// connected QMP client; libvirt's passthrough delivers none (libvirt hands them to <c>virsh qemu-monitor-event</c>).
    /// </summary>
    public abstract IReadOnlyList<QmpEvent> TakeEvents();

    /// <summary>Stops the VM's vCPUs (QMP stop; virsh suspend for a domain, so libvirt knows).</summary>
    public abstract Task PauseAsync(CancellationToken cancellationToken = default);

    /// <summary>Resumes the vCPUs (QMP cont; virsh resume).</summary>
    public abstract Task ResumeAsync(CancellationToken cancellationToken = default);

    /// <summary>The step <see cref="PauseAsync"/> or <see cref="ResumeAsync"/> runs, for plans.</summary>
    public static PlannedCommand PlanPause(VirtualMachine vm, bool pause) => vm is LibvirtVirtualMachine libvirt
        ? new PlannedCommand(vm.Host.Name, libvirt.Virsh(pause ? "suspend" : "resume", "--", libvirt.DomainName), pause ? "pause the vCPUs" : "resume the vCPUs")
        : Plan(vm, pause ? "stop" : "cont", null, pause ? "pause the vCPUs" : "resume the vCPUs");

    public abstract ValueTask DisposeAsync();

    protected ReplicaException Timeout(string command, TimeSpan timeout) => new("QmpTimeout", ReplicaErrorCategory.OperationTimeout,
        $"{Vm.DisplayName} did not answer QMP '{command}' within {timeout.TotalSeconds:0} s. Its main loop may be blocked, for example by a hung NFS server it has open.",
        Host.Name, Vm.Name)
    {
        RecommendedAction = "Check the VM's storage servers; QEMU answers again once they do.",
    };

    private sealed class SocketMonitor(QmpVirtualMachine vm, QmpClient client) : QemuMonitor(vm)
    {
        public override async Task<JsonElement> ExecuteAsync(string command, JsonObject? arguments = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        {
            var limit = timeout ?? DefaultTimeout;
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            cancel.CancelAfter(limit);
            try
            {
                return (await client.ExecuteAsync(command, arguments?.DeepClone(), cancel.Token).ConfigureAwait(false)).Clone();
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw Timeout(command, limit);
            }
        }

        public override IReadOnlyList<QmpEvent> TakeEvents()
        {
            var events = new List<QmpEvent>();
            while (client.Events.TryRead(out var e))
            {
                events.Add(e);
            }

            return events;
        }

        public override Task PauseAsync(CancellationToken cancellationToken = default) => ExecuteAsync("stop", null, null, cancellationToken);

        public override Task ResumeAsync(CancellationToken cancellationToken = default) => ExecuteAsync("cont", null, null, cancellationToken);

        public override ValueTask DisposeAsync() => client.DisposeAsync();
    }

    private sealed class LibvirtMonitor(LibvirtVirtualMachine vm) : QemuMonitor(vm)
    {
        private LibvirtVirtualMachine Domain => (LibvirtVirtualMachine)Vm;

        /// <summary>virsh qemu-monitor-command DOMAIN JSON: one QMP command through libvirt's own monitor connection.</summary>
        public static CommandSpec Passthrough(LibvirtVirtualMachine vm, string command, JsonObject? arguments, TimeSpan timeout)
        {
            var message = new JsonObject { ["execute"] = command };
            if (arguments is not null)
            {
                message["arguments"] = arguments.DeepClone();
            }

            var spec = vm.Virsh(new[] { "qemu-monitor-command", "--", vm.DomainName, message.ToJsonString(QmpCommand.Display) }, timeout);
            return new CommandSpec(spec.Arguments) { Timeout = timeout, ThrowOnFailure = false };
        }

        public override async Task<JsonElement> ExecuteAsync(string command, JsonObject? arguments = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        {
            var limit = timeout ?? DefaultTimeout;
            CommandResult result;
            try
            {
                result = await Domain.RunVirshAsync(Passthrough(Domain, command, arguments, limit), cancellationToken).ConfigureAwait(false);
            }
            catch (CommandTimeoutException)
            {
                throw Timeout(command, limit);
            }

            var endpoint = $"{Host.Name}:libvirt domain '{Domain.DomainName}'";
            JsonElement reply;
            try
            {
                reply = JsonDocument.Parse(result.StandardOutput).RootElement.Clone();
            }
            catch (JsonException)
            {
                var text = (result.StandardError + result.StandardOutput).Trim();
                if (text.Contains("failed to get domain", StringComparison.OrdinalIgnoreCase) || text.Contains("Domain not found", StringComparison.OrdinalIgnoreCase))
                {
                    throw new VmNotFoundException(Host.Name, Domain.DomainName, $"libvirt ({Domain.ConnectionUri}) has no such domain.");
                }

                // virsh reports a QMP error as "error: internal error: unable to execute QEMU command 'X': TEXT".
                throw QmpException.Create(endpoint, command, "GenericError", text.Replace("error: ", string.Empty, StringComparison.Ordinal));
            }

            if (reply.TryGetProperty("error", out var error))
            {
                throw QmpException.Create(endpoint, command,
                    error.TryGetProperty("class", out var cls) ? cls.GetString() ?? "GenericError" : "GenericError",
                    error.TryGetProperty("desc", out var desc) ? desc.GetString() ?? string.Empty : string.Empty);
            }

            return reply.TryGetProperty("return", out var value) ? value.Clone() : default;
        }

        public override IReadOnlyList<QmpEvent> TakeEvents() => Array.Empty<QmpEvent>();

        public override async Task PauseAsync(CancellationToken cancellationToken = default) =>
            await Domain.RunVirshAsync(Domain.Virsh("suspend", "--", Domain.DomainName), cancellationToken).ConfigureAwait(false);

        public override async Task ResumeAsync(CancellationToken cancellationToken = default) =>
            await Domain.RunVirshAsync(Domain.Virsh("resume", "--", Domain.DomainName), cancellationToken).ConfigureAwait(false);

        public override ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
