using System.Text;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// Collects a remote command's standard error and picks out the line the host-side wrapper prints before the command
/// starts (see <see cref="RemoteProcessGroup"/>): the command's process group id, which cancelling needs.
/// </summary>
internal sealed class StderrCapture
{
    /// <summary>First byte of the line the remote wrapper prints before it runs the command: ASCII record separator.</summary>
    public const string PidMarker = "\u001ert-pid:";

    private readonly MemoryStream stderr = new();
    private readonly object gate = new();
    private readonly List<byte> pending = new();
    private readonly TaskCompletionSource<int> processGroup = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool scanning;

    /// <param name="scanForPidMarker">False for a local process: <paramref name="localPid"/> is the process to kill.</param>
    public StderrCapture(bool scanForPidMarker, int localPid = 0)
    {
        scanning = scanForPidMarker;
        if (!scanForPidMarker)
        {
            processGroup.TrySetResult(localPid);
        }
    }

    /// <summary>Standard error so far, without the marker line.</summary>
    public string Text
    {
        get
        {
            lock (gate)
            {
                return Encoding.UTF8.GetString(stderr.GetBuffer(), 0, (int)stderr.Length);
            }
        }
    }

    /// <summary>True once the command is known to have started on the host (the wrapper reported its process group).</summary>
    public bool Started => processGroup.Task.IsCompletedSuccessfully;

    /// <summary>The process group id on the host, once <see cref="Started"/>.</summary>
    public int ProcessGroup => processGroup.Task.Result;

    /// <summary>Takes the next bytes read from standard error.</summary>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        lock (gate)
        {
            if (!scanning)
            {
                stderr.Write(bytes);
                return;
            }

            pending.AddRange(bytes.ToArray());
            scanning = ScanForMarker();
        }
    }

    /// <summary>Standard error has ended: keeps what is pending; a marker that never came means the command never started.</summary>
    public void Complete()
    {
        lock (gate)
        {
            if (pending.Count > 0)
            {
                stderr.Write(pending.ToArray());
                pending.Clear();
            }

            scanning = false;
        }

        processGroup.TrySetCanceled();
    }

    /// <summary>Moves complete lines from <see cref="pending"/> to stderr until the marker line; returns whether to keep scanning.</summary>
    private bool ScanForMarker()
    {
        while (true)
        {
            var newline = pending.IndexOf((byte)'\n');
            if (newline < 0)
            {
                if (pending.Count > 65536)
                {
                    stderr.Write(pending.ToArray());
                    pending.Clear();
                }

                return true;
            }

            var line = pending.GetRange(0, newline).ToArray();
            pending.RemoveRange(0, newline + 1);
            var text = Encoding.UTF8.GetString(line);
            if (text.StartsWith(PidMarker, StringComparison.Ordinal) && int.TryParse(text.AsSpan(PidMarker.Length), out var pid))
            {
                processGroup.TrySetResult(pid);
                stderr.Write(pending.ToArray());
                pending.Clear();
                return false;
            }

            stderr.Write(line);
            stderr.Write("\n"u8);
        }
    }
}
