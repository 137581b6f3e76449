#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# The README's first command runs tests/QuickStart.ps1: a live mirror of a small running VM on this machine, ending
# with Compare-DiskImage saying the copy is identical. Run here as a user runs it (without the build, which CI did).

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $null = Get-ReplicaToolsManifestPath
    $script:quickStart = Join-Path $PSScriptRoot '../QuickStart.ps1'
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'The README quick start' {
    It 'mirrors a running VM''s disk live and the copy is identical' {
        $directory = Join-Path $TestDrive 'quickstart'
        $result = & $script:quickStart -NoBuild -Directory $directory -KeepFiles 6>$null | Select-Object -Last 1
        $result.Identical | Should -BeTrue
        $result.Method | Should -Be 'qemu-img compare'
        Join-Path $directory 'vm1-copy.qcow2' | Should -Exist
        (Get-DiskImage -Path (Join-Path $directory 'vm1-copy.qcow2')).VirtualSize | Should -Be 256MB
        # The VM it started is stopped again: nothing holds the images.
        (Get-DiskImage -Path (Join-Path $directory 'vm1.qcow2')).InUse | Should -BeFalse
    }

    It 'leaves nothing behind without -KeepFiles' {
        $directory = Join-Path $TestDrive 'quickstart-clean'
        $result = & $script:quickStart -NoBuild -Directory $directory 6>$null | Select-Object -Last 1
        $result.Identical | Should -BeTrue
        $directory | Should -Not -Exist
    }
}
