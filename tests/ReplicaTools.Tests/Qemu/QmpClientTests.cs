using System.Text.Json.Nodes;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Qemu;

[Collection(LabCollection.Name)]
public sealed class QmpClientTests : IAsyncLifetime
{
    private readonly LabFixture fixture;
    private readonly string directory = Path.Combine("/tmp", "rtqmp-" + Guid.NewGuid().ToString("N")[..8]);
    private QemuVm vm = null!;

    public QmpClientTests(LabFixture fixture) => this.fixture = fixture;

    public static IEnumerable<object[]> Transports => new[] { new object[] { "local" }, new object[] { "ssh" } };

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(directory);
        var image = Path.Combine(directory, "disk.qcow2");
        Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "64M");
        vm = await QemuVm.StartAsync(directory, "qmpvm", new LabDisk("virtio0", image, "qcow2"));
    }

    public async Task DisposeAsync()
    {
        await vm.DisposeAsync();
        Directory.Delete(directory, recursive: true);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Greeting_Capabilities_AndIdMatchedReplies(string transport)
    {
        await using var qmp = await ConnectAsync(transport);

        Assert.StartsWith("7.", qmp.QemuVersion);
        var replies = await Task.WhenAll(
            qmp.ExecuteAsync("query-status"),
            qmp.ExecuteAsync("query-name"),
            qmp.ExecuteAsync("query-block"));
        Assert.Equal("prelaunch", replies[0].GetProperty("status").GetString());
        Assert.Equal("qmpvm", replies[1].GetProperty("name").GetString());
        Assert.Equal("drive-virtio0", replies[2][0].GetProperty("inserted").GetProperty("node-name").GetString());
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Errors_MapToSpecificExceptions_WithClassAndDescription(string transport)
    {
        await using var qmp = await ConnectAsync(transport);

        var unknown = await Assert.ThrowsAsync<QmpCommandNotFoundException>(() => qmp.ExecuteAsync("no-such-command"));
        Assert.Contains("no-such-command", unknown.Description);
        var device = await Assert.ThrowsAsync<QmpDeviceNotFoundException>(() => qmp.ExecuteAsync("device_del", new JsonObject { ["id"] = "nope" }));
        Assert.Equal("QmpDeviceNotFound", device.ErrorId);
        var generic = await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("block-job-complete", new JsonObject { ["device"] = "no-job" }));
        Assert.Contains("no-job", generic.Message);
        Assert.Contains(vm.SocketPath, generic.Message);

        // The connection stays usable after errors.
        Assert.Equal("prelaunch", (await qmp.ExecuteAsync("query-status")).GetProperty("status").GetString());
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Events_ArriveWhileCommandsRun_AndAreBuffered(string transport)
    {
        await using var qmp = await ConnectAsync(transport);

        await qmp.ExecuteAsync("cont");
        await qmp.ExecuteAsync("stop");

        // Both events may have arrived before the replies: waiting for the second first must not lose the first.
        var stop = await qmp.WaitForEventAsync(e => e.Name == "STOP", TimeSpan.FromSeconds(10));
        var resume = await qmp.WaitForEventAsync(e => e.Name == "RESUME", TimeSpan.FromSeconds(10));
        Assert.True(resume.Timestamp <= stop.Timestamp);
        await Assert.ThrowsAsync<TimeoutException>(() => qmp.WaitForEventAsync(e => e.Name == "SHUTDOWN", TimeSpan.FromMilliseconds(300)));
    }

    [Fact]
    public async Task MissingSocket_IsAClearConnectionError_LocallyAndRemotely()
    {
        var missing = Path.Combine(directory, "nope.qmp");
        var local = await Assert.ThrowsAsync<QmpConnectionException>(() => QmpClient.ConnectLocalAsync(missing));
        Assert.Contains("does not exist", local.Message);

        var remote = await Assert.ThrowsAsync<QmpConnectionException>(() => QmpClient.ConnectRemoteAsync(fixture.Lab[0].CreateHost(), missing));
        Assert.Contains("host2", remote.Message);
        Assert.Contains(missing, remote.Message);
    }

    [Fact]
    public async Task QemuGoingAway_FailsPendingAndLaterCommands()
    {
        await using var qmp = await ConnectAsync("local");
        vm.Kill();

        var error = await Assert.ThrowsAsync<QmpConnectionException>(async () =>
        {
            for (var i = 0; i < 50; i++)
            {
                await qmp.ExecuteAsync("query-status");
                await Task.Delay(100);
            }
        });
        Assert.Contains(vm.SocketPath, error.Message);
    }

    private Task<QmpClient> ConnectAsync(string transport) => transport == "local"
        ? QmpClient.ConnectLocalAsync(vm.SocketPath)
        : QmpClient.ConnectRemoteAsync(fixture.Lab[0].CreateHost(), vm.SocketPath);
}
