#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# The mirror cmdlets against a real, paused, OS-less QEMU on this machine with images in $TestDrive.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force

    function Start-TestVm([string] $Name, [string] $SizeMiB = '32', [switch] $Fill) {
        $image = Join-Path $TestDrive "$Name.qcow2"
        & qemu-img create -q -f qcow2 $image "${SizeMiB}M"
        $length = if ($Fill) { "${SizeMiB}M" } else { '1M' }
        & qemu-io -f qcow2 -c "write -P 0xa5 0 $length" $image | Out-Null
        $socket = Join-Path $TestDrive "$Name.qmp"
        $pidFile = Join-Path $TestDrive "$Name.pid"
        $blockdev = '{"driver":"qcow2","node-name":"drive-virtio0","file":{"driver":"file","filename":"' + $image + '"}}'
        & qemu-system-x86_64 -name $Name -machine pc,accel=tcg -S -m 16 -nodefaults -display none `
            -qmp "unix:$socket,server=on,wait=off" -daemonize -pidfile $pidFile `
            -blockdev $blockdev -device 'virtio-blk-pci,drive=drive-virtio0,id=virtio0'
        if ($LASTEXITCODE -ne 0) { throw "qemu-system-x86_64 failed with $LASTEXITCODE" }
        [pscustomobject]@{ Image = $image; QmpSocket = $socket; Pid = [int](Get-Content $pidFile) }
    }

    function Stop-TestVm($Vm) {
        if ($Vm -and (Test-Path "/proc/$($Vm.Pid)")) { Stop-Process -Id $Vm.Pid -Force -ErrorAction SilentlyContinue }
    }
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Mirror cmdlet shape' {
    It '<_> takes VMName, QmpSocket, Drive and Session from the pipeline by property name' -ForEach @(
        'Start-DriveMirror', 'Get-DriveMirror', 'Wait-DriveMirror', 'Suspend-DriveMirror', 'Resume-DriveMirror', 'Stop-DriveMirror') {
        $command = Get-Command $_
        foreach ($name in 'VMName', 'QmpSocket', 'Drive', 'Session', 'HostName') {
            $attribute = $command.Parameters[$name].Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }
            $attribute.ValueFromPipelineByPropertyName | Should -BeTrue -Because "-$name of $_ should bind by property name"
        }
    }

    It 'Stop-DriveMirror has ConfirmImpact High and the state-changing cmdlets support -WhatIf' {
        $stop = Get-Command Stop-DriveMirror
        $stop.ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $true)[0].ConfirmImpact | Should -Be 'High'
        foreach ($name in 'Start-DriveMirror', 'Suspend-DriveMirror', 'Resume-DriveMirror', 'Stop-DriveMirror') {
            (Get-Command $name).Parameters.ContainsKey('WhatIf') | Should -BeTrue
        }
        (Get-Command Get-DriveMirror).Parameters.ContainsKey('WhatIf') | Should -BeFalse
    }

    It 'Start-DriveMirror requires -Destination and offers Full and Top sync' {
        $parameter = (Get-Command Start-DriveMirror).Parameters['Destination']
        ($parameter.Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }).Mandatory | Should -BeTrue
        [enum]::GetNames((Get-Command Start-DriveMirror).Parameters['Sync'].ParameterType) | Should -Be @('Full', 'Top')
    }
}

Describe 'Mirroring a local QEMU VM' {
    BeforeAll {
        $script:vm = Start-TestVm -Name 'pm1'
        $script:destination = Join-Path $TestDrive 'copy.qcow2'
    }

    AfterAll {
        Stop-TestVm $script:vm
    }

    It 'runs nothing with -WhatIf: no job, no destination file' {
        Start-DriveMirror -QmpSocket $script:vm.QmpSocket -Destination $script:destination -WhatIf
        $script:destination | Should -Not -Exist
        Get-DriveMirror -QmpSocket $script:vm.QmpSocket | Should -BeNullOrEmpty
    }

    It 'reports a drive that does not exist as DriveNotFound, listing the disks' {
        $errors = $null
        Start-DriveMirror -QmpSocket $script:vm.QmpSocket -Drive nope -Destination $script:destination -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'DriveNotFound,*'
        $errors[0].Exception.Message | Should -BeLike '*virtio0*'
        $script:destination | Should -Not -Exist
    }

    It 'reports an unreachable NFS destination as DestinationUnreachable and starts nothing' {
        $errors = $null
        Start-DriveMirror -QmpSocket $script:vm.QmpSocket -Destination 'nfs://127.0.0.99/images/x.qcow2' -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'DestinationUnreachable,*'
        $errors[0].CategoryInfo.Category | Should -Be 'ConnectionError'
        Get-DriveMirror -QmpSocket $script:vm.QmpSocket | Should -BeNullOrEmpty
    }

    It 'refuses a smaller existing destination with DestinationSizeMismatch' {
        $small = Join-Path $TestDrive 'small.qcow2'
        & qemu-img create -q -f qcow2 $small 8M
        { Start-DriveMirror -QmpSocket $script:vm.QmpSocket -Destination $small -ReuseExisting -ErrorAction Stop } |
            Should -Throw -ErrorId 'DestinationSizeMismatch,*'
    }

    It 'mirrors until Ready with -Wait -PassThru, and Get-DriveMirror shows the job' {
        $job = Start-DriveMirror -QmpSocket $script:vm.QmpSocket -Destination $script:destination -Wait -PassThru
        $job.State | Should -Be 'Ready'
        $job.Ready | Should -BeTrue
        $job.JobId | Should -Be 'rt-mirror-virtio0'
        $job.Destination | Should -Be $script:destination
        $job.PercentComplete | Should -Be 100
        $job.HostName | Should -Be 'localhost'
        $listed = Get-DriveMirror -QmpSocket $script:vm.QmpSocket
        $listed.Drive | Should -Be 'virtio0'
        $listed.State | Should -Be 'Ready'
    }

    It 'refuses a second mirror of the same drive' {
        { Start-DriveMirror -QmpSocket $script:vm.QmpSocket -Destination (Join-Path $TestDrive 'two.qcow2') -ErrorAction Stop } |
            Should -Throw -ErrorId 'MirrorAlreadyRunning,*'
    }

    It 'keeps the job with Stop-DriveMirror -WhatIf' {
        Stop-DriveMirror -QmpSocket $script:vm.QmpSocket -WhatIf
        (Get-DriveMirror -QmpSocket $script:vm.QmpSocket).State | Should -Be 'Ready'
    }

    It 'stops from the pipeline, leaving a byte-identical copy' {
        $stopped = Get-DriveMirror -QmpSocket $script:vm.QmpSocket | Stop-DriveMirror -Confirm:$false -PassThru
        $stopped.State | Should -Be 'Stopped'
        Get-DriveMirror -QmpSocket $script:vm.QmpSocket | Should -BeNullOrEmpty
        & qemu-img compare -U -f qcow2 -F qcow2 $script:vm.Image $script:destination | Out-Null
        $LASTEXITCODE | Should -Be 0
    }
}

Describe 'A mirror that is not in sync' {
    BeforeAll {
        $script:slow = Start-TestVm -Name 'pm2' -SizeMiB 48 -Fill
        $script:slowCopy = Join-Path $TestDrive 'slow.qcow2'
        Start-DriveMirror -QmpSocket $script:slow.QmpSocket -Destination $script:slowCopy -BandwidthMBps 1
    }

    AfterAll {
        Stop-TestVm $script:slow
    }

    It 'pauses and resumes' {
        (Suspend-DriveMirror -QmpSocket $script:slow.QmpSocket -PassThru).State | Should -Be 'Paused'
        (Resume-DriveMirror -QmpSocket $script:slow.QmpSocket -PassThru).State | Should -Be 'Running'
    }

    It 'times out Wait-DriveMirror with MirrorWaitTimeout, naming VM, drive and destination' {
        $errors = $null
        Wait-DriveMirror -QmpSocket $script:slow.QmpSocket -TimeoutSeconds 2 -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'MirrorWaitTimeout,*'
        $errors[0].Exception.Message | Should -BeLike "*$($script:slow.QmpSocket)*virtio0*$($script:slowCopy)*"
    }

    It 'refuses to stop or pivot without -Force, and cancels with it, removing the copy it created' {
        { Stop-DriveMirror -QmpSocket $script:slow.QmpSocket -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'MirrorNotReady,*'
        { Stop-DriveMirror -QmpSocket $script:slow.QmpSocket -Pivot -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'MirrorNotReady,*'
        $result = Stop-DriveMirror -QmpSocket $script:slow.QmpSocket -Force -Confirm:$false -PassThru -WarningVariable warnings -WarningAction SilentlyContinue
        $result.State | Should -Be 'Cancelled'
        $warnings | Should -Not -BeNullOrEmpty
        $script:slowCopy | Should -Not -Exist
        Get-DriveMirror -QmpSocket $script:slow.QmpSocket | Should -BeNullOrEmpty
    }
}

Describe 'A VM that is not running' {
    It 'is reported as VmNotRunning by every mirror cmdlet' {
        $socket = Join-Path $TestDrive 'nothing.qmp'
        { Get-DriveMirror -QmpSocket $socket -ErrorAction Stop } | Should -Throw -ErrorId 'VmNotRunning,*'
        { Start-DriveMirror -QmpSocket $socket -Destination (Join-Path $TestDrive 'x.qcow2') -ErrorAction Stop } | Should -Throw -ErrorId 'VmNotRunning,*'
    }

    It 'needs -VMName or -QmpSocket' {
        # Neither parameter set (Libvirt, Qmp) can be chosen: PowerShell's binder refuses before the cmdlet runs.
        { Get-DriveMirror -ErrorAction Stop } | Should -Throw -ErrorId 'AmbiguousParameterSet,*'
        { Get-DriveMirror -VMName '' -ErrorAction Stop } | Should -Throw -ErrorId 'InvalidArgument,*' -ExpectedMessage '*-VMName*-QmpSocket*'
    }
}

Describe 'A storage-only QEMU (-machine none)' {
    # Regression (issue 7): QEMU creates its QOM /objects container only with the first object, and qom-list '/objects'
    # answered DeviceNotFound, so Get-DriveMirror, -WhatIf and Start-DriveMirror failed on such a QEMU.
    BeforeAll {
        $script:image = Join-Path $TestDrive 'storage-only.qcow2'
        & qemu-img create -q -f qcow2 $script:image 16M
        & qemu-io -f qcow2 -c 'write -P 0x3c 0 2M' $script:image | Out-Null
        $script:socket = Join-Path $TestDrive 'storage-only.qmp'
        $pidFile = Join-Path $TestDrive 'storage-only.pid'
        & qemu-system-x86_64 -machine none -nodefaults -display none -qmp "unix:$script:socket,server=on,wait=off" `
            -daemonize -pidfile $pidFile -drive "if=none,id=disk0,format=qcow2,file=$script:image"
        if ($LASTEXITCODE -ne 0) { throw "qemu-system-x86_64 failed with $LASTEXITCODE" }
        $script:storageVm = [pscustomobject]@{ Pid = [int](Get-Content $pidFile) }
        $script:copy = Join-Path $TestDrive 'storage-only-copy.qcow2'
    }

    AfterAll { Stop-TestVm $script:storageVm }

    It 'has no mirror state before the first mirror' {
        $errors = $null
        Get-DriveMirror -QmpSocket $script:socket -ErrorVariable errors | Should -BeNullOrEmpty
        $errors | Should -BeNullOrEmpty
    }

    It 'prints the plan with -WhatIf and creates nothing' {
        $errors = $null
        Start-DriveMirror -QmpSocket $script:socket -Drive disk0 -Destination $script:copy -WhatIf -ErrorVariable errors
        $errors | Should -BeNullOrEmpty
        $script:copy | Should -Not -Exist
    }

    It 'mirrors the drive, and the stopped mirror leaves an identical copy' {
        $job = Start-DriveMirror -QmpSocket $script:socket -Drive disk0 -Destination $script:copy -Wait -PassThru
        $job.State | Should -Be 'Ready'
        Get-DriveMirror -QmpSocket $script:socket | Stop-DriveMirror -Confirm:$false | Out-Null
        (Compare-DiskImage -ReferencePath $script:image -DifferencePath $script:copy).Identical | Should -BeTrue
    }
}
