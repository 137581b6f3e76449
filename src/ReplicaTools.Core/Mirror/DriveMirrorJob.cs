using ReplicaTools.Core.Operations;
using ReplicaTools.Core.Qemu;
using ReplicaTools.Core.Storage;

namespace ReplicaTools.Core.Mirror;

public enum MirrorSyncMode
{
    /// <summary>Copy the whole disk, including its backing chain, into a standalone image.</summary>
    Full,

    /// <summary>Copy only the top image; the destination keeps the source's backing file.</summary>
    Top,
}

public enum DriveMirrorState
{
    /// <summary>Copying; not yet in sync.</summary>
    Running,

    /// <summary>In sync: every guest write now reaches both copies. Stop it with or without -Pivot.</summary>
    Ready,

    /// <summary>Paused by Suspend-DriveMirror (guest writes are still tracked and copied after Resume).</summary>
    Paused,

    /// <summary>The copy makes no progress: the destination does not answer (a dead NFS server raises no error in QEMU).</summary>
    Stalled,

    /// <summary>The job failed (destination gone, full, too small ...); Error says why. Stop-DriveMirror clears it.</summary>
    Failed,

    /// <summary>Ended by Stop-DriveMirror -Pivot: the VM now runs on the destination.</summary>
    Pivoted,

    /// <summary>Ended by Stop-DriveMirror after sync: the destination is a consistent copy as of that instant.</summary>
    Stopped,

    /// <summary>Ended before sync (Stop-DriveMirror -Force): the destination is incomplete.</summary>
    Cancelled,
}

/// <summary>A live mirror of one VM disk to a second image, as the mirror cmdlets report it.</summary>
public sealed record DriveMirrorJob : VmObject
{
    public DriveMirrorJob(VmTarget target)
        : base(target)
    {
    }

    /// <summary>The image the disk is copied from (as the VM opened it).</summary>
    public string? Source { get; init; }

    /// <summary>The mirror copy: a path on the VM host or an nfs:// URL.</summary>
    public string? Destination { get; init; }

    public string? Format { get; init; }

    /// <summary>The block job's id: rt-mirror-&lt;drive&gt; for bare QEMU, libvirt's copy-&lt;drive&gt;-... for libvirt.</summary>
    public required string JobId { get; init; }

    public DriveMirrorState State { get; init; }

    /// <summary>The status as QEMU or libvirt reports it (running, ready, paused, concluded ...).</summary>
    public string? JobStatus { get; init; }

    public long BytesDone { get; init; }

    public long BytesTotal { get; init; }

    public double PercentComplete => BytesTotal <= 0 ? (Ready ? 100 : 0) : Math.Round(100.0 * Math.Min(BytesDone, BytesTotal) / BytesTotal, 1);

    /// <summary>True once the copy is in sync (QEMU's READY): pivot or a consistent stop is possible.</summary>
    public bool Ready { get; init; }

    /// <summary>The bandwidth limit in MiB/s; 0 means unlimited.</summary>
    public double BandwidthMBps { get; init; }

    /// <summary>Why the job failed or stalled; null when it is healthy.</summary>
    public string? Error { get; init; }

    /// <summary>True when Start-DriveMirror created the destination (so an incomplete copy is removed on a forced stop).</summary>
    public bool CreatedDestination { get; init; }

    /// <summary>QEMU's node name of the image being copied (closed after a pivot).</summary>
    internal string? SourceNode { get; init; }

    public override string ToString() => $"{VM}:{Drive} -> {Destination} ({State}, {PercentComplete:0.#}%)";
}

/// <summary>What Start-DriveMirror was asked to do.</summary>
public sealed class MirrorStartRequest
{
    /// <summary>The drive (target, device id or node name); null for the VM's only disk.</summary>
    public string? Drive { get; init; }

    public required ImageLocation Destination { get; init; }

    /// <summary>The destination's format; default the source's (or, with ReuseExisting, the existing image's).</summary>
    public string? Format { get; init; }

    public MirrorSyncMode Sync { get; init; } = MirrorSyncMode.Full;

    /// <summary>Mirror into an existing image of the same virtual size instead of creating one.</summary>
    public bool ReuseExisting { get; init; }

    /// <summary>Bandwidth limit in MiB/s; 0 means unlimited.</summary>
    public int BandwidthMBps { get; init; }

    public TimeSpan ProbeTimeout { get; init; } = ImageProbe.DefaultTimeout;
}

/// <summary>The commands an operation will run, decided before anything changes: printed for -WhatIf, asserted on in tests.</summary>
public sealed class MirrorPlan
{
    public required VirtualMachine VirtualMachine { get; init; }

    public required VmDisk Disk { get; init; }

    public required ImageLocation Destination { get; init; }

    public required string Format { get; init; }

    public required string JobId { get; init; }

    /// <summary>True when the plan creates the destination (it is removed again if the start fails or the job is force-stopped).</summary>
    public bool CreatesDestination { get; init; }

    public long SourceSize { get; init; }

    public MirrorSyncMode Sync { get; init; }

    public int BandwidthMBps { get; init; }

    /// <summary>The state-changing steps, in order: QMP commands (bare QEMU) or virsh command lines (libvirt). StartAsync runs exactly these.</summary>
    public required IReadOnlyList<PlannedCommand> Steps { get; init; }

    public string Describe() => PlannedCommand.Describe(Steps);
}
