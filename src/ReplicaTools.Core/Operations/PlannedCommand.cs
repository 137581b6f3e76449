using ReplicaTools.Core.Remote;

namespace ReplicaTools.Core.Operations;

/// <summary>One step of a command plan: what runs on which host, and why. Printed for -WhatIf, executed, asserted on in tests.</summary>
public sealed record PlannedCommand(string HostName, CommandSpec Command, string Purpose)
{
    /// <summary>The step as -WhatIf shows it: <c>[host] command line</c>.</summary>
    public override string ToString() => $"[{HostName}] {Command.CommandLine}";

    /// <summary>Every step on its own line, as -WhatIf and ShouldProcess show a plan.</summary>
    public static string Describe(IEnumerable<PlannedCommand> plan) => string.Join(Environment.NewLine, plan.Select(step => step.ToString()));
}
