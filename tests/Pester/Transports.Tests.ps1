#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
    $script:sshd = Start-TestSshd -Address 127.0.0.2
    $script:connection = @{
        HostName       = $script:sshd.HostName
        Port           = $script:sshd.Port
        UserName       = $script:sshd.UserName
        KeyFilePath    = $script:sshd.KeyFilePath
        KnownHostsPath = $script:sshd.KnownHostsPath
    }
}

AfterAll {
    Get-ReplicaSession | Remove-ReplicaSession -Confirm:$false
    $script:sshd | Stop-TestSshd
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'New-ReplicaSession -Transport' {
    It 'offers OpenSsh and SshNet, and defaults to OpenSsh on Linux' {
        $parameter = (Get-Command New-ReplicaSession).Parameters['Transport']
        [Enum]::GetNames([Nullable]::GetUnderlyingType($parameter.ParameterType)) | Should -Be @('OpenSsh', 'SshNet')
        $session = New-ReplicaSession @connection -Name default-transport
        $session.Transport | Should -Be 'OpenSsh'
        $session.ControlPath | Should -Not -BeNullOrEmpty
        $session | Remove-ReplicaSession -Confirm:$false
    }

    It 'runs the same command with the same result over <_>' -ForEach @('OpenSsh', 'SshNet') {
        $session = New-ReplicaSession @connection -Transport $_ -Name "t-$_"
        $session.Transport | Should -Be $_
        $session.State | Should -Be 'Opened'
        $hostile = "it's `$(touch $TestDrive/pwned); `"quoted`" | & `n second line"
        $result = $session | Invoke-ReplicaCommand -ArgumentList 'printf', '%s', $hostile
        $result.StandardOutput | Should -BeExactly $hostile
        $result.HostName | Should -Be "t-$_"
        Join-Path $TestDrive 'pwned' | Should -Not -Exist
        $errors = $null
        $session | Invoke-ReplicaCommand -ArgumentList 'sh', '-c', 'echo boom >&2; exit 3' -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'CommandFailed,*'
        $errors[0].Exception.ExitCode | Should -Be 3
        $session | Remove-ReplicaSession -Confirm:$false
        $session.State | Should -Be 'Closed'
    }

    It 'refuses an unknown host key over SshNet, naming the host and the fingerprint, and records it with -AcceptNewHostKey' {
        $empty = Join-Path $TestDrive 'known_hosts_empty'
        Set-Content -Path $empty -Value '# nothing trusted yet'
        $errors = $null
        New-ReplicaSession @connection -KnownHostsPath $empty -Transport SshNet -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'HostKeyUnknown,*'
        $errors[0].CategoryInfo.Category | Should -Be 'SecurityError'
        $errors[0].Exception.Message | Should -BeLike "*$($sshd.HostName):$($sshd.Port)*SHA256:*"

        $session = New-ReplicaSession @connection -KnownHostsPath $empty -Transport SshNet -AcceptNewHostKey -WarningAction SilentlyContinue
        $session.State | Should -Be 'Opened'
        Get-Content $empty | Should -Contain "[$($sshd.HostName)]:$($sshd.Port) $($sshd.HostPublicKey)"
        $session | Remove-ReplicaSession -Confirm:$false
    }
}

Describe 'New-ReplicaSession -Credential' {
    It 'is a clear InvalidArgument error with the OpenSsh transport, without the password' {
        $credential = [pscredential]::new('replica', (ConvertTo-SecureString 'pester s3cret' -AsPlainText -Force))
        $errors = $null
        New-ReplicaSession -HostName 192.0.2.1 -Transport OpenSsh -Credential $credential -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $errors[0].Exception.Message | Should -BeLike '*-Credential*-Transport SshNet*'
        $errors[0].Exception.Message | Should -Not -BeLike '*s3cret*'
    }

    It 'logs in with the password over SshNet, and the password appears in no output, error or verbose message' -Skip:([Environment]::UserName -ne 'root') {
        $password = 'pester p@ss; $(not run)'
        $passwordSshd = Start-TestSshd -Address 127.0.0.3 -Password $password
        try {
            $credential = [pscredential]::new($passwordSshd.UserName, (ConvertTo-SecureString $password -AsPlainText -Force))
            $everything = New-ReplicaSession -HostName $passwordSshd.HostName -Port $passwordSshd.Port -KnownHostsPath $passwordSshd.KnownHostsPath -Transport SshNet -Credential $credential -Name pw -Verbose 4>&1
            $session = $everything | Where-Object { $_ -is [ReplicaTools.Core.Remote.ReplicaSession] }
            $session.Transport | Should -Be 'SshNet'
            ($session | Invoke-ReplicaCommand -ArgumentList 'id', '-un').StandardOutput.Trim() | Should -Be $passwordSshd.UserName

            $wrong = [pscredential]::new($passwordSshd.UserName, (ConvertTo-SecureString "wrong $password" -AsPlainText -Force))
            $errors = $null
            $everything += New-ReplicaSession -HostName $passwordSshd.HostName -Port $passwordSshd.Port -KnownHostsPath $passwordSshd.KnownHostsPath -Transport SshNet -Credential $wrong -Verbose -ErrorAction SilentlyContinue -ErrorVariable errors 4>&1
            $errors[0].FullyQualifiedErrorId | Should -BeLike 'AuthenticationFailed,*'
            $everything + $errors | Out-String | Should -Not -BeLike '*p@ss*'
            $session | Remove-ReplicaSession -Confirm:$false
        }
        finally {
            $passwordSshd | Stop-TestSshd
        }
    }
}

Describe 'Topology hosts name their transport' {
    It 'binds transport and knownHostsFile from the topology into New-ReplicaSession' {
        $path = Join-Path $TestDrive 'topology.yml'
        Set-Content -Path $path -Value @"
defaults:
  user: $($sshd.UserName)
  keyFile: $($sshd.KeyFilePath)
  knownHostsFile: $($sshd.KnownHostsPath)
hosts:
  over-sshnet:
    address: $($sshd.HostName)
    port: $($sshd.Port)
    transport: SshNet
  over-openssh:
    address: $($sshd.HostName)
    port: $($sshd.Port)
    transport: OpenSsh
  platform-default:
    address: $($sshd.HostName)
    port: $($sshd.Port)
"@
        $topology = Import-ReplicaTopology -Path $path
        $topology.Hosts['over-sshnet'].Transport | Should -Be 'SshNet'
        $topology.Hosts['platform-default'].Transport | Should -BeNullOrEmpty

        $sessions = $topology.Hosts | New-ReplicaSession
        $sessions.Transport | Should -Be @('SshNet', 'OpenSsh', 'OpenSsh')
        $sessions | ForEach-Object { ($_ | Invoke-ReplicaCommand -ArgumentList 'echo', $_.Name).StandardOutput.Trim() } | Should -Be @('over-sshnet', 'over-openssh', 'platform-default')
        ($topology.Hosts['over-sshnet'] | Invoke-ReplicaCommand -ArgumentList 'true').ExitCode | Should -Be 0
        $sessions | Remove-ReplicaSession -Confirm:$false
    }

    It 'reports an unknown transport with the file, line and column' {
        $path = Join-Path $TestDrive 'bad-transport.yml'
        Set-Content -Path $path -Value "hosts:`n  kvm1:`n    address: 192.0.2.10`n    transport: PuTTY"
        $errors = $null
        Import-ReplicaTopology -Path $path -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'TopologyInvalid,*'
        $errors[0].Exception.Message | Should -BeLike "*bad-transport.yml:4:16:*OpenSsh, SshNet*PuTTY*"
    }
}

Describe 'SSH.NET in the module''s own AssemblyLoadContext' {
    It 'neither clashes with nor binds to an older Renci.SshNet and BouncyCastle already loaded (as Posh-SSH loads them)' {
        # A fresh pwsh: stand-in assemblies with those names and older versions go into the default context first.
        $script = Join-Path $TestDrive 'standin.ps1'
        Set-Content -Path $script -Value @'
param($Manifest, $StandIns, $HostName, $Port, $KeyFilePath, $KnownHostsPath)
$ErrorActionPreference = 'Stop'
function New-StandIn([string] $Name, [string] $Version, [string] $Type) {
    $builder = [System.Reflection.Emit.PersistedAssemblyBuilder]::new([System.Reflection.AssemblyName]::new("$Name, Version=$Version, Culture=neutral, PublicKeyToken=null"), [object].Assembly)
    $null = $builder.DefineDynamicModule($Name).DefineType($Type, 'Public, Class').CreateType()
    $path = Join-Path $StandIns "$Name.dll"
    $builder.Save($path)
    Add-Type -Path $path
}
New-StandIn Renci.SshNet 2024.0.0.0 Renci.SshNet.PoshSshStandIn
New-StandIn BouncyCastle.Cryptography 2.4.0.0 Org.BouncyCastle.PoshSshStandIn
Import-Module $Manifest
$session = New-ReplicaSession -HostName $HostName -Port $Port -KeyFilePath $KeyFilePath -KnownHostsPath $KnownHostsPath -Transport SshNet
$output = ($session | Invoke-ReplicaCommand -ArgumentList 'echo', 'over ssh.net').StandardOutput.Trim()
[pscustomobject]@{
    Output     = $output
    Assemblies = @([AppDomain]::CurrentDomain.GetAssemblies() | Where-Object { $_.GetName().Name -in 'Renci.SshNet', 'BouncyCastle.Cryptography', 'ReplicaTools.Core' } |
        ForEach-Object { '{0} {1} {2}' -f $_.GetName().Name, $_.GetName().Version, [System.Runtime.Loader.AssemblyLoadContext]::GetLoadContext($_).Name } | Sort-Object)
    StandInType = [Renci.SshNet.PoshSshStandIn].Assembly.GetName().Version.ToString()
} | ConvertTo-Json -Compress
'@
        $standIns = New-Item -ItemType Directory -Path (Join-Path $TestDrive 'standins')
        $pwsh = Join-Path $PSHOME 'pwsh'
        $json = & $pwsh -NoProfile -NonInteractive -File $script -Manifest (Get-ReplicaToolsManifestPath) -StandIns $standIns.FullName `
            -HostName $sshd.HostName -Port $sshd.Port -KeyFilePath $sshd.KeyFilePath -KnownHostsPath $sshd.KnownHostsPath
        $LASTEXITCODE | Should -Be 0
        $result = $json | Select-Object -Last 1 | ConvertFrom-Json
        $result.Output | Should -Be 'over ssh.net'
        $result.StandInType | Should -Be '2024.0.0.0'
        $result.Assemblies | Should -Contain 'Renci.SshNet 2024.0.0.0 Default'
        $result.Assemblies | Should -Contain 'BouncyCastle.Cryptography 2.4.0.0 Default'
        $result.Assemblies | Where-Object { $_ -like 'Renci.SshNet 2026.*' } | Should -BeLike '* ReplicaTools'
        # BouncyCastle 2.x keeps AssemblyVersion 2.0.0.0: the default context would have bound SSH.NET to the 2.4.0.0 stand-in.
        $result.Assemblies | Where-Object { $_ -like 'BouncyCastle.Cryptography 2.0.0.0 *' } | Should -Be 'BouncyCastle.Cryptography 2.0.0.0 ReplicaTools'
        $result.Assemblies | Should -Contain 'ReplicaTools.Core 0.1.0.0 ReplicaTools'
    }
}
