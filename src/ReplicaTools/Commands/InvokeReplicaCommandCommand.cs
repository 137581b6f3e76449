using System.Management.Automation;
using System.Text;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsLifecycle.Invoke, "ReplicaCommand", SupportsShouldProcess = true)]
[OutputType(typeof(CommandResult))]
public sealed class InvokeReplicaCommandCommand : HostCmdlet
{
    /// <summary>The program and its arguments, one element each; every element arrives on the host exactly as given.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    [Alias("Command")]
    [AllowEmptyString]
    public string[] ArgumentList { get; set; } = Array.Empty<string>();

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, int.MaxValue)]
    public int TimeoutSeconds { get; set; } = 300;

    /// <summary>Text written to the command's standard input (UTF-8).</summary>
    [Parameter]
    public string? InputText { get; set; }

    /// <summary>Return the result even when the exit code is not 0, instead of writing an error.</summary>
    [Parameter]
    public SwitchParameter IgnoreExitCode { get; set; }

    protected override void ProcessRecord()
    {
        if (!HasArgument(ArgumentList, nameof(ArgumentList)))
        {
            return;
        }

        CommandSpec command;
        try
        {
            command = new CommandSpec(ArgumentList)
            {
                Timeout = TimeSpan.FromSeconds(TimeoutSeconds),
                StandardInput = InputText is null ? null : Encoding.UTF8.GetBytes(InputText),
                ThrowOnFailure = !IgnoreExitCode,
            };
            _ = PosixShell.Join(command.Arguments);
        }
        catch (ArgumentException ex)
        {
            ThrowTerminating(ex, ArgumentList);
            return;
        }

        var session = ResolveSession();
        if (!ShouldProcess(session.Host.Name, $"Run '{command.CommandLine}'"))
        {
            return;
        }

        var result = TryRun(token => session.Host.RunAsync(command, token), session.Host.Name);
        if (result is not null)
        {
            WriteObject(result);
        }
    }
}
