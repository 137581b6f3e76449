using ReplicaTools.TestLab;

namespace ReplicaTools.Tests.Storage;

/// <summary>A paused QEMU (no guest, -S) that opens an image read-write and so holds its lock, as a running VM would.</summary>
public sealed class QemuHolder : IDisposable
{
    private readonly string pidFile;

    public QemuHolder(string image, string format)
    {
        pidFile = Path.Combine(Path.GetTempPath(), $"rt-holder-{Guid.NewGuid():N}.pid");
        Tool.Run("qemu-system-x86_64", "-machine", "none", "-S", "-nodefaults", "-display", "none",
            "-drive", $"if=none,id=d0,format={format},file={image.Replace(",", ",,")}", "-daemonize", "-pidfile", pidFile);
        Pid = int.Parse(File.ReadAllText(pidFile).Trim());
    }

    public int Pid { get; }

    public void Dispose()
    {
        try
        {
            System.Diagnostics.Process.GetProcessById(Pid).Kill();
            for (var i = 0; i < 100 && File.Exists($"/proc/{Pid}/stat") && !File.ReadAllText($"/proc/{Pid}/stat").Contains(") Z", StringComparison.Ordinal); i++)
            {
                Thread.Sleep(50);
            }
        }
        catch (ArgumentException)
        {
        }

        File.Delete(pidFile);
    }
}
