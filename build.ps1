#Requires -Version 7.4
<#
.SYNOPSIS
    Builds ReplicaTools and lays out the shippable module in out/ReplicaTools.
.DESCRIPTION
    Builds the cmdlet and core assemblies (warnings are errors), then lays out out/ReplicaTools with the manifest
    (version stamped), the assemblies, the format file and the en-US help. -Test then runs the whole test suite
    (tests/run.sh: xunit against a real lab, then the Pester suite).
.EXAMPLE
    ./build.ps1; Import-Module ./out/ReplicaTools
.EXAMPLE
    sudo pwsh ./build.ps1 -Test
#>
[CmdletBinding()]
param(
    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Release',

    # Stamped into the manifest and the assemblies, e.g. 0.2.0.
    [ValidatePattern('^\d+\.\d+\.\d+$')]
    [string] $Version,

    [switch] $Test
)

$ErrorActionPreference = 'Stop'
Push-Location $PSScriptRoot
try {
    $moduleDir = Join-Path $PSScriptRoot 'out/ReplicaTools'
    if (Test-Path $moduleDir) { Remove-Item $moduleDir -Recurse -Force }

    $arguments = @('build', 'src/ReplicaTools/ReplicaTools.csproj', '-c', $Configuration, '-p:LayOutModule=true', '-warnaserror', '-nologo')
    if ($Version) { $arguments += "-p:VersionPrefix=$Version" }
    & dotnet @arguments
    if ($LASTEXITCODE -ne 0) { throw "dotnet build failed with exit code $LASTEXITCODE." }

    $manifest = Test-ModuleManifest (Join-Path $moduleDir 'ReplicaTools.psd1')
    Write-Host "Built $($manifest.Name) $($manifest.Version) in $moduleDir ($($manifest.ExportedCmdlets.Count) cmdlets)."

    if ($Test) {
        & bash ./tests/run.sh
        if ($LASTEXITCODE -ne 0) { throw "Tests failed with exit code $LASTEXITCODE." }
    }
}
finally {
    Pop-Location
}
