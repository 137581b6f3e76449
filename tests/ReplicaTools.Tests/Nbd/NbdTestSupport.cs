using System.Collections.Concurrent;
using System.Security.Cryptography;
using ReplicaTools.Core;
using ReplicaTools.Core.Nbd;

namespace ReplicaTools.Tests.Nbd;

/// <summary>Test images and checks shared by the NBD tests.</summary>
internal static class NbdTestSupport
{
    public const int MiB = 1 << 20;

    /// <summary>
    /// A sparse image of <paramref name="size"/> bytes with random data in every other 1 MiB stripe of the first
    /// <paramref name="dataStripes"/> stripes, holes elsewhere. Returns the number of data bytes.
    /// </summary>
    public static long CreateRandomImage(string path, long size, int dataStripes)
    {
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        stream.SetLength(size);
        var buffer = new byte[MiB];
        long data = 0;
        for (var stripe = 0; stripe < dataStripes; stripe++)
        {
            var offset = (long)stripe * 2 * MiB;
            if (offset + MiB > size)
            {
                break;
            }

            RandomNumberGenerator.Fill(buffer);
            stream.Position = offset;
            stream.Write(buffer);
            data += MiB;
        }

        return data;
    }

    public static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream));
    }

    public static string NewDirectory(string parent, string prefix)
    {
        var directory = Path.Combine(parent, $"{prefix}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(directory);
        return directory;
    }

    /// <summary>Stops and removes every export a test left behind, then the directory; never throws.</summary>
    public static async Task CleanUpAsync(NbdExportManager manager, string? directory)
    {
        try
        {
            foreach (var export in await manager.ListAsync())
            {
                try
                {
                    await manager.RemoveAsync(export, TimeSpan.FromSeconds(3));
                }
                catch (ReplicaException)
                {
                    if (export.ProcessId is { } pid && TestLab.LocalProcesses.CommandLine(pid).Contains(export.PidFile))
                    {
                        TestLab.Tool.TryRun("kill", new[] { "-KILL", pid.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    }
                }
            }
        }
        catch (ReplicaException)
        {
        }

        if (directory is not null)
        {
            try
            {
                Directory.Delete(directory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}

/// <summary>Collects what the core reports, as a cmdlet would show it.</summary>
internal sealed class RecordingReporter : IOperationReporter
{
    public ConcurrentQueue<string> Verboses { get; } = new();

    public ConcurrentQueue<string> Warnings { get; } = new();

    public ConcurrentQueue<OperationProgress> Progresses { get; } = new();

    public void Verbose(string message) => Verboses.Enqueue(message);

    public void Warning(string message) => Warnings.Enqueue(message);

    public void Progress(OperationProgress progress) => Progresses.Enqueue(progress);
}
