using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;

namespace ReplicaTools.Commands;

/// <summary>
/// Tab completion for -Format (raw, qcow2, vdi). -Format binds from piped objects by property name, so it cannot carry
/// [ValidateSet] (a null Format on a piped object would fail the binding); the core checks the value instead.
/// </summary>
public sealed class DiskImageFormatCompleter : IArgumentCompleter
{
    private static readonly string[] Formats = { "raw", "qcow2", "vdi" };

    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters) =>
        Formats.Where(f => f.StartsWith(wordToComplete ?? string.Empty, StringComparison.OrdinalIgnoreCase))
            .Select(f => new CompletionResult(f, f, CompletionResultType.ParameterValue, f));
}
