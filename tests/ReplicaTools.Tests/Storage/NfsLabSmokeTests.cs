using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Storage;

public sealed class NfsLabSmokeTests
{
    [NfsFact]
    public async Task Lab_ComesUp_ServesQemuImg_SurvivesOutage_AndCleansUp()
    {
        string root;
        string[] images;
        await using (var lab = await NfsLab.StartAsync())
        {
            root = lab.Root;
            images = lab.Servers.Select(s => s.Volume.ImagePath).ToArray();
            Assert.Equal(2, lab.Servers.Count);
            Assert.Equal(NfsLab.NfsPort, PortMapper.GetPort(100003, 3));
            Assert.Equal(NfsLab.MountPort, PortMapper.GetPort(100005, 3));
            Assert.False(lab.EnsureRegistered());
            var server = lab[0];
            Tool.Run("qemu-img", "create", "-q", "-f", "qcow2", server.Url("smoke.qcow2"), "64M");
            Assert.True(File.Exists(server.LocalPath("smoke.qcow2")));
            Assert.Contains("C", Tool.Run("lsattr", server.LocalPath("smoke.qcow2")).Split(' ')[0]);

            server.SimulateOutage();
            var (code, _, stderr) = Tool.TryRun("timeout", new[] { "-s", "KILL", "10", "qemu-img", "info", server.Url("smoke.qcow2") });
            Assert.Equal(1, code);
            Assert.Contains("nfs", stderr, StringComparison.OrdinalIgnoreCase);
            // The other server still works (rpcbind registrations survive a kill -9).
            Tool.Run("timeout", "-s", "KILL", "10", "qemu-img", "create", "-q", "-f", "raw", lab[1].Url("other.raw"), "1M");

            await server.RestoreAsync();
            Tool.Run("timeout", "-s", "KILL", "10", "qemu-img", "info", server.Url("smoke.qcow2"));
        }

        Assert.False(Directory.Exists(root));
        var (_, loops, _) = Tool.TryRun("losetup", new[] { "-a" });
        Assert.DoesNotContain(root, loops);
        Assert.DoesNotContain(root, File.ReadAllText("/proc/mounts"));
    }
}
