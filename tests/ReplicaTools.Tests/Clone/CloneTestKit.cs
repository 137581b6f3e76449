using System.Globalization;
using ReplicaTools.Core;
using ReplicaTools.Core.Clone;
using ReplicaTools.Core.Remote;
using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Clone;

/// <summary>A guest write the test makes: pattern byte, offset, length.</summary>
public sealed record GuestWrite(byte Pattern, long Offset, long Length);

/// <summary>Disk images with known content and a raw reference kept in step with every write the test makes.</summary>
public static class CloneTestKit
{
    public const long MiB = 1 << 20;

    /// <summary>Creates IMAGE (qcow2 or raw) of <paramref name="size"/> with pattern data written offline, and its raw reference.</summary>
    public static void CreateImage(string image, string format, long size, string reference, IEnumerable<GuestWrite> initial)
    {
        Tool.Run("qemu-img", "create", "-q", "-f", format, image, size.ToString(CultureInfo.InvariantCulture));
        var writes = initial.ToList();
        if (writes.Count > 0)
        {
            var arguments = new List<string> { "-f", format };
            foreach (var w in writes)
            {
                arguments.Add("-c");
                arguments.Add($"write -P 0x{w.Pattern:x2} {w.Offset} {w.Length}");
            }

            arguments.Add(image);
            Tool.Run("qemu-io", arguments);
        }

        Tool.Run("qemu-img", "convert", "-f", format, "-O", "raw", image, reference);
    }

    /// <summary>Applies guest writes to a raw reference file, as the guest applies them to its disk.</summary>
    public static void Apply(string reference, params GuestWrite[] writes)
    {
        using var file = new FileStream(reference, FileMode.Open, FileAccess.Write);
        foreach (var w in writes)
        {
            file.Position = w.Offset;
            var block = new byte[Math.Min(w.Length, MiB)];
            Array.Fill(block, w.Pattern);
            for (var done = 0L; done < w.Length; done += block.Length)
            {
                file.Write(block, 0, (int)Math.Min(block.Length, w.Length - done));
            }
        }
    }

    public static void AssertSameContent(string expected, string actual, string because)
    {
        Assert.True(File.Exists(actual), $"{actual} does not exist ({because})");
        var (code, stdout, stderr) = Tool.TryRun("cmp", new[] { expected, actual });
        Assert.True(code == 0, $"{because}: {expected} and {actual} differ: {stdout}{stderr}");
    }

    /// <summary>The image's content as raw, read offline (the VM must be stopped: a running QEMU caches qcow2 metadata).</summary>
    public static string OfflineRaw(string image, string format, string output)
    {
        Tool.Run("qemu-img", "convert", "-U", "-f", format, "-O", "raw", image, output);
        return output;
    }

    public static string NewDirectory(string stem)
    {
        var directory = Path.Combine("/tmp", $"{stem}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(directory);
        File.SetUnixFileMode(directory, (UnixFileMode)0b111_101_101);
        return directory;
    }

    public static void DeleteDirectory(string directory)
    {
        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Files under /var/tmp (the default scratch directory) whose names carry the VM's key: there must be none after a run.</summary>
    public static string[] ScratchLeftovers(string directory) =>
        Directory.Exists(directory) ? Directory.GetFiles(directory, CloneNames.Prefix + "*") : Array.Empty<string>();
}

/// <summary>Collects what the core reports, so tests can assert on warnings.</summary>
public sealed class RecordingReporter : IOperationReporter
{
    private readonly List<string> warnings = new();
    private readonly List<string> verbose = new();

    public IReadOnlyList<string> Warnings
    {
        get
        {
            lock (warnings)
            {
                return warnings.ToArray();
            }
        }
    }

    public IReadOnlyList<string> VerboseMessages
    {
        get
        {
            lock (verbose)
            {
                return verbose.ToArray();
            }
        }
    }

    public int ProgressCount { get; private set; }

    public int MaxPercent { get; private set; } = -1;

    public void Verbose(string message)
    {
        lock (verbose)
        {
            verbose.Add(message);
        }
    }

    public void Warning(string message)
    {
        lock (warnings)
        {
            warnings.Add(message);
        }
    }

    public void Progress(OperationProgress progress)
    {
        ProgressCount++;
        MaxPercent = Math.Max(MaxPercent, progress.PercentComplete);
    }
}

/// <summary>
/// Wraps the real copier to act at precise moments: <see cref="BeforeCopy"/> runs after the point in time exists and
/// before the copy starts, <see cref="DuringCopy"/> runs concurrently with it. With <see cref="RateLimit"/> a full copy
/// goes through an nbdkit proxy with the rate filter, so it lasts long enough to be interrupted mid-way.
/// </summary>
public sealed class ScriptedCopier : ICloneCopier
{
    private readonly NbdCloneCopier inner = new();

    public Func<NbdExportAddress, string, Task>? BeforeCopy { get; init; }

    public Func<NbdExportAddress, string, Task>? DuringCopy { get; init; }

    /// <summary>e.g. "8M": bytes per second through the proxy.</summary>
    public string? RateLimit { get; init; }

    public NbdExportAddress? LastExport { get; private set; }

    public async Task<CopyOutcome> CopyFullAsync(IReplicaHost host, NbdExportAddress source, string target, bool targetIsBlockDevice, int? connections,
        TimeSpan timeout, string? runLock, Action<double> progress, CancellationToken cancellationToken)
    {
        LastExport = source;
        if (BeforeCopy is not null)
        {
            await BeforeCopy(source, target);
        }

        Task<CopyOutcome> copy;
        if (RateLimit is null)
        {
            copy = inner.CopyFullAsync(host, source, target, targetIsBlockDevice, connections, timeout, runLock, progress, cancellationToken);
        }
        else
        {
            copy = Task.Run(async () =>
            {
                // Guarded under the run's lock, as the real copier runs.
                var command = ControllerGuard.Wrap(new CommandSpec("nbdcopy", "--progress=1", "--", "[", "nbdkit", "--exit-with-parent", "--filter=rate", "nbd", $"uri={source.Uri}", $"rate={RateLimit}", "]", target)
                {
                    Timeout = timeout,
                }, runLock);
                await host.RunAsync(command.WithOutputLines(line =>
                {
                    var slash = line.IndexOf("/100", StringComparison.Ordinal);
                    if (slash > 0 && double.TryParse(line[..slash], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var percent))
                    {
                        progress(percent);
                    }
                }), cancellationToken);
                return new CopyOutcome(-1, "nbdcopy via rate-limited nbdkit");
            });
        }

        if (DuringCopy is not null)
        {
            await Task.WhenAll(copy, DuringCopy(source, target));
        }

        return await copy;
    }

    public async Task<CopyOutcome> CopyDirtyAsync(IReplicaHost host, NbdExportAddress source, string metaContext, string target, TimeSpan timeout,
        string? runLock, Action<double> progress, CancellationToken cancellationToken)
    {
        LastExport = source;
        if (BeforeCopy is not null)
        {
            await BeforeCopy(source, target);
        }

        var copy = inner.CopyDirtyAsync(host, source, metaContext, target, timeout, runLock, progress, cancellationToken);
        if (DuringCopy is not null)
        {
            await Task.WhenAll(copy, DuringCopy(source, target));
        }

        return await copy;
    }
}
