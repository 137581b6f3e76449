using System.Text.Json;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Qemu;

/// <summary>
/// A bare QEMU driven through its QMP socket. QEMU serves one QMP client at a time, so every operation opens a
/// connection, does its work and closes it; nothing is held between cmdlet invocations.
/// </summary>
public sealed class QmpVirtualMachine : VirtualMachine
{
    /// <exception cref="ArgumentException">The path is empty or not absolute.</exception>
    public QmpVirtualMachine(ReplicaSession session, string socketPath)
        : this(VmTarget.Qmp(session, socketPath))
    {
    }

    internal QmpVirtualMachine(VmTarget target)
        : base(target)
    {
    }

    public string SocketPath => Name;

    public Task<QmpClient> ConnectAsync(CancellationToken cancellationToken = default) => QmpClient.ConnectRemoteAsync(Host, SocketPath, cancellationToken);

    /// <summary>Runs <paramref name="action"/> on a fresh QMP connection that is closed afterwards.</summary>
    public async Task<T> WithQmpAsync<T>(Func<QmpClient, Task<T>> action, CancellationToken cancellationToken = default)
    {
        await using var qmp = await ConnectAsync(cancellationToken).ConfigureAwait(false);
        return await action(qmp).ConfigureAwait(false);
    }

    public override Mirror.DriveMirrorBackend CreateMirrorBackend() => new Mirror.QmpDriveMirror(this);

    public override Clone.PointInTimeSource CreatePointInTimeSource(string scratchDirectory) => new Clone.QmpPointInTime(this, scratchDirectory);

    public override async Task<VmRunState> GetStateAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            var status = await WithQmpAsync(q => q.ExecuteAsync("query-status", cancellationToken: cancellationToken), cancellationToken).ConfigureAwait(false);
            return ParseRunState(status);
        }
        catch (QmpConnectionException)
        {
            return VmRunState.ShutOff;
        }
    }

    /// <summary>A query-status reply as a run state.</summary>
    internal static VmRunState ParseRunState(JsonElement status) => status.GetProperty("status").GetString() switch
    {
        "running" => VmRunState.Running,
        "paused" or "prelaunch" or "suspended" or "inmigrate" or "postmigrate" or "finish-migrate" or "save-vm" or "restore-vm" => VmRunState.Paused,
        "shutdown" => VmRunState.ShutOff,
        _ => VmRunState.Other,
    };

    public override async Task<IReadOnlyList<VmDisk>> GetDisksAsync(CancellationToken cancellationToken = default)
    {
        JsonElement blocks;
        try
        {
            blocks = await WithQmpAsync(q => q.ExecuteAsync("query-block", cancellationToken: cancellationToken), cancellationToken).ConfigureAwait(false);
        }
        catch (QmpConnectionException ex)
        {
            throw new VmNotFoundException(Host.Name, SocketPath, ex.Message);
        }

        return ParseQueryBlock(blocks);
    }

    /// <summary>Disks from a query-block reply: devices with a medium, named by qdev id (or legacy drive name).</summary>
    internal static IReadOnlyList<VmDisk> ParseQueryBlock(JsonElement blocks)
    {
        var disks = new List<VmDisk>();
        foreach (var block in blocks.EnumerateArray())
        {
            if (!block.TryGetProperty("inserted", out var inserted))
            {
                continue;
            }

            var deviceId = block.TryGetProperty("qdev", out var qdev) ? QdevId(qdev.GetString()) : null;
            var legacyName = block.TryGetProperty("device", out var device) ? device.GetString() : null;
            var nodeName = inserted.TryGetProperty("node-name", out var node) ? node.GetString() : null;
            var drive = deviceId ?? (string.IsNullOrEmpty(legacyName) ? nodeName : legacyName);
            if (drive is null)
            {
                continue;
            }

            disks.Add(new VmDisk
            {
                Drive = drive,
                DeviceId = deviceId,
                NodeName = nodeName,
                Source = inserted.TryGetProperty("file", out var file) ? file.GetString() : null,
                Format = inserted.TryGetProperty("drv", out var drv) ? drv.GetString() : null,
                VirtualSize = inserted.TryGetProperty("image", out var image) && image.TryGetProperty("virtual-size", out var size) ? size.GetInt64() : null,
            });
        }

        return disks;
    }

    /// <summary>"/machine/peripheral/virtio0/virtio-backend" → "virtio0"; anonymous devices keep their full path.</summary>
    private static string? QdevId(string? qdev)
    {
        if (string.IsNullOrEmpty(qdev))
        {
            return null;
        }

        const string prefix = "/machine/peripheral/";
        if (qdev.StartsWith(prefix, StringComparison.Ordinal))
        {
            var rest = qdev[prefix.Length..];
            var slash = rest.IndexOf('/');
            return slash < 0 ? rest : rest[..slash];
        }

        return qdev;
    }
}
