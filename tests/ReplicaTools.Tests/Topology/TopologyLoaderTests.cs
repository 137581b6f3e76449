using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Topology;

namespace ReplicaTools.Tests.Topology;

public sealed class TopologyLoaderTests
{
    internal const string Example = """
        # One KVM host and two storage hosts (the README's example).
        defaults:
          user: root
          keyFile: /etc/replicatools/id_ed25519
          sshOptions:
            UserKnownHostsFile: /etc/replicatools/known_hosts
        hosts:
          kvm1:
            address: 192.0.2.10
            roles: [kvm]
          nfs1:
            address: 192.0.2.11
            roles: [storage, nfs]
          nfs2:
            address: 192.0.2.12
            port: 2222
            user: replica
            roles: [storage, nfs]
            jumpHost: bastion.example.net
        disks:
          vm1-root:
            vm: vm1
            host: kvm1
            drive: vda
            format: vdi
            size: 20GB
            copies:
              - host: nfs1
                path: nfs://192.0.2.11/srv/vdis/vm1.vdi
              - host: nfs2
                path: nfs://192.0.2.12/srv/vdis/vm1.vdi
        """;

    [Fact]
    public void Example_ParsesIntoTypedHostsAndDisks_WithDefaultsApplied()
    {
        var topology = TopologyLoader.Parse(Example, "topology.yml");

        Assert.Equal(new[] { "kvm1", "nfs1", "nfs2" }, topology.Hosts.Select(h => h.Name));
        var nfs2 = topology.Hosts["nfs2"];
        Assert.Equal("192.0.2.12", nfs2.HostName);
        Assert.Equal(2222, nfs2.Port);
        Assert.Equal("replica", nfs2.UserName);
        Assert.Equal("bastion.example.net", nfs2.JumpHost);
        Assert.Equal("/etc/replicatools/id_ed25519", nfs2.KeyFilePath);
        Assert.Equal(new[] { "UserKnownHostsFile=/etc/replicatools/known_hosts" }, nfs2.SshOption);
        Assert.Equal("root", topology.Hosts["kvm1"].UserName);
        Assert.Equal(22, topology.Hosts["kvm1"].Port);
        Assert.Equal(new[] { "nfs1", "nfs2" }, topology.Hosts.WithRole("storage").Select(h => h.Name));

        var disk = Assert.Single(topology.Disks);
        Assert.Equal("vm1", disk.VMName);
        Assert.Equal(20L * 1024 * 1024 * 1024, disk.Size);
        Assert.Equal("nfs://192.0.2.11/srv/vdis/vm1.vdi", disk.Copies[0].Path);
        Assert.Equal("nfs2", disk.Copies[1].Host);
    }

    [Fact]
    public void TopologyHost_BecomesConnectionOptions()
    {
        var options = TopologyLoader.Parse(Example, "t.yml").Hosts["nfs2"].ConnectionOptions;
        Assert.Equal("192.0.2.12", options.HostName);
        Assert.Equal("nfs2", options.EffectiveName);
        Assert.Equal("UserKnownHostsFile", options.ExtraOptions[0].Key);
    }

    [Fact]
    public void Transport_IsReadPerHost_OrFromDefaults_AndReachesTheConnectionOptions()
    {
        var topology = TopologyLoader.Parse("""
            defaults:
              transport: sshnet
              knownHostsFile: known_hosts
            hosts:
              win-admin-target:
                address: 192.0.2.20
              kvm1:
                address: 192.0.2.10
                transport: OpenSsh
                sshOptions:
                  ServerAliveInterval: 30
            """, "/etc/replicatools/topology.yml");

        var sshNet = topology.Hosts["win-admin-target"];
        Assert.Equal(SessionTransport.SshNet, sshNet.Transport);
        Assert.Equal(SessionTransport.SshNet, sshNet.ConnectionOptions.Transport);
        Assert.Equal("/etc/replicatools/known_hosts", sshNet.KnownHostsPath);
        Assert.Equal(SessionTransport.OpenSsh, topology.Hosts["kvm1"].ConnectionOptions.Transport);
        Assert.Equal(new[] { "ServerAliveInterval=30" }, topology.Hosts["kvm1"].SshOption);
        Assert.Null(TopologyLoader.Parse(Example, "t.yml").Hosts["kvm1"].Transport);
        Assert.Equal(SessionTransports.Default, TopologyLoader.Parse(Example, "t.yml").Hosts["kvm1"].ConnectionOptions.Transport);
    }

    [Fact]
    public void SshNetHosts_TakeTheDefaultsKnownHostsFile_ButNoOtherSshOptions()
    {
        var host = TopologyLoader.Parse(Example.Replace("  user: root\n", "  user: root\n  transport: SshNet\n", StringComparison.Ordinal), "t.yml").Hosts["nfs1"];

        Assert.Equal(SessionTransport.SshNet, host.Transport);
        Assert.Equal("/etc/replicatools/known_hosts", host.KnownHostsPath);
        Assert.Empty(host.SshOption);
        Assert.Empty(host.ConnectionOptions.ExtraOptions);
    }

    [Theory]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\n    transport: putty\n", 4, 16, "must be one of OpenSsh, SshNet, not 'putty'")]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\n    transport: SshNet\n    sshOptions:\n      ServerAliveInterval: 5\n", 6, 7, "do not apply to transport SshNet")]
    public void TransportErrors_NameFileLineAndColumn(string yaml, int line, int column, string problem)
    {
        var error = Assert.Throws<TopologyException>(() => TopologyLoader.Parse(yaml, "site.yml"));
        Assert.Contains($"site.yml:{line}:{column}", error.Message);
        Assert.Contains(problem, error.Message);
    }

    [Theory]
    [InlineData("hosts:\n  kvm1:\n    adress: 10.0.0.1\n", 3, 5, "unknown key 'adress'")]
    [InlineData("hosts:\n  kvm1:\n    roles: [kvm]\n", 3, 5, "required key 'address' is missing")]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\n    port: 70000\n", 4, 11, "from 1 to 65535")]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\n    roles: [kvm, toaster]\n", 4, 18, "unknown role 'toaster'")]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\ndisks:\n  d1:\n    vm: vm1\n    host: kvm9\n", 7, 11, "host 'kvm9' is not defined")]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\ndisks:\n  d1:\n    vm: vm1\n    host: kvm1\n    size: lots\n", 8, 11, "size 'lots'")]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\n    address: 10.0.0.2\n", 4, 5, "appears twice")]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\n    sshOptions:\n      ControlPath: /tmp/x\n", 5, 7, "cannot be set")]
    [InlineData("hosts:\n  kvm1: [10.0.0.1\n", 3, 1, "not valid YAML")]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\n   bad: indentation\n", 4, 4, "not valid YAML")]
    [InlineData("hosts:\n  kvm1:\n    address: 10.0.0.1\nsettings: {}\n", 4, 1, "unknown key 'settings'")]
    [InlineData("hosts: {}\n", 1, 8, "'hosts' is empty")]
    [InlineData("Hosts:\n  kvm1:\n    address: 10.0.0.1\n", 1, 1, "Did you mean 'hosts'")]
    public void Mistakes_AreReportedWithFileLineAndColumn(string yaml, int line, int column, string problem)
    {
        var error = Assert.Throws<TopologyException>(() => TopologyLoader.Parse(yaml, "/etc/replica/topology.yml"));

        Assert.Equal("/etc/replica/topology.yml", error.FilePath);
        Assert.Contains(problem, error.Message);
        Assert.Equal((line, column), ((int)error.Line, (int)error.Column));
        Assert.StartsWith($"/etc/replica/topology.yml:{line}:{column}: ", error.Message);
        Assert.Equal("TopologyInvalid", error.ErrorId);
    }

    [Fact]
    public void EmptyFile_IsAnError()
    {
        var error = Assert.Throws<TopologyException>(() => TopologyLoader.Parse("", "empty.yml"));
        Assert.Contains("empty", error.Message);
    }

    [Fact]
    public void RelativeKeyFile_IsResolvedAgainstTheTopologyFile()
    {
        var topology = TopologyLoader.Parse("hosts:\n  a:\n    address: 10.0.0.1\n    keyFile: keys/id\n", "/etc/replica/topology.yml");
        Assert.Equal("/etc/replica/keys/id", topology.Hosts["a"].KeyFilePath);
    }

    [Fact]
    public void MissingFile_IsAReadError()
    {
        var error = Assert.Throws<ReplicaTools.Core.ReplicaException>(() => TopologyLoader.Load("/nonexistent/topology.yml"));
        Assert.Equal("TopologyNotReadable", error.ErrorId);
        Assert.Contains("/nonexistent/topology.yml", error.Message);
    }
}
