using ReplicaTools.Core.Operations;

namespace ReplicaTools.Core.Storage;

/// <summary>
/// What a storage operation will change, decided by read-only probes first: printed by -WhatIf/-Confirm, executed
/// step by step, and asserted on in tests. Its steps are the module's one plan type, <see cref="PlannedCommand"/>.
/// </summary>
public class StoragePlan
{
    public StoragePlan(string target, IReadOnlyList<PlannedCommand> steps, IReadOnlyList<string>? notes = null)
    {
        Target = target;
        Steps = steps;
        Notes = notes ?? Array.Empty<string>();
    }

    /// <summary>What the plan acts on, e.g. "[nfs1] /srv/images/vm1.vdi".</summary>
    public string Target { get; }

    public IReadOnlyList<PlannedCommand> Steps { get; }

    /// <summary>Facts decided while planning (file system, No_COW handling, lock state) that the operator should see.</summary>
    public IReadOnlyList<string> Notes { get; }

    /// <summary>The exact command lines per host, one a line: the ShouldProcess action text.</summary>
    public string Describe() => PlannedCommand.Describe(Steps);

    public override string ToString() => Describe();
}
