#Requires -Version 7.4
<#
.SYNOPSIS
    The README's first job: builds ReplicaTools and mirrors the disk of a small running VM on this machine, live, to a
    second image, then proves the copy identical with Compare-DiskImage.
.DESCRIPTION
    Needs the .NET SDK, PowerShell 7.4+ and QEMU (qemu-utils, qemu-system-x86). No SSH and no topology file: every
    cmdlet acts on the local machine when given no -Session or -HostName. The VM is a bare QEMU without a guest OS
    (TCG). Everything lives in -Directory (a new temporary
    directory by default), and the VM is stopped at the end.
.PARAMETER Directory
    Where the VM's disk, its copy and its QMP socket go. Default: a new directory under the temporary path.
.PARAMETER NoBuild
    Use the module already built in out/ReplicaTools.
.PARAMETER KeepFiles
    Keep -Directory (the disk and its copy) for a look afterwards; by default it is removed once the copy is proven identical.
.EXAMPLE
    pwsh -NoProfile -File ./tests/QuickStart.ps1
#>
[CmdletBinding()]
param(
    [string] $Directory = (Join-Path ([IO.Path]::GetTempPath()) ('replicatools-quickstart-' + [guid]::NewGuid().ToString('N').Substring(0, 8))),
    [switch] $NoBuild,
    [switch] $KeepFiles
)

$ErrorActionPreference = 'Stop'
$root = Split-Path $PSScriptRoot -Parent
if (-not $NoBuild) { & (Join-Path $root 'build.ps1') }
Import-Module (Join-Path $root 'out/ReplicaTools/ReplicaTools.psd1') -Force

New-Item -ItemType Directory -Path $Directory -Force | Out-Null
$disk = Join-Path $Directory 'vm1.qcow2'
$copy = Join-Path $Directory 'vm1-copy.qcow2'
$socket = Join-Path $Directory 'vm1.qmp'

# A 256 MiB disk with 32 MiB of data, and a VM (bare QEMU) running on it.
New-DiskImage -Path $disk -Size 256MB -Format qcow2 | Out-Null
Invoke-ReplicaCommand -ArgumentList qemu-io, -f, qcow2, -c, 'write -P 0x5a 0 32M', $disk | Out-Null
$vm = Start-ReplicaVM -Name vm1 -DiskPath $disk -QmpSocket $socket -MemoryMB 64 -Confirm:$false
try {
    # Mirror every write of the running VM's disk to the copy, and wait until it is in sync (a progress bar shows).
    $vm | Start-DriveMirror -Destination $copy -Wait | Out-Null

    $vm | Get-DriveMirror | Format-Table

    # End the mirror: the copy keeps a byte-identical image of this instant; the VM stays on its own disk.
    $vm | Stop-DriveMirror -Confirm:$false | Out-Null
}
finally {
    if ($vm.ProcessId -gt 1) { Stop-Process -Id $vm.ProcessId -ErrorAction SilentlyContinue; Wait-Process -Id $vm.ProcessId -Timeout 10 -ErrorAction SilentlyContinue }
}

$comparison = Compare-DiskImage -ReferencePath $disk -DifferencePath $copy
if (-not $comparison.Identical) { throw "The copy differs from the VM's disk: $($comparison.Message)" }
if ($KeepFiles) {
    Write-Host "The live mirror of vm1's disk is identical to the disk: $copy"
}
else {
    Remove-Item -LiteralPath $Directory -Recurse -Force
    Write-Host "The live mirror of vm1's disk was identical to the disk; $Directory is removed again (-KeepFiles keeps it)."
}
$comparison
