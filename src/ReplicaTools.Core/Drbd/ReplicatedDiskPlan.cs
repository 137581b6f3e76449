using System.Text;
using ReplicaTools.Core.Operations;

namespace ReplicaTools.Core.Drbd;

/// <summary>
/// One thing a replicated-disk operation does on one host: the commands it shows (<see cref="Steps"/>), what DRBD
/// itself would run for them (<see cref="Expansion"/>, from drbdadm's dry run) and how it is carried out.
/// </summary>
public sealed class ReplicatedDiskAction
{
    internal ReplicatedDiskAction(string hostName, string description, IReadOnlyList<PlannedCommand> steps, Func<CancellationToken, Task> run, IReadOnlyList<string>? expansion = null)
    {
        HostName = hostName;
        Description = description;
        Steps = steps;
        Run = run;
        Expansion = expansion ?? Array.Empty<string>();
    }

    public string HostName { get; }

    /// <summary>What the action achieves, e.g. "bring r0 up".</summary>
    public string Description { get; }

    public IReadOnlyList<PlannedCommand> Steps { get; }

    /// <summary>For drbdadm steps: the drbdsetup and drbdmeta commands drbdadm would run (drbdadm -d), secret redacted.</summary>
    public IReadOnlyList<string> Expansion { get; }

    internal Func<CancellationToken, Task> Run { get; }

    public override string ToString() => $"[{HostName}] {Description}";
}

/// <summary>
/// What a replicated-disk operation will do, host by host and in order, decided by read-only probes of both hosts:
/// printed by -WhatIf, executed by the manager, asserted on in tests.
/// </summary>
public sealed class ReplicatedDiskPlan
{
    internal ReplicatedDiskPlan(string name, IReadOnlyList<ReplicatedDiskAction> actions, IReadOnlyList<string> notes)
    {
        Name = name;
        Actions = actions;
        Notes = notes;
    }

    /// <summary>The resource.</summary>
    public string Name { get; }

    public IReadOnlyList<ReplicatedDiskAction> Actions { get; }

    /// <summary>Every command in order, on every host.</summary>
    public IReadOnlyList<PlannedCommand> Steps => Actions.SelectMany(a => a.Steps).ToArray();

    /// <summary>Facts decided while planning (device chosen, usable size, what is already in place).</summary>
    public IReadOnlyList<string> Notes { get; }

    /// <summary>What the operator must know (a host without the DRBD module: the plan cannot run there).</summary>
    public IReadOnlyList<ReplicatedDiskWarning> Warnings { get; init; } = Array.Empty<ReplicatedDiskWarning>();

    /// <summary>The storage hosts the plan acts on.</summary>
    public IReadOnlyList<Remote.ReplicaSession> Sessions { get; init; } = Array.Empty<Remote.ReplicaSession>();

    /// <summary>True when everything is already as requested.</summary>
    public bool IsEmpty => Actions.Count == 0;

    /// <summary>The steps of one host, in order.</summary>
    public IReadOnlyList<PlannedCommand> StepsOn(string hostName) => Steps.Where(s => s.HostName == hostName).ToArray();

    /// <summary>
    /// The plan as -WhatIf prints it: the notes, then each action's commands (<c>[host] command line</c>, with the
    /// content of each file written after <c>&lt;&lt;&lt;</c>, secrets redacted) and the DRBD commands they expand to.
    /// </summary>
    public string Describe()
    {
        var builder = new StringBuilder();
        foreach (var note in Notes)
        {
            builder.Append("# ").Append(note).Append(Environment.NewLine);
        }

        foreach (var action in Actions)
        {
            builder.Append("# [").Append(action.HostName).Append("] ").Append(action.Description).Append(Environment.NewLine);
            foreach (var step in action.Steps)
            {
                builder.Append(step).Append(Environment.NewLine);
            }

            foreach (var line in action.Expansion)
            {
                builder.Append("#     ").Append(line).Append(Environment.NewLine);
            }
        }

        return builder.ToString().TrimEnd();
    }

    public override string ToString() => Describe();
}
