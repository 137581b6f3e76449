using ReplicaTools.TestLab;

namespace ReplicaTools.Tests;

/// <summary>The sshd lab, started once for every integration test and stopped after the last one, pass or fail.</summary>
public sealed class LabFixture : IAsyncLifetime
{
    public SshLab Lab { get; private set; } = null!;

    public async Task InitializeAsync() => Lab = await SshLab.StartAsync();

    public async Task DisposeAsync() => await Lab.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class LabCollection : ICollectionFixture<LabFixture>
{
    public const string Name = "lab";
}
