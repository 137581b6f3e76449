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

Export-ModuleMember -Function Get-ReplicaToolsManifestPath, Get-FreeTcpPort, Start-TestLibvirtd, Stop-TestLibvirtd
