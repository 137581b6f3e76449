#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# Start-ReplicaVM with copies in $TestDrive and a paused, OS-less QEMU on this machine.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
    $script:started = [System.Collections.Generic.List[int]]::new()
}

AfterAll {
    # Only real QEMU pids: Stop-Process -Id 0 would signal this PowerShell's own process group.
    foreach ($id in $script:started) { if ($id -gt 1) { Stop-Process -Id $id -Force -ErrorAction SilentlyContinue } }
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Start-ReplicaVM' {
    BeforeAll {
        $script:missing = Join-Path $TestDrive 'nfs1-gone.vdi'
        $script:copy = Join-Path $TestDrive 'nfs2.vdi'
        & qemu-img create -q -f vdi $script:copy 16M
        $common = @{ MemoryMB = 32; Paused = $true; Machine = 'pc,accel=tcg'; QemuArgument = @('-nodefaults'); Confirm = $false }
    }

    It 'has ConfirmImpact High, a Qmp and a Libvirt parameter set, and supports -WhatIf' {
        $command = Get-Command Start-ReplicaVM
        $command.ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $true)[0].ConfirmImpact | Should -Be 'High'
        $command.ParameterSets.Name | Should -Contain 'Qmp'
        $command.ParameterSets.Name | Should -Contain 'Libvirt'
        $command.Parameters.ContainsKey('WhatIf') | Should -BeTrue
    }

    It 'starts nothing with -WhatIf' {
        $socket = Join-Path $TestDrive 'whatif.qmp'
        Start-ReplicaVM -Name whatif -DiskPath $script:missing, $script:copy -QmpSocket $socket @common -WhatIf
        $socket | Should -Not -Exist
    }

    It 'starts from the first readable copy and says why the primary was skipped' {
        $socket = Join-Path $TestDrive 'fo.qmp'
        $result = Start-ReplicaVM -Name fo -DiskPath $script:missing, $script:copy -QmpSocket $socket @common -WarningVariable warnings -WarningAction SilentlyContinue -ErrorAction Stop
        $result.ProcessId | Should -BeGreaterThan 1
        $script:started.Add($result.ProcessId)
        $result.UsedCopy | Should -Be $script:copy
        $result.UsedPreference | Should -Be 2
        $result.IsPrimary | Should -BeFalse
        $result.Copies[0].Status | Should -Be 'Skipped'
        $result.Copies[0].Reason | Should -BeLike '*does not exist*'
        $warnings[0] | Should -BeLike '*not on the primary*'
        $result.QmpSocket | Should -Be $socket
        $result.Drive | Should -Be 'virtio0'
    }

    It 'pipes into Get-DriveMirror (QmpSocket and Session bind by property name)' {
        # A copy of its own: the VM of the test above holds its copy's write lock.
        $copy = Join-Path $TestDrive 'pipe.vdi'
        & qemu-img create -q -f vdi $copy 16M
        $socket = Join-Path $TestDrive 'pipe.qmp'
        $result = Start-ReplicaVM -Name pipe -DiskPath $copy -QmpSocket $socket @common -Format vdi -ErrorAction Stop
        $result.ProcessId | Should -BeGreaterThan 1
        $script:started.Add($result.ProcessId)
        $result | Get-DriveMirror | Should -BeNullOrEmpty
    }

    It 'refuses to start a second VM on a socket that answers' {
        $socket = Join-Path $TestDrive 'fo.qmp'
        { Start-ReplicaVM -Name fo -DiskPath $script:copy -QmpSocket $socket @common -ErrorAction Stop } | Should -Throw -ErrorId 'VmAlreadyRunning,*'
    }

    It 'fails with NoUsableDiskCopy listing every copy when none is usable' {
        $errors = $null
        Start-ReplicaVM -Name none -DiskPath $script:missing, 'nfs://127.0.0.99/images/x.vdi' -QmpSocket (Join-Path $TestDrive 'none.qmp') @common -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'NoUsableDiskCopy,*'
        $errors[0].Exception.Message | Should -BeLike '*nfs1-gone.vdi*127.0.0.99*'
    }

    It 'rejects a relative disk path' {
        { Start-ReplicaVM -Name bad -DiskPath 'relative.vdi' -QmpSocket (Join-Path $TestDrive 'bad.qmp') @common -ErrorAction Stop } | Should -Throw -ErrorId 'InvalidArgument,*'
    }
}
