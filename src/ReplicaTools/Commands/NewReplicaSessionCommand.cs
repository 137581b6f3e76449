using System.Management.Automation;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.New, "ReplicaSession", SupportsShouldProcess = true)]
[OutputType(typeof(ReplicaSession))]
public sealed class NewReplicaSessionCommand : ReplicaCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [Alias("ComputerName", "Address")]
    public string[] HostName { get; set; } = Array.Empty<string>();

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [Alias("User")]
    public string? UserName { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 65535)]
    public int Port { get; set; } = 22;

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [Alias("IdentityFilePath", "KeyFile")]
    public string? KeyFilePath { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? JumpHost { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNull]
    public string[] SshOption { get; set; } = Array.Empty<string>();

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public SwitchParameter AcceptNewHostKey { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 3600)]
    public int ConnectTimeoutSeconds { get; set; } = 10;

    /// <summary>A friendly name for the session (default: the host name); -HostName on other cmdlets also matches it.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Name { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var host in HostName)
        {
            SshConnectionOptions options;
            try
            {
                options = new SshConnectionOptions
                {
                    HostName = host,
                    Port = Port,
                    UserName = UserName,
                    KeyFilePath = KeyFilePath is null ? null : GetUnresolvedProviderPathFromPSPath(KeyFilePath),
                    JumpHost = JumpHost,
                    ExtraOptions = SshOption.Select(SshConnectionOptions.ParseOption).ToArray(),
                    AcceptNewHostKey = AcceptNewHostKey,
                    ConnectTimeoutSeconds = ConnectTimeoutSeconds,
                    DisplayName = HostName.Length == 1 ? Name : null,
                };
                options.Validate();
            }
            catch (ArgumentException ex)
            {
                WriteError(ToErrorRecord(ex, host));
                continue;
            }

            if (!ShouldProcess($"{options.UserName ?? "(ssh default user)"}@{host}:{Port}", "Open SSH session"))
            {
                continue;
            }

            var session = ReplicaSessionRegistry.Create(options, options.DisplayName);
            if (TryRun(token => session.OpenAsync(token), host))
            {
                WriteObject(session);
            }
            else
            {
                Run(_ => ReplicaSessionRegistry.RemoveAsync(session));
            }
        }
    }
}
