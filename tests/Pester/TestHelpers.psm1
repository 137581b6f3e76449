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

Export-ModuleMember -Function Get-ReplicaToolsManifestPath, Get-FreeTcpPort
