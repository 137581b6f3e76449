# Shared by the ReplicaTools Pester suites. Imported in BeforeAll blocks.

function Get-ReplicaToolsManifestPath {
    $path = Join-Path $PSScriptRoot '../../out/ReplicaTools/ReplicaTools.psd1'
    if (-not (Test-Path $path)) {
        throw "The module is not built: run ./build.ps1 first (expected $path)."
    }
    (Resolve-Path $path).Path
}

function Get-FreeTcpPort {
    $listener = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
    $listener.Start()
    try { $listener.LocalEndpoint.Port } finally { $listener.Stop() }
}

function Start-TestSshd {
    <#
    .SYNOPSIS
        Starts a real sshd on a loopback address and a free port, with fresh host and client keys, for session tests.
        Returns HostName, Port, UserName, KeyFilePath, KnownHostsPath (which trusts only this sshd), HostPublicKey and
        the directory; Stop-TestSshd stops it and removes the directory. With -Password (plain text, a test secret), the
        sshd takes that password for the current user instead of keys: it runs in a mount namespace of its own where a
        copy of /etc/shadow with that password is bind-mounted, so this machine's accounts are not changed (needs root).
    #>
    param([string] $Address = '127.0.0.2', [string] $Password)
    $directory = Join-Path ([System.IO.Path]::GetTempPath()) ("rt-pester-sshd-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
    $null = New-Item -ItemType Directory -Path $directory
    & ssh-keygen -q -t ed25519 -N '' -C pester-host -f (Join-Path $directory 'host_key')
    & ssh-keygen -q -t ed25519 -N '' -C pester-client -f (Join-Path $directory 'client_key')
    Copy-Item (Join-Path $directory 'client_key.pub') (Join-Path $directory 'authorized_keys')
    $null = New-Item -ItemType Directory -Force -Path /run/sshd
    $listener = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Parse($Address), 0)
    $listener.Start(); $port = $listener.LocalEndpoint.Port; $listener.Stop()
    $sshdArguments = @('-D', '-e', '-f', '/dev/null', '-o', "ListenAddress=${Address}:$port", '-o', "HostKey=$(Join-Path $directory 'host_key')",
        '-o', "PidFile=$(Join-Path $directory 'sshd.pid')", '-o', "AuthorizedKeysFile=$(Join-Path $directory 'authorized_keys')",
        '-o', 'StrictModes=no', '-o', 'LogLevel=ERROR', '-o', "SetEnv=HOME=$directory")
    if ($Password) {
        $hash = $Password | & openssl passwd -6 -stdin
        $user = [Environment]::UserName
        $shadow = Join-Path $directory 'shadow'
        Get-Content /etc/shadow | ForEach-Object { $f = $_ -split ':'; if ($f[0] -eq $user) { $f[1] = $hash; $f -join ':' } else { $_ } } | Set-Content $shadow
        $program = 'unshare'
        $sshdArguments = @('--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/shadow && exec "$@"', $shadow, '/usr/sbin/sshd') +
            $sshdArguments + @('-o', 'PermitRootLogin=yes', '-o', 'PasswordAuthentication=yes', '-o', 'UsePAM=no', '-o', 'PubkeyAuthentication=no')
    }
    else {
        $program = '/usr/sbin/sshd'
        $sshdArguments += @('-o', 'PermitRootLogin=prohibit-password', '-o', 'PasswordAuthentication=no')
    }

    $process = Start-Process -FilePath $program -ArgumentList $sshdArguments -PassThru -RedirectStandardError (Join-Path $directory 'sshd.log')
    $deadline = [DateTime]::UtcNow.AddSeconds(10)
    do {
        Start-Sleep -Milliseconds 50
        $client = [System.Net.Sockets.TcpClient]::new()
        try { $client.Connect($Address, $port); $up = $true } catch { $up = $false } finally { $client.Dispose() }
    } until ($up -or $process.HasExited -or [DateTime]::UtcNow -gt $deadline)
    if (-not $up) { throw "The test sshd did not start on ${Address}:$port`: $(Get-Content -Raw (Join-Path $directory 'sshd.log'))" }

    $publicKey = ((Get-Content (Join-Path $directory 'host_key.pub')) -split ' ')[0..1] -join ' '
    $knownHosts = Join-Path $directory 'known_hosts'
    Set-Content -Path $knownHosts -Value "[$Address]:$port $publicKey"
    [pscustomobject]@{
        HostName       = $Address
        Port           = $port
        UserName       = [Environment]::UserName
        KeyFilePath    = Join-Path $directory 'client_key'
        KnownHostsPath = $knownHosts
        HostPublicKey  = $publicKey
        Directory      = $directory
        Process        = $process
    }
}

function Stop-TestSshd {
    param([Parameter(Mandatory, ValueFromPipeline)] $Sshd)
    process {
        # Stops the listener and its children (this test's connections), by the pids this helper started.
        if (-not $Sshd.Process.HasExited) { $Sshd.Process.Kill($true); $null = $Sshd.Process.WaitForExit(5000) }
        Remove-Item -Recurse -Force $Sshd.Directory -ErrorAction SilentlyContinue
    }
}

Export-ModuleMember -Function Get-ReplicaToolsManifestPath, Get-FreeTcpPort, Start-TestSshd, Stop-TestSshd
