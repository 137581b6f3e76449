#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# The quorum cmdlets as a user drives them: a real, paused, OS-less QEMU on this machine with three replicas in $TestDrive,
# one corrupted behind QEMU's back, found, compared and repaired through the pipeline.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
    $env:REPLICATOOLS_QUORUM_STATE_DIR = Join-Path $TestDrive 'state'

    # A QEMU with three QMP monitors: the module's, the event recorder's, and the test's own (guest writes and reads).
    function Start-QuorumTestVm([string] $Name) {
        $vm = [pscustomobject]@{
            QmpSocket = Join-Path $TestDrive "$Name.qmp"
            EventSocket = Join-Path $TestDrive "$Name.events.qmp"
            TestSocket = Join-Path $TestDrive "$Name.test.qmp"
            Pid = 0
        }
        $pidFile = Join-Path $TestDrive "$Name.pid"
        & qemu-system-x86_64 -name $Name -machine pc,accel=tcg -S -m 16 -nodefaults -display none -daemonize -pidfile $pidFile `
            -qmp "unix:$($vm.QmpSocket),server=on,wait=off" -qmp "unix:$($vm.EventSocket),server=on,wait=off" -qmp "unix:$($vm.TestSocket),server=on,wait=off"
        if ($LASTEXITCODE -ne 0) { throw "qemu-system-x86_64 failed with $LASTEXITCODE" }
        $vm.Pid = [int](Get-Content $pidFile)
        $vm
    }

    function Stop-QuorumTestVm($Vm) {
        if ($Vm -and (Test-Path "/proc/$($Vm.Pid)")) { Stop-Process -Id $Vm.Pid -Force -ErrorAction SilentlyContinue }
    }

    # One QMP command on the test's own monitor, by hand as an operator would (socat).
    function Invoke-TestQmp($Vm, [string] $Command, [hashtable] $Arguments) {
        $message = @{ execute = $Command }
        if ($Arguments) { $message.arguments = $Arguments }
        $text = "{`"execute`":`"qmp_capabilities`"}`n" + ($message | ConvertTo-Json -Compress -Depth 10) + "`n"
        $reply = $text | & socat -t 5 - "UNIX-CONNECT:$($Vm.TestSocket)"
        $answer = $reply | ForEach-Object { $_ | ConvertFrom-Json } | Where-Object { $_.PSObject.Properties.Name -contains 'return' -or $_.PSObject.Properties.Name -contains 'error' } | Select-Object -Last 1
        if ($answer.error) { throw "QMP $Command failed: $($answer.error.desc)" }
        $answer.return
    }

    # The guest reads or writes through its disk (HMP qemu-io on the device's block backend).
    function Invoke-GuestIo($Vm, [string] $Drive, [string] $IoCommand) {
        Invoke-TestQmp $Vm 'human-monitor-command' @{ 'command-line' = "qemu-io -d $Drive/virtio-backend `"$IoCommand`"" } | Out-Null
    }

    function Set-Bytes([string] $Path, [long] $Offset, [byte[]] $Bytes) {
        $stream = [System.IO.File]::Open($Path, 'Open', 'Write', 'ReadWrite')
        try { $stream.Seek($Offset, 'Begin') | Out-Null; $stream.Write($Bytes, 0, $Bytes.Length); $stream.Flush($true) } finally { $stream.Dispose() }
    }
}

AfterAll {
    Remove-Item Env:\REPLICATOOLS_QUORUM_STATE_DIR -ErrorAction SilentlyContinue
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Quorum cmdlet shape and help' {
    It '<_> exists, has help with examples, and takes the VM from the pipeline by property name' -ForEach @('New-QuorumDisk', 'Get-QuorumDisk', 'Test-QuorumDisk', 'Repair-QuorumDisk') {
        $command = Get-Command $_ -Module ReplicaTools
        foreach ($name in 'VMName', 'QmpSocket', 'LibvirtUri', 'Drive', 'Session') {
            ($command.Parameters[$name].Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }).ValueFromPipelineByPropertyName |
                Should -BeTrue -Because "-$name of $_ binds by property name"
        }
        $help = Get-Help $_ -Full
        $help.Synopsis | Should -Not -BeNullOrEmpty
        @($help.Examples.Example).Count | Should -BeGreaterThan 1
    }

    It 'Repair-QuorumDisk asks first (ConfirmImpact High); New- supports -WhatIf; Get- and Test- change nothing' {
        (Get-Command Repair-QuorumDisk).ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $true)[0].ConfirmImpact | Should -Be 'High'
        (Get-Command New-QuorumDisk).Parameters.ContainsKey('WhatIf') | Should -BeTrue
        (Get-Command Get-QuorumDisk).Parameters.ContainsKey('WhatIf') | Should -BeFalse
        (Get-Command Test-QuorumDisk).Parameters.ContainsKey('WhatIf') | Should -BeFalse
    }

    It 'Repair-QuorumDisk -Replica binds a replica''s NodeName from the pipeline' {
        $replica = (Get-Command Repair-QuorumDisk).Parameters['Replica']
        $replica.Aliases | Should -Contain 'NodeName'
        ($replica.Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }).ValueFromPipelineByPropertyName | Should -BeTrue
    }

    It 'says plainly what libvirt does not do for the disk, and which events Get-QuorumDisk has' {
        $new = (Get-Help New-QuorumDisk -Full).Description.Text -join "`n"
        $new | Should -Match 'libvirt does not know the disk'
        $new | Should -Match 'domblklist'
        $new | Should -Match 'tainted'
        $get = (Get-Help Get-QuorumDisk -Full).Description.Text -join "`n"
        $get | Should -Match 'keeps no history of events'
        $get | Should -Match 'recorder'
        (Get-Help about_ReplicaTools | Out-String) | Should -Match 'Repair-QuorumDisk'
    }

    It 'New-QuorumDisk needs -VMName, -QmpSocket or -NoAttach' {
        { New-QuorumDisk -Replica /tmp/a.raw, /tmp/b.raw -VoteThreshold 2 -ErrorAction Stop } |
            Should -Throw -ErrorId 'AmbiguousParameterSet,ReplicaTools.Commands.NewQuorumDiskCommand'
    }
}

Describe 'A quorum disk of three replicas on a running QEMU' {
    BeforeAll {
        $script:vm = Start-QuorumTestVm 'qvm'
        $script:replicas = 1..3 | ForEach-Object { Join-Path $TestDrive "r$_.raw" }
    }

    AfterAll {
        Stop-QuorumTestVm $script:vm
    }

    It '-WhatIf shows every step, host by host, and changes nothing' {
        $text = Get-WhatIfText { New-QuorumDisk -QmpSocket $script:vm.QmpSocket -EventQmpSocket $script:vm.EventSocket -Replica $script:replicas -VoteThreshold 2 -Size 32MB -WhatIf }
        $text | Should -Match ([regex]::Escape("[localhost] qmp $($script:vm.QmpSocket): {`"execute`":`"blockdev-add`""))
        $text | Should -Match '"driver":"quorum","node-name":"quorum0-quorum","vote-threshold":2'
        $text | Should -Match '"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"quorum0"'
        $text | Should -Match 'qemu-img create -q -f raw'
        $text | Should -Match 'rt-quorum-recorder qmp'
        $script:replicas | ForEach-Object { Test-Path $_ | Should -BeFalse }
        Get-QuorumDisk -QmpSocket $script:vm.QmpSocket | Should -BeNullOrEmpty
    }

    It 'refuses bad input with a specific error before anything is attached' -ForEach @(
        @{ Threshold = 4; Sizes = $false; Replicas = 'a', 'b', 'c'; ErrorId = 'QuorumThresholdInvalid'; Category = 'InvalidArgument' }
        @{ Threshold = 2; Sizes = $true; Replicas = 'big', 'small'; ErrorId = 'QuorumReplicaSizeMismatch'; Category = 'InvalidArgument' }
        @{ Threshold = 2; Sizes = $false; Replicas = 'a', 'b', 'a'; ErrorId = 'QuorumReplicaTwice'; Category = 'InvalidArgument' }
        @{ Threshold = 2; Sizes = $false; Replicas = 'a', 'missing', 'c'; ErrorId = 'QuorumReplicaNotFound'; Category = 'ObjectNotFound' }
    ) {
        $dir = Join-Path $TestDrive 'bad'
        New-Item -ItemType Directory -Force $dir | Out-Null
        if ($Sizes) {
            & qemu-img create -q -f raw (Join-Path $dir 'big.raw') 64M
            & qemu-img create -q -f raw (Join-Path $dir 'small.raw') 32M
        }
        else {
            foreach ($name in 'a', 'b', 'c') { & qemu-img create -q -f raw (Join-Path $dir "$name.raw") 32M }
        }
        $paths = $Replicas | ForEach-Object { Join-Path $dir "$_.raw" }

        New-QuorumDisk -QmpSocket $script:vm.QmpSocket -Replica $paths -VoteThreshold $Threshold -ErrorVariable failed -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $failed[0].FullyQualifiedErrorId | Should -BeLike "$ErrorId*"
        $failed[0].CategoryInfo.Category | Should -Be $Category
        $failed[0].Exception.Message | Should -Not -BeNullOrEmpty
        Get-QuorumDisk -QmpSocket $script:vm.QmpSocket | Should -BeNullOrEmpty
    }

    It 'attaches, creating the replicas, and Get-QuorumDisk shows it healthy' {
        $disk = New-QuorumDisk -QmpSocket $script:vm.QmpSocket -EventQmpSocket $script:vm.EventSocket -Replica $script:replicas -VoteThreshold 2 -Size 32MB -Confirm:$false
        $disk.GetType().Name | Should -Be 'QuorumDisk'
        $disk.State | Should -Be 'Healthy'
        $disk.Drive | Should -Be 'quorum0'
        @($disk.Replicas.Location) | Should -Be $script:replicas
        $disk.BlockdevJson[-1] | Should -Match '"driver":"quorum"'
        $disk.LibvirtXml | Should -Match '<qemu:commandline'
        $script:replicas | ForEach-Object { Test-Path $_ | Should -BeTrue }
        ($disk | Out-String) | Should -Match 'Healthy'
        (Get-QuorumDisk -QmpSocket $script:vm.QmpSocket).EventSource | Should -Match 'recorder file'
    }

    It 'a replica corrupted on disk is outvoted, reported by name, and found by the comparison' {
        Invoke-GuestIo $script:vm 'quorum0' 'write -P 0x5a 0 4M'
        Set-Bytes $script:replicas[1] 1000000 ([byte[]](1, 2, 3, 4))
        Invoke-GuestIo $script:vm 'quorum0' 'read 0 4M'

        $deadline = (Get-Date).AddSeconds(10)
        do {
            $disk = Get-QuorumDisk -QmpSocket $script:vm.QmpSocket -WarningVariable warned -WarningAction SilentlyContinue
            if ($disk.Replicas[1].Health -eq 'Corrupt') { break }
            Start-Sleep -Milliseconds 250
        } while ((Get-Date) -lt $deadline)
        $disk.State | Should -Be 'Degraded'
        @($disk.Replicas.Health) | Should -Be @('Healthy', 'Corrupt', 'Healthy')
        $disk.Replicas[1].NodeName | Should -Be 'quorum0-quorum-r2'
        $warned | Should -Match 'quorum0-quorum-r2'
        ($disk.Replicas | Out-String) | Should -Match 'Corrupt'

        $test = Test-QuorumDisk -QmpSocket $script:vm.QmpSocket -WarningAction SilentlyContinue
        @($test.InMajority) | Should -Be @($true, $false, $true)
        $test[1].FirstDifference | Should -Be 1000000
        $test[1].Location | Should -Be $script:replicas[1]
    }

    It 'Test-QuorumDisk | Repair-QuorumDisk -WhatIf shows the QMP steps and changes nothing' {
        $text = Get-WhatIfText { Test-QuorumDisk -QmpSocket $script:vm.QmpSocket -WarningAction SilentlyContinue | Where-Object { -not $_.InMajority } | Repair-QuorumDisk -WhatIf }
        $text | Should -Match '"execute":"x-blockdev-change","arguments":{"parent":"quorum0-quorum","child":"children.1"}'
        $text | Should -Match '"execute":"blockdev-mirror"'
        $text | Should -Match '"execute":"block-job-cancel"'
        (Get-QuorumDisk -QmpSocket $script:vm.QmpSocket -WarningAction SilentlyContinue).Replicas[1].Child | Should -Be 'children.1'
    }

    It 'Repair-QuorumDisk rewrites the bad replica from the majority: all three byte-identical' {
        $repaired = (Get-QuorumDisk -QmpSocket $script:vm.QmpSocket -WarningAction SilentlyContinue).Replicas |
            Where-Object Health -eq 'Corrupt' | Repair-QuorumDisk -Confirm:$false -PassThru
        $repaired.State | Should -Be 'Healthy'
        & qemu-img compare -U -f raw -F raw $script:replicas[0] $script:replicas[1] | Out-Null
        $LASTEXITCODE | Should -Be 0
        & qemu-img compare -U -f raw -F raw $script:replicas[0] $script:replicas[2] | Out-Null
        $LASTEXITCODE | Should -Be 0
        @((Test-QuorumDisk -QmpSocket $script:vm.QmpSocket).InMajority) | Should -Be @($true, $true, $true)
    }

    It 'a replica that is not in the quorum is a clear error' {
        Repair-QuorumDisk -QmpSocket $script:vm.QmpSocket -Replica 'no-such-replica' -Confirm:$false -ErrorVariable failed -ErrorAction SilentlyContinue
        $failed[0].FullyQualifiedErrorId | Should -BeLike 'QuorumReplicaNotInQuorum*'
        $failed[0].Exception.Message | Should -Match 'quorum0-quorum-r1'
    }

    It 'a quorum disk piped into Repair-QuorumDisk: every replica out of the majority is rewritten' {
        Set-Bytes $script:replicas[2] 3000000 ([byte[]](9, 9))
        @((Test-QuorumDisk -QmpSocket $script:vm.QmpSocket -WarningAction SilentlyContinue).InMajority) | Should -Be @($true, $true, $false)
        Get-QuorumDisk -QmpSocket $script:vm.QmpSocket -WarningAction SilentlyContinue | Repair-QuorumDisk -Confirm:$false
        & qemu-img compare -U -f raw -F raw $script:replicas[0] $script:replicas[2] | Out-Null
        $LASTEXITCODE | Should -Be 0
    }

    It 'two replicas corrupted differently: Test-QuorumDisk reports no majority and names them' {
        Set-Bytes $script:replicas[0] 2000000 ([byte[]](7))
        Set-Bytes $script:replicas[2] 2000000 ([byte[]](8))
        Test-QuorumDisk -QmpSocket $script:vm.QmpSocket -ErrorVariable failed -ErrorAction SilentlyContinue -WarningAction SilentlyContinue | Out-Null
        $failed[0].FullyQualifiedErrorId | Should -BeLike 'QuorumNoMajority*'
        $failed[0].CategoryInfo.Category | Should -Be 'InvalidData'
        foreach ($replica in $script:replicas) { $failed[0].Exception.Message | Should -Match ([regex]::Escape($replica)) }
    }
}

Describe 'A storage host is lost: replicas over NBD' {
    BeforeAll {
        $script:nbdVm = Start-QuorumTestVm 'nvm'
        # Three storage hosts, each a qemu-nbd serving its replica on a unix socket.
        $script:servers = foreach ($n in 1..3) {
            $image = Join-Path $TestDrive "n$n.raw"
            & qemu-img create -q -f raw $image 32M
            $socket = Join-Path $TestDrive "n$n.nbd"
            $pidFile = Join-Path $TestDrive "n$n.nbd.pid"
            & qemu-nbd -f raw -t -e 4 -x "n$n" -k $socket --fork --pid-file $pidFile $image
            [pscustomobject]@{ Image = $image; Url = "nbd+unix:///n${n}?socket=$socket"; Pid = [int](Get-Content $pidFile) }
        }
    }

    AfterAll {
        Stop-QuorumTestVm $script:nbdVm
        foreach ($server in $script:servers) { Stop-Process -Id $server.Pid -Force -ErrorAction SilentlyContinue }
    }

    It 'the VM goes on with two replicas, Get-QuorumDisk shows the lost one, and a new replica takes its place live' {
        $disk = New-QuorumDisk -QmpSocket $script:nbdVm.QmpSocket -EventQmpSocket $script:nbdVm.EventSocket -Replica $script:servers.Url -VoteThreshold 2 -Confirm:$false
        $disk.State | Should -Be 'Healthy'
        Invoke-GuestIo $script:nbdVm 'quorum0' 'write -P 0x4e 0 8M'

        Stop-Process -Id $script:servers[1].Pid -Force
        Invoke-GuestIo $script:nbdVm 'quorum0' 'write -P 0x4f 8M 4M'
        (Get-Process -Id $script:nbdVm.Pid).HasExited | Should -BeFalse
        $lost = Get-QuorumDisk -QmpSocket $script:nbdVm.QmpSocket -WarningVariable warned -WarningAction SilentlyContinue
        $lost.State | Should -Be 'Degraded'
        @($lost.Replicas.Health) | Should -Be @('Healthy', 'Unreachable', 'Healthy')
        $warned | Should -Match 'quorum0-quorum-r2'

        $destination = Join-Path $TestDrive 'n4.raw'
        $text = Get-WhatIfText { $lost.Replicas[1] | Repair-QuorumDisk -Destination $destination -WhatIf }
        $text | Should -Match '"replaces":"quorum0-quorum-r2"'
        Test-Path $destination | Should -BeFalse

        $repaired = $lost.Replicas[1] | Repair-QuorumDisk -Destination $destination -Confirm:$false -PassThru
        $repaired.State | Should -Be 'Healthy'
        $repaired.Replicas[1].Location | Should -Be $destination
        & qemu-img compare -U -f raw -F raw $script:servers[0].Image $destination | Out-Null
        $LASTEXITCODE | Should -Be 0
        & qemu-io -r -U -f raw -c 'read -P 0x4f 8M 4M' $destination | Should -Not -Match 'verification failed'
    }
}

Describe 'New-QuorumDisk -NoAttach' {
    It 'creates the replicas and returns the -blockdev JSON and the libvirt snippet' {
        $paths = 1..3 | ForEach-Object { Join-Path $TestDrive "def$_.qcow2" }
        $definition = New-QuorumDisk -NoAttach -Replica $paths -VoteThreshold 2 -Size 16MB -Format Qcow2 -Drive data -ReadPattern Quorum -RewriteCorrupted -Confirm:$false
        $definition.GetType().Name | Should -Be 'QuorumDefinition'
        $paths | ForEach-Object { (& qemu-img info --output=json $_ | ConvertFrom-Json).format | Should -Be 'qcow2' }
        $definition.QemuArguments | Should -Contain '-blockdev'
        $definition.QemuArguments | Should -Contain '-device'
        $definition.BlockdevJson[-1] | Should -Match '"rewrite-corrupted":true'
        $xml = [xml]$definition.LibvirtXml
        $xml.DocumentElement.NamespaceURI | Should -Be 'http://libvirt.org/schemas/domain/qemu/1.0'
        @($xml.DocumentElement.ChildNodes).Count | Should -Be $definition.QemuArguments.Count
    }

    It '-RewriteCorrupted with -ReadPattern Fifo, where it would do nothing, is refused' {
        New-QuorumDisk -NoAttach -Replica (Join-Path $TestDrive 'x1.raw'), (Join-Path $TestDrive 'x2.raw'), (Join-Path $TestDrive 'x3.raw') -VoteThreshold 2 -Size 1MB `
            -ReadPattern Fifo -RewriteCorrupted -ErrorVariable failed -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $failed[0].FullyQualifiedErrorId | Should -BeLike 'QuorumOptionConflict*'
        Test-Path (Join-Path $TestDrive 'x1.raw') | Should -BeFalse
    }
}
