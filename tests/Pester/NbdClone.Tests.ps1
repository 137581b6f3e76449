#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force

    function Get-ParameterAttribute([string] $Command, [string] $Parameter) {
        (Get-Command $Command).Parameters[$Parameter].Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }
    }
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Invoke-NbdClone parameters' {
    It 'requires -Destination and binds it, the VM and the sessions from the pipeline by property name' {
        (Get-ParameterAttribute Invoke-NbdClone Destination).Mandatory | Should -BeTrue
        foreach ($name in 'Destination', 'VMName', 'QmpSocket', 'Drive', 'Session', 'HostName', 'DestinationSession') {
            (Get-ParameterAttribute Invoke-NbdClone $name).ValueFromPipelineByPropertyName | Should -BeTrue -Because "-$name should bind by property name"
        }
    }

    It 'supports -WhatIf and -Confirm' {
        $command = Get-Command Invoke-NbdClone
        $command.Parameters.ContainsKey('WhatIf') | Should -BeTrue
        $command.Parameters.ContainsKey('Confirm') | Should -BeTrue
        $command.OutputType.Type.FullName | Should -Contain 'ReplicaTools.Core.Clone.CloneResult'
    }

    It 'limits -Connections to 1-64' {
        { Invoke-NbdClone -QmpSocket /nonexistent.qmp -Destination "$TestDrive/c.raw" -Connections 0 -WhatIf } | Should -Throw -ErrorId 'ParameterArgumentValidationError,*'
        { Invoke-NbdClone -QmpSocket /nonexistent.qmp -Destination "$TestDrive/c.raw" -Connections 65 -WhatIf } | Should -Throw -ErrorId 'ParameterArgumentValidationError,*'
    }

    It 'does nothing with -WhatIf' {
        $destination = Join-Path $TestDrive 'whatif.raw'
        Invoke-NbdClone -QmpSocket /nonexistent/vm.qmp -Drive virtio0 -Destination $destination -Incremental -WhatIf
        $destination | Should -Not -Exist
        "$destination.rtclone-partial" | Should -Not -Exist
        "$destination.rtclone.json" | Should -Not -Exist
    }

    It 'refuses a relative destination as InvalidArgument' {
        { Invoke-NbdClone -QmpSocket /nonexistent/vm.qmp -Destination 'clone.raw' -Confirm:$false -ErrorAction Stop } |
            Should -Throw -ErrorId 'InvalidArgument,*' -ExpectedMessage '*absolute path*'
    }

    It 'refuses both -VMName and -QmpSocket, and neither' {
        # -VMName (set Libvirt) and -QmpSocket (set Qmp) exclude each other: PowerShell's binder refuses before the cmdlet runs.
        { Invoke-NbdClone -VMName vm1 -QmpSocket /run/vm1.qmp -Destination "$TestDrive/c.raw" -Confirm:$false -ErrorAction Stop } |
            Should -Throw -ErrorId 'AmbiguousParameterSet,*'
        { Invoke-NbdClone -Destination "$TestDrive/c.raw" -Confirm:$false -ErrorAction Stop } |
            Should -Throw -ErrorId 'AmbiguousParameterSet,*'
        { Invoke-NbdClone -QmpSocket '' -Destination "$TestDrive/c.raw" -Confirm:$false -ErrorAction Stop } |
            Should -Throw -ErrorId 'InvalidArgument,*' -ExpectedMessage '*-VMName*-QmpSocket*'
    }

    It 'reports a QMP socket that does not exist with the QmpConnectionFailed error id' {
        $errors = $null
        Invoke-NbdClone -QmpSocket (Join-Path $TestDrive 'missing.qmp') -Destination "$TestDrive/c.raw" -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable errors |
            Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'QmpConnectionFailed,*'
        "$TestDrive/c.raw" | Should -Not -Exist
    }
}

Describe 'Get-DiskCheckpoint and Remove-DiskCheckpoint parameters' {
    It 'Get-DiskCheckpoint reads only and binds the VM from the pipeline by property name' {
        (Get-Command Get-DiskCheckpoint).Parameters.ContainsKey('WhatIf') | Should -BeFalse
        foreach ($name in 'VMName', 'QmpSocket', 'Drive', 'Session') {
            (Get-ParameterAttribute Get-DiskCheckpoint $name).ValueFromPipelineByPropertyName | Should -BeTrue
        }
    }

    It 'Remove-DiskCheckpoint requires -Name, binds it by property name and supports -WhatIf' {
        (Get-ParameterAttribute Remove-DiskCheckpoint Name).Mandatory | Should -BeTrue
        (Get-ParameterAttribute Remove-DiskCheckpoint Name).ValueFromPipelineByPropertyName | Should -BeTrue
        (Get-Command Remove-DiskCheckpoint).Parameters.ContainsKey('WhatIf') | Should -BeTrue
    }

    It 'Remove-DiskCheckpoint -WhatIf runs nothing, also for a piped bare-QEMU checkpoint (VMName null)' {
        $checkpoint = [pscustomobject]@{ VMName = $null; QmpSocket = '/nonexistent/vm.qmp'; LibvirtUri = $null; Drive = 'virtio0'; Name = 'rtclone-0123abcd-000001' }
        { $checkpoint | Remove-DiskCheckpoint -WhatIf -ErrorAction Stop } | Should -Not -Throw
    }

    It 'Get-DiskCheckpoint reports a missing VM as VmNotFound' {
        $errors = $null
        Get-DiskCheckpoint -QmpSocket (Join-Path $TestDrive 'missing.qmp') -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'VmNotFound,*'
    }
}

Describe 'Cloning a bare QEMU on the local machine' -Skip:(-not (Get-Command qemu-system-x86_64 -ErrorAction SilentlyContinue) -or -not (Get-Command nbdcopy -ErrorAction SilentlyContinue)) {
    BeforeAll {
        $script:vmDirectory = Join-Path $TestDrive 'vm'
        New-Item -ItemType Directory -Path $script:vmDirectory | Out-Null
        $image = Join-Path $script:vmDirectory 'disk.qcow2'
        & qemu-img create -q -f qcow2 $image 32M
        & qemu-io -f qcow2 -c 'write -P 0x11 0 4M' -c 'write -P 0x22 16M 2M' $image | Out-Null
        $script:reference = Join-Path $TestDrive 'reference.raw'
        & qemu-img convert -f qcow2 -O raw $image $script:reference
        $script:socket = Join-Path $script:vmDirectory 'vm.qmp'
        $script:pidFile = Join-Path $script:vmDirectory 'vm.pid'
        & qemu-system-x86_64 -name pester-clone -machine pc,accel=tcg -S -m 16 -nodefaults -display none `
            -qmp "unix:$($script:socket),server=on,wait=off" -daemonize -pidfile $script:pidFile `
            -blockdev "driver=qcow2,node-name=drive-virtio0,file.driver=file,file.filename=$image" `
            -device 'virtio-blk-pci,drive=drive-virtio0,id=virtio0'
        $script:destination = Join-Path $TestDrive 'clone.raw'
    }

    AfterAll {
        Get-DiskCheckpoint -QmpSocket $script:socket -Drive virtio0 -CloneOnly -ErrorAction SilentlyContinue -WarningAction SilentlyContinue |
            Remove-DiskCheckpoint -Confirm:$false -WarningAction SilentlyContinue
        if (Test-Path $script:pidFile) {
            Stop-Process -Id ([int](Get-Content $script:pidFile)) -Force -ErrorAction SilentlyContinue
        }
    }

    It 'makes a full clone equal to the disk, with a checkpoint' {
        $result = Invoke-NbdClone -QmpSocket $script:socket -Drive virtio0 -Destination $script:destination -Verify -Confirm:$false
        $result.Mode | Should -Be 'Full'
        $result.Verified | Should -BeTrue
        $result.BytesTotal | Should -Be 32MB
        $result.BytesCopied | Should -Be 6MB
        $result.Checkpoint | Should -BeLike 'rtclone-*-000001'
        & cmp -s $script:reference $script:destination
        $LASTEXITCODE | Should -Be 0
        "$($script:destination).rtclone.json" | Should -Exist
    }

    It 'refreshes it incrementally, copying nothing when nothing was written' {
        $result = Invoke-NbdClone -QmpSocket $script:socket -Drive virtio0 -Destination $script:destination -Incremental -Confirm:$false
        $result.Mode | Should -Be 'Incremental'
        $result.BytesCopied | Should -Be 0
        $result.Checkpoint | Should -BeLike 'rtclone-*-000002'
        $script:incremental = $result
    }

    It 'lists the clone checkpoint from the result through the pipeline' {
        $checkpoints = @($script:incremental | Get-DiskCheckpoint -CloneOnly)
        $checkpoints.Count | Should -Be 1
        $checkpoints[0].Usable | Should -BeTrue
        $checkpoints[0].Name | Should -BeLike 'rtclone-*-000002'
    }

    It 'falls back to a full clone with a warning once the checkpoint is removed' {
        Get-DiskCheckpoint -QmpSocket $script:socket -Drive virtio0 -CloneOnly | Remove-DiskCheckpoint -Confirm:$false -WarningAction SilentlyContinue
        $warnings = $null
        $result = Invoke-NbdClone -QmpSocket $script:socket -Drive virtio0 -Destination $script:destination -Incremental -Confirm:$false -WarningVariable warnings -WarningAction SilentlyContinue
        $result.Mode | Should -Be 'Full'
        $result.FallbackReason | Should -BeLike '*does not exist*'
        ($warnings -join ' ') | Should -BeLike '*full clone instead*'
        & cmp -s $script:reference $script:destination
        $LASTEXITCODE | Should -Be 0
    }

    It 'refuses to overwrite a file without clone metadata unless -Force is given' {
        $other = Join-Path $TestDrive 'other.raw'
        Set-Content -Path $other -Value 'not a clone'
        { Invoke-NbdClone -QmpSocket $script:socket -Drive virtio0 -Destination $other -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'DestinationExists,*'
        Get-Content $other | Should -Be 'not a clone'
        (Invoke-NbdClone -QmpSocket $script:socket -Drive virtio0 -Destination $other -Force -Confirm:$false).Mode | Should -Be 'Full'
    }
}

# Field report (issue 9, case 2): a clone destination put back from its own backup (the old image and the old
# .rtclone.json) made every later Invoke-NbdClone fail with "Bitmap already exists".
Describe 'A clone destination restored from an older copy' -Skip:(-not (Get-Command qemu-system-x86_64 -ErrorAction SilentlyContinue) -or -not (Get-Command nbdcopy -ErrorAction SilentlyContinue)) {
    BeforeAll {
        $script:vmDirectory = Join-Path $TestDrive 'restored-vm'
        New-Item -ItemType Directory -Path $vmDirectory | Out-Null
        $image = Join-Path $vmDirectory 'disk.qcow2'
        & qemu-img create -q -f qcow2 $image 32M
        & qemu-io -f qcow2 -c 'write -P 0x11 0 4M' $image | Out-Null
        $script:socket = Join-Path $vmDirectory 'vm.qmp'
        $script:testSocket = Join-Path $vmDirectory 'test.qmp'
        $script:pidFile = Join-Path $vmDirectory 'vm.pid'
        & qemu-system-x86_64 -name pester-restored -machine pc,accel=tcg -S -m 16 -nodefaults -display none `
            -qmp "unix:$socket,server=on,wait=off" -qmp "unix:$testSocket,server=on,wait=off" -daemonize -pidfile $pidFile `
            -blockdev "driver=qcow2,node-name=drive-virtio0,file.driver=file,file.filename=$image" `
            -device 'virtio-blk-pci,drive=drive-virtio0,id=virtio0'
        $script:destination = Join-Path $TestDrive 'a.raw'
        $script:saved = Join-Path $TestDrive 'saved'
        New-Item -ItemType Directory -Path $saved | Out-Null

        # A guest write, through QEMU's own block layer (HMP qemu-io on the test monitor).
        function Write-Guest([string] $Command) {
            $qmp = [System.Net.Sockets.Socket]::new([System.Net.Sockets.AddressFamily]::Unix, [System.Net.Sockets.SocketType]::Stream, [System.Net.Sockets.ProtocolType]::Unspecified)
            $qmp.Connect([System.Net.Sockets.UnixDomainSocketEndPoint]::new($testSocket))
            $stream = [System.Net.Sockets.NetworkStream]::new($qmp, $true)
            $reader = [System.IO.StreamReader]::new($stream)
            $writer = [System.IO.StreamWriter]::new($stream)
            $writer.AutoFlush = $true
            $null = $reader.ReadLine()
            $writer.WriteLine('{"execute":"qmp_capabilities"}'); $null = $reader.ReadLine()
            $line = @{ execute = 'human-monitor-command'; arguments = @{ 'command-line' = "qemu-io -d virtio0/virtio-backend `"$Command`"" } } | ConvertTo-Json -Compress
            $writer.WriteLine($line)
            do { $answer = $reader.ReadLine() | ConvertFrom-Json } while (-not ($answer.PSObject.Properties.Name -contains 'return'))
            $stream.Dispose()
        }
    }

    AfterAll {
        # Removing the clone's checkpoints also removes their chain records on the VM host.
        Get-DiskCheckpoint -QmpSocket $socket -Drive virtio0 -CloneOnly -ErrorAction SilentlyContinue | Remove-DiskCheckpoint -Confirm:$false -WarningAction SilentlyContinue
        if (Test-Path $pidFile) { Stop-Process -Id ([int](Get-Content $pidFile)) -Force -ErrorAction SilentlyContinue }
    }

    It 'clones, keeps a copy of the clone and its metadata, and refreshes it incrementally' {
        (Invoke-NbdClone -QmpSocket $socket -Drive virtio0 -Destination $destination -Incremental -Confirm:$false -WarningAction SilentlyContinue).Mode | Should -Be 'Full'
        Copy-Item -Path $destination, "$destination.rtclone.json" -Destination $saved
        Write-Guest 'write -P 0x44 8M 1M'
        $script:newest = Invoke-NbdClone -QmpSocket $socket -Drive virtio0 -Destination $destination -Incremental -Confirm:$false
        $newest.Mode | Should -Be 'Incremental'
    }

    It 'after the old copy is put back, falls back to a full clone that names the cause, and replaces the stale checkpoint' {
        Copy-Item -Path (Join-Path $saved 'a.raw'), (Join-Path $saved 'a.raw.rtclone.json') -Destination $TestDrive -Force
        $warnings = $null
        $result = Invoke-NbdClone -QmpSocket $socket -Drive virtio0 -Destination $destination -Incremental -Verify -Confirm:$false -WarningVariable warnings -WarningAction SilentlyContinue
        $result.Mode | Should -Be 'Full'
        $result.Verified | Should -BeTrue
        $result.FallbackReason | Should -BeLike "*older than the VM's newest checkpoint of its chain, '$($newest.Checkpoint)'*restored from an older copy*"
        ($warnings -join ' ') | Should -BeLike '*full clone instead*'
        $checkpoints = @(Get-DiskCheckpoint -QmpSocket $socket -Drive virtio0 -CloneOnly)
        $checkpoints.Name | Should -Be @($result.Checkpoint)
        $checkpoints[0].Destination | Should -Be "localhost:$destination"
        $checkpoints[0].Orphaned | Should -BeFalse
    }

    It 'is incremental again on the next run, plain and -Repair runs included' {
        Write-Guest 'write -P 0x55 12M 1M'
        $next = Invoke-NbdClone -QmpSocket $socket -Drive virtio0 -Destination $destination -Incremental -Confirm:$false
        $next.Mode | Should -Be 'Incremental'
        $next.BytesCopied | Should -Be 1MB

        Copy-Item -Path (Join-Path $saved 'a.raw'), (Join-Path $saved 'a.raw.rtclone.json') -Destination $TestDrive -Force
        (Invoke-NbdClone -QmpSocket $socket -Drive virtio0 -Destination $destination -Confirm:$false).Mode | Should -Be 'Full'
        Copy-Item -Path (Join-Path $saved 'a.raw'), (Join-Path $saved 'a.raw.rtclone.json') -Destination $TestDrive -Force
        (Invoke-NbdClone -QmpSocket $socket -Drive virtio0 -Destination $destination -Incremental -Repair -Confirm:$false -WarningAction SilentlyContinue).Mode | Should -Be 'Full'
        (Invoke-NbdClone -QmpSocket $socket -Drive virtio0 -Destination $destination -Incremental -Confirm:$false).Mode | Should -Be 'Incremental'
    }

    It 'shows the checkpoint as orphaned once the destination is deleted, and says how to remove it' {
        Remove-Item -Path $destination, "$destination.rtclone.json"
        $warnings = $null
        $checkpoint = Get-DiskCheckpoint -QmpSocket $socket -Drive virtio0 -CloneOnly -WarningVariable warnings -WarningAction SilentlyContinue
        $checkpoint.Orphaned | Should -BeTrue
        $checkpoint.Problem | Should -BeLike "*orphaned*$destination no longer exists*Remove-DiskCheckpoint*"
        ($warnings -join ' ') | Should -BeLike "*$($checkpoint.Name)*orphaned*"
        $checkpoint | Remove-DiskCheckpoint -Confirm:$false -WarningAction SilentlyContinue
        @(Get-DiskCheckpoint -QmpSocket $socket -Drive virtio0 -CloneOnly).Count | Should -Be 0
    }
}
