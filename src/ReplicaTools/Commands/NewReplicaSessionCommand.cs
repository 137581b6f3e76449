using System.Management.Automation;
using System.Security;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Commands;

[Cmdlet(VerbsCommon.New, "ReplicaSession", SupportsShouldProcess = true)]
[OutputType(typeof(ReplicaSession))]
public sealed class NewReplicaSessionCommand : ReplicaCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [AllowNull]
    [AllowEmptyCollection]
    [Alias("ComputerName", "Address")]
    public string[] HostName { get; set; } = Array.Empty<string>();

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("User")]
    public string? UserName { get; set => field = Given(value); }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 65535)]
    public int Port { get; set; } = 22;

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("IdentityFilePath", "KeyFile")]
    public string? KeyFilePath { get; set => field = Given(value); }

    /// <summary>The passphrase of an encrypted -KeyFilePath (SshNet).</summary>
    [Parameter]
    [ValidateNotNull]
    public SecureString? KeyPassphrase { get; set; }

    /// <summary>A user name and password for password or keyboard-interactive authentication (SshNet).</summary>
    [Parameter]
    [Credential]
    [ValidateNotNull]
    public PSCredential? Credential { get; set; }

    /// <summary>OpenSsh or SshNet; default OpenSsh on Linux and macOS, SshNet on Windows. Topology hosts bind their 'transport'.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public SessionTransport? Transport { get; set; }

    /// <summary>Null or empty (a topology host without 'knownHostsFile') means ~/.ssh/known_hosts.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? KnownHostsPath { get; set => field = Given(value); }

    /// <summary>Null or empty (a topology host without 'jumpHost') means a direct connection.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? JumpHost { get; set => field = Given(value); }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string[] SshOption { get; set; } = Array.Empty<string>();

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public SwitchParameter AcceptNewHostKey { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 3600)]
    public int ConnectTimeoutSeconds { get; set; } = 10;

    /// <summary>A friendly name for the session (default: the host name); -HostName on other cmdlets also matches it.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? Name { get; set => field = Given(value); }

    protected override void ProcessRecord()
    {
        if (!HasArgument(HostName, nameof(HostName)))
        {
            return;
        }

        foreach (var host in HostName)
        {
            SshConnectionOptions options;
            try
            {
                if (Credential is not null && UserName is not null && !string.Equals(UserName, Credential.UserName, StringComparison.Ordinal))
                {
                    throw new ArgumentException($"-UserName '{UserName}' and the user of -Credential '{Credential.UserName}' differ; give one of them.", nameof(UserName));
                }

                options = new SshConnectionOptions
                {
                    Transport = Transport ?? SessionTransports.Default,
                    HostName = host,
                    Port = Port,
                    UserName = Credential?.UserName ?? UserName,
                    Password = Credential?.Password,
                    KeyFilePath = KeyFilePath is null ? null : GetUnresolvedProviderPathFromPSPath(KeyFilePath),
                    KeyPassphrase = KeyPassphrase,
                    KnownHostsPath = KnownHostsPath is null ? null : GetUnresolvedProviderPathFromPSPath(KnownHostsPath),
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

            if (!ShouldProcess($"{options.UserName ?? "(ssh default user)"}@{host}:{Port}", $"Open SSH session ({options.Transport})"))
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
