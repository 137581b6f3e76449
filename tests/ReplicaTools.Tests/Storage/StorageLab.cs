using ReplicaTools.Core;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Storage;

/// <summary>A fact that needs root and loop-mounted btrfs; skipped (with the reason) where the machine cannot host it.</summary>
public sealed class BtrfsFactAttribute : FactAttribute
{
    public BtrfsFactAttribute()
    {
        if (!BtrfsVolume.IsSupported(out var why))
        {
            Skip = why;
        }
    }
}

/// <summary>A fact that needs the nfs-ganesha lab (root, btrfs, ganesha, rpcbind).</summary>
public sealed class NfsFactAttribute : FactAttribute
{
    public NfsFactAttribute()
    {
        if (!NfsLab.IsSupported(out var why))
        {
            Skip = why;
        }
    }
}

/// <summary>One btrfs loop volume per test class.</summary>
public sealed class BtrfsFixture : IDisposable
{
    private readonly Lazy<BtrfsVolume> volume = new(() => BtrfsVolume.Create(512L << 20));

    public BtrfsVolume Volume => volume.Value;

    public void Dispose()
    {
        if (volume.IsValueCreated)
        {
            volume.Value.Dispose();
        }
    }
}

/// <summary>The two-server NFS lab, started lazily by the first test that needs it, stopped after the class.</summary>
public sealed class NfsFixture : IAsyncLifetime
{
    private NfsLab? lab;

    public NfsLab Lab => lab ?? throw new InvalidOperationException("The NFS lab is not started.");

    public async Task InitializeAsync()
    {
        if (NfsLab.IsSupported(out _))
        {
            lab = await NfsLab.StartAsync();
        }
    }

    public async Task DisposeAsync()
    {
        if (lab is not null)
        {
            await lab.DisposeAsync();
        }
    }
}

/// <summary>Collects what the core reports, to assert on warnings and progress.</summary>
public sealed class RecordingReporter : IOperationReporter
{
    public List<string> Verbose { get; } = new();

    public List<string> Warnings { get; } = new();

    public List<OperationProgress> Progress { get; } = new();

    void IOperationReporter.Verbose(string message)
    {
        lock (Verbose)
        {
            Verbose.Add(message);
        }
    }

    void IOperationReporter.Warning(string message)
    {
        lock (Warnings)
        {
            Warnings.Add(message);
        }
    }

    void IOperationReporter.Progress(OperationProgress progress)
    {
        lock (Progress)
        {
            Progress.Add(progress);
        }
    }
}

/// <summary>Writes test data into images with qemu-io (the tool, not the code under test).</summary>
public static class ImageData
{
    /// <summary>Writes <paramref name="length"/> bytes of <paramref name="pattern"/> at <paramref name="offset"/>.</summary>
    public static void Write(string image, string format, long offset, long length = 1, byte pattern = 0xcd) =>
        Tool.Run("timeout", new[] { "-s", "KILL", "60", "qemu-io", "-f", format, "-c", $"write -P 0x{pattern:x2} {offset} {length}", image });

    public static void Create(string image, string format, string size) => Tool.Run("qemu-img", "create", "-q", "-f", format, image, size);
}
