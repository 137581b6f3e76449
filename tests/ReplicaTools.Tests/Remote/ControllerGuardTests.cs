using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ReplicaTools.Core;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;
using ReplicaTools.Tests.Clone;

namespace ReplicaTools.Tests.Remote;

/// <summary>
/// Field report (issue 9, case 4): the PowerShell running Invoke-NbdClone was killed (SIGKILL) mid-copy; the copier on
/// the destination host kept writing, and the lock that should have kept a retry out was already free. Here the
/// controller is a real process that holds the commands' pipes, as PowerShell does, and is killed with SIGKILL; the
/// commands are the exact ones the module runs (the SSH ones through the session's multiplexed connection).
/// </summary>
[Collection(LabCollection.Name)]
public sealed class ControllerGuardTests : IAsyncLifetime
{
    private readonly SshLab lab;
    private readonly SshHost ssh;
    private readonly string directory;
    private readonly List<string> markers = new();

    public ControllerGuardTests(LabFixture fixture)
    {
        lab = fixture.Lab;
        ssh = lab[0].CreateHost();
        directory = Path.Combine("/tmp", "rtguard-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(directory);
    }

    public Task InitializeAsync() => ssh.ConnectAsync();

    public async Task DisposeAsync()
    {
        foreach (var marker in markers)
        {
            Tool.TryRun("pkill", new[] { "-9", "-f", $"^sleep {marker}$" });
        }

        await ssh.DisconnectAsync();
        Directory.Delete(directory, recursive: true);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AGuardedChild_EndsWithItsKilledController_WhereAnUnguardedOneRunsOn(bool overSsh)
    {
        var host = overSsh ? (IReplicaHost)ssh : LocalHost.Instance;
        var guarded = NewMarker();
        var unguarded = NewMarker();
        using var controller = Controller.Start(
            (Argv(host, ControllerGuard.Wrap(new CommandSpec("sleep", guarded))), false),
            (Argv(host, new CommandSpec("sleep", unguarded)), false));
        Assert.True(await WaitUntilAsync(() => Running(guarded) && Running(unguarded), TimeSpan.FromSeconds(20)), "the children did not start");

        controller.Kill();

        Assert.True(await WaitUntilAsync(() => !Running(guarded), TimeSpan.FromSeconds(10)), "the guarded child outlived its controller by more than 10 s");
        Assert.True(Running(unguarded), "without the guard a child that writes nothing outlives its controller (the fault the guard exists for)");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ALockWhoseControllerWasKilled_IsTakenOnlyOnceItsChildrenEnded_AndALiveHolderIsRefusedByName(bool overSsh)
    {
        var host = overSsh ? (IReplicaHost)ssh : LocalHost.Instance;
        var lockPath = Path.Combine(directory, "dest.lock");
        var child = NewMarker();

        // Run A: the lock, and a copier-like child under it that ignores SIGTERM (the guard's SIGKILL ends it 5 s later).
        var copier = ControllerGuard.Wrap(new CommandSpec("sh", "-c", "trap '' TERM; exec sleep \"$1\"", "rt", child), lockPath);
        using var controller = Controller.Start(
            (Argv(host, RemoteLock.BuildHolderCommand(lockPath, "Invoke-NbdClone run rAAAAAAA (pid 1)")), true),
            (Argv(host, copier), false));
        Assert.True(await WaitUntilAsync(() => Running(child), TimeSpan.FromSeconds(20)), "run A's child did not start");

        // While run A's controller lives, run B is refused at once, and told who holds the lock.
        var refused = await Assert.ThrowsAsync<LockHeldException>(() => RemoteLock.AcquireAsync(host, lockPath, "run B"));
        Assert.Equal("Invoke-NbdClone run rAAAAAAA (pid 1)", refused.Holder);
        Assert.Contains("run rAAAAAAA", refused.Message);

        controller.Kill();
        await Task.Delay(300); // a retry a moment later, as a cron job or an operator would
        var clock = Stopwatch.StartNew();
        var reporter = new RecordingReporter();
        using (OperationContext.Use(reporter))
        {
            await using var taken = await RemoteLock.AcquireAsync(host, lockPath, "run B");
            Assert.False(Running(child), "the lock was free while run A's copier still ran");
            Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(40));
            Assert.Equal("run B", taken.Owner);
        }

        Assert.Contains(reporter.Warnings, w => w.Contains("run rAAAAAAA", StringComparison.Ordinal) && w.Contains("waiting", StringComparison.Ordinal));
        Assert.Equal("released run B", File.ReadAllText(lockPath + ".owner").Trim());
    }

    private string NewMarker()
    {
        var marker = $"{3000 + Random.Shared.Next(1000)}.{Random.Shared.Next(100000, 999999)}";
        markers.Add(marker);
        return marker;
    }

    private static bool Running(string marker) => Tool.TryRun("pgrep", new[] { "-f", $"^sleep {marker}$" }).ExitCode == 0;

    /// <summary>What the controller runs for <paramref name="command"/>: the command itself, or the module's exact ssh invocation.</summary>
    private static string[] Argv(IReplicaHost host, CommandSpec command) => host is SshHost ssh
        ? new[] { "ssh" }.Concat(ssh.BuildSshArguments(command, null)).ToArray()
        : command.Arguments.ToArray();

    private static async Task<bool> WaitUntilAsync(Func<bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }

            await Task.Delay(100);
        }

        return true;
    }

    /// <summary>
    /// A controller process standing in for PowerShell: it starts each command with pipes for its standard streams (as
    /// .NET does), optionally waits for its first output line, and then sleeps until it is killed.
    /// </summary>
    private sealed class Controller : IDisposable
    {
        private const string Program = """
import json, subprocess, sys, time
children = []
for argv, wait in json.loads(sys.argv[1]):
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    children.append(child)
    if wait:
        line = child.stdout.readline().decode().strip()
        if line != "locked":
            sys.exit("expected 'locked', got %r: %s" % (line, child.stderr.read().decode()))
print("ready", flush=True)
time.sleep(100000)
""";

        private readonly Process process;

        private Controller(Process process) => this.process = process;

        public static Controller Start(params (string[] Argv, bool WaitForLocked)[] commands)
        {
            var start = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add(Program);
            start.ArgumentList.Add(JsonSerializer.Serialize(commands.Select(c => new object[] { c.Argv, c.WaitForLocked })));
            var process = Process.Start(start)!;
            var ready = process.StandardOutput.ReadLine();
            if (ready != "ready")
            {
                Assert.Fail($"the controller did not start its commands: {ready} {process.StandardError.ReadToEnd()}");
            }

            return new Controller(process);
        }

        /// <summary>SIGKILL: the controller cannot close anything itself; the kernel closes its pipe ends.</summary>
        public void Kill() => Tool.Run("kill", "-9", process.Id.ToString(CultureInfo.InvariantCulture));

        public void Dispose()
        {
            if (!process.HasExited)
            {
                process.Kill();
            }

            process.WaitForExit(10_000);
            process.Dispose();
        }
    }
}
