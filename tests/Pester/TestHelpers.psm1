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

    # ProcessStartInfo.ArgumentList passes each argument as is (Start-Process would join them into one string).
    $startInfo = [System.Diagnostics.ProcessStartInfo]::new($program)
    $sshdArguments | ForEach-Object { $startInfo.ArgumentList.Add($_) }
    $startInfo.RedirectStandardError = $true
    $process = [System.Diagnostics.Process]::Start($startInfo)
    $deadline = [DateTime]::UtcNow.AddSeconds(10)
    do {
        Start-Sleep -Milliseconds 50
        $client = [System.Net.Sockets.TcpClient]::new()
        try { $client.Connect($Address, $port); $up = $true } catch { $up = $false } finally { $client.Dispose() }
    } until ($up -or $process.HasExited -or [DateTime]::UtcNow -gt $deadline)
    if (-not $up) {
        if (-not $process.HasExited) { $process.Kill($true) }
        $log = $process.StandardError.ReadToEnd()
        Remove-Item -Recurse -Force $directory -ErrorAction SilentlyContinue
        throw "The test sshd did not start on ${Address}:$port`: $log"
    }

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

# A libvirtd of its own, next to the machine's (root only): private mount namespace with empty state directories, a copy of
# /etc/libvirt without domains or networks, a socket in its own directory. Its domains exist only under the returned Uri
# (qemu+unix:///system?socket=...), a non-default URI. Stop it with Stop-TestLibvirtd.
function Start-TestLibvirtd {
    $directory = Join-Path ([System.IO.Path]::GetTempPath()) ("rtlvd-pester-{0}" -f [guid]::NewGuid().ToString('N').Substring(0, 6))
    New-Item -ItemType Directory -Path (Join-Path $directory 'run') -Force | Out-Null
    & chmod 0755 $directory
    & cp -a /etc/libvirt (Join-Path $directory 'etc')
    Remove-Item -Recurse -Force (Join-Path $directory 'etc/qemu')
    New-Item -ItemType Directory -Path (Join-Path $directory 'etc/qemu') | Out-Null
    Add-Content -Path (Join-Path $directory 'etc/qemu.conf') -Value "`nstdio_handler = `"file`""
    Set-Content -Path (Join-Path $directory 'libvirtd.conf') -Value @(
        "unix_sock_dir = `"$directory/run`"", 'unix_sock_rw_perms = "0700"', 'auth_unix_rw = "none"', 'auth_unix_ro = "none"')
    $script = 'mount -t tmpfs tmpfs /run/libvirt && mount -t tmpfs tmpfs /var/lib/libvirt && mount -t tmpfs tmpfs /var/cache/libvirt ' +
        '&& mount --bind "$1/etc" /etc/libvirt && mkdir -p /var/lib/libvirt/qemu /var/lib/libvirt/images ' +
        '&& exec libvirtd -d -f "$1/libvirtd.conf" -p "$1/libvirtd.pid"'
    & unshare -m --propagation private sh -c $script sh $directory
    if ($LASTEXITCODE -ne 0) { throw "The private libvirtd did not start (exit code $LASTEXITCODE)." }
    $daemon = [pscustomobject]@{ Directory = $directory; Uri = "qemu+unix:///system?socket=$directory/run/libvirt-sock"; ProcessId = 0 }
    $deadline = (Get-Date).AddSeconds(60)
    while ($true) {
        & virsh -c $daemon.Uri version *> $null
        if ($LASTEXITCODE -eq 0) { break }
        if ((Get-Date) -gt $deadline) { throw "The private libvirtd in $directory did not answer within 60 s." }
        Start-Sleep -Milliseconds 200
    }
    $daemon.ProcessId = [int](Get-Content (Join-Path $directory 'libvirtd.pid'))
    $daemon
}

# Destroys the domains of a Start-TestLibvirtd daemon (its QEMUs outlive it), stops it and removes its directory.
function Stop-TestLibvirtd($Daemon) {
    if (-not $Daemon) { return }
    foreach ($name in (& virsh -c $Daemon.Uri list --name 2>$null)) {
        if ($name) { & virsh -c $Daemon.Uri destroy $name *> $null }
    }
    if ($Daemon.ProcessId -gt 0) {
        & kill -TERM $Daemon.ProcessId 2>$null
        Start-Sleep -Milliseconds 500
    }
    Remove-Item -Recurse -Force $Daemon.Directory -ErrorAction SilentlyContinue
}

# A tgtd of its own (root only): its own management channel (-C, up to 32767; never the system's 0) and its iSCSI
# portal on 127.0.0.1 and a free port. Stop it with Stop-TestTgtd (tgtd ignores SIGTERM).
function Start-TestTgtd {
    for ($attempt = 1; $attempt -le 3; $attempt++) {
        $controlPort = Get-Random -Minimum 1000 -Maximum 32768
        if (Test-Path "/var/run/tgtd/socket.$controlPort") { continue }
        $port = Get-FreeTcpPort
        $log = Join-Path ([System.IO.Path]::GetTempPath()) "rttgt-pester-$controlPort"
        $process = Start-Process -FilePath tgtd -ArgumentList '-f', '-C', $controlPort, '--iscsi', "portal=127.0.0.1:$port" -PassThru -RedirectStandardError "$log.err" -RedirectStandardOutput "$log.out"
        $deadline = (Get-Date).AddSeconds(10)
        while (-not $process.HasExited -and (Get-Date) -lt $deadline) {
            & tgtadm -C $controlPort --lld iscsi --op show --mode portal *> $null
            if ($LASTEXITCODE -eq 0) { return [pscustomobject]@{ ControlPort = $controlPort; Port = $port; Process = $process; Log = $log } }
            Start-Sleep -Milliseconds 100
        }
        if (-not $process.HasExited) { $process.Kill() }
    }
    throw 'tgtd did not start after 3 attempts.'
}

function Stop-TestTgtd($Daemon) {
    if (-not $Daemon) { return }
    $port = $Daemon.ControlPort
    & tgtadm -C $port --op update --mode sys --name State -v offline *> $null
    foreach ($line in (& tgtadm -C $port --lld iscsi --op show --mode target 2>$null)) {
        if ($line -match '^Target (\d+):') { & tgtadm -C $port --lld iscsi --op delete --mode target --tid $Matches[1] --force *> $null }
    }
    & tgtadm -C $port --op delete --mode system *> $null
    if (-not $Daemon.Process.WaitForExit(5000)) { $Daemon.Process.Kill() }
    Remove-Item -Force "/var/run/tgtd/socket.$port", "/var/run/tgtd/socket.$port.lock", "$($Daemon.Log).err", "$($Daemon.Log).out" -ErrorAction SilentlyContinue
}

# What a command prints for -WhatIf (ShouldProcess writes to the host, not to a stream): runs it under a transcript.
function Get-WhatIfText([scriptblock] $ScriptBlock) {
    $file = New-TemporaryFile
    Start-Transcript -Path $file -UseMinimalHeader | Out-Null
    try { & $ScriptBlock | Out-Null } finally { Stop-Transcript | Out-Null }
    $text = Get-Content -Raw $file
    Remove-Item $file
    $text
}

Export-ModuleMember -Function Get-ReplicaToolsManifestPath, Get-FreeTcpPort, Start-TestSshd, Stop-TestSshd, Start-TestLibvirtd, Stop-TestLibvirtd, Start-TestTgtd, Stop-TestTgtd, Get-WhatIfText
