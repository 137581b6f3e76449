#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# Measure-DiskThroughput, ConvertTo-ThroughputTable and Test-ReplicaTopology on the local machine: scratch files and images
# under $TestDrive, NBD exports recorded in a state directory under $TestDrive and removed by AfterAll. Short runs (1 s).

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force

    $script:haveTools = [bool](Get-Command fio -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-io -ErrorAction SilentlyContinue) -and
        [bool](Get-Command qemu-nbd -ErrorAction SilentlyContinue) -and [bool](Get-Command nbdinfo -ErrorAction SilentlyContinue)

    function New-ZeroImage([string] $Name, [long] $Size = 16MB) {
        $path = Join-Path $TestDrive $Name
        & qemu-img create -q -f raw -o preallocation=full $path $Size
        $path
    }

    function Get-Sha256([string] $Path) { (Get-FileHash -Algorithm SHA256 -Path $Path).Hash }
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Measure-DiskThroughput' {
    BeforeAll {
        $script:previousStateDirectory = $env:REPLICATOOLS_NBD_STATE_DIR
        $env:REPLICATOOLS_NBD_STATE_DIR = Join-Path $TestDrive 'nbd-state'
    }

    AfterAll {
        Get-NbdExport -WarningAction SilentlyContinue -ErrorAction SilentlyContinue | Remove-NbdExport -GraceSeconds 2 -Confirm:$false -ErrorAction SilentlyContinue
        $env:REPLICATOOLS_NBD_STATE_DIR = $script:previousStateDirectory
    }

    Context 'Parameters' {
        It 'takes -Target by position and from objects by property name (Uri, Device, Path, FullName)' {
            $target = (Get-Command Measure-DiskThroughput).Parameters['Target']
            $target.Aliases | Should -Be @('Uri', 'Device', 'Path', 'FullName')
            ($target.Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }).ValueFromPipelineByPropertyName | Should -BeTrue
            ($target.Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }).Position | Should -Be 0
        }

        It 'offers the engines Auto, Fio and QemuImgBench, and the seed''s defaults' {
            $command = Get-Command Measure-DiskThroughput
            [enum]::GetNames($command.Parameters['Engine'].ParameterType) | Should -Be @('Auto', 'Fio', 'QemuImgBench')
            [enum]::GetNames($command.Parameters['Pattern'].ParameterType) | Should -Be @('Sequential', 'Random')
            $command.Parameters['WhatIf'] | Should -Not -BeNullOrEmpty
            (Get-Help Measure-DiskThroughput -Parameter BlockSize).description.Text | Should -BeLike '*Default 512 and 1MB*'
        }

        It 'has help with examples' {
            $help = Get-Help Measure-DiskThroughput -Full
            $help.Synopsis | Should -BeLike '*throughput*'
            @($help.examples.example).Count | Should -BeGreaterOrEqual 3
            (Get-Help ConvertTo-ThroughputTable).examples.example | Should -Not -BeNullOrEmpty
        }
    }

    Context 'A scratch file on this machine' {
        It 'creates, measures 512 B and 1 MiB reads and writes, removes it, and renders the seed''s table' {
            if (-not $script:haveTools) { Set-ItResult -Skipped -Because 'fio, qemu-io, qemu-nbd and nbdinfo are not installed' }
            $path = Join-Path $TestDrive 'scratch.raw'
            $report = Join-Path $TestDrive 'report.html'
            $samples = Measure-DiskThroughput -Target $path -DurationSeconds 1 -ScratchSize 16MB -ReportPath $report

            $samples.Count | Should -Be 4
            $samples[0] | Should -BeOfType ([ReplicaTools.Core.Bench.ThroughputSample])
            $samples.BlockSize | Should -Be @(512, 512, 1MB, 1MB)
            $samples.Operation | Should -Be @('Read', 'Write', 'Read', 'Write')
            $samples | ForEach-Object { $_.MBps | Should -BeGreaterThan 0; $_.Protocol | Should -Be 'Direct'; $_.HostName | Should -Be 'localhost' }
            $path | Should -Not -Exist

            $rows = $samples | ConvertTo-ThroughputTable
            @($rows).Count | Should -Be 1
            $rows.Read1MB | Should -Be ($samples | Where-Object { $_.BlockSize -eq 1MB -and $_.Operation -eq 'Read' }).MBps
            $text = $rows | Format-Table -View Seed | Out-String -Width 200
            $text | Should -BeLike '*Protocol*Server*512 Reads (MB/s)*512 Writes (MB/s)*1MB Reads (MB/s)*1MB Writes (MB/s)*'
            ($samples | ConvertTo-ThroughputTable -Markdown) | Should -BeLike 'Protocol | Server | 512 Reads (MB/s) | 512 Writes (MB/s) | 1MB Reads (MB/s) | 1MB Writes (MB/s)*'

            $html = Get-Content -Raw $report
            $html | Should -BeLike '*<svg *'
            $html | Should -Not -BeLike '*<script*'
        }

        It 'prints the exact commands with -WhatIf and creates nothing' {
            if (-not $script:haveTools) { Set-ItResult -Skipped -Because 'fio is not installed' }
            $path = Join-Path $TestDrive 'whatif.raw'
            $text = Get-WhatIfText { Measure-DiskThroughput -Target $path -WhatIf }
            $text | Should -BeLike '*What if*scratch*'
            $text | Should -BeLike "*``[localhost``] fio *--rw=write*--direct=1*$path*"
            $path | Should -Not -Exist
        }
    }

    Context 'Exports and images from the pipeline' {
        It 'measures an NbdExport piped from New-NbdExport, labelled by its server' {
            if (-not $script:haveTools) { Set-ItResult -Skipped -Because 'qemu-nbd, nbdinfo and fio are not installed' }
            $image = New-ZeroImage 'export.raw'
            $samples = New-NbdExport -Path $image -Name pester-bench | Measure-DiskThroughput -BlockSize 64KB -DurationSeconds 1
            $samples.Count | Should -Be 2
            $samples | ForEach-Object { $_.Protocol | Should -Be 'NBD'; $_.Server | Should -Be 'qemu-nbd'; $_.Target | Should -BeLike 'nbd://127.0.0.1:*/pester-bench'; $_.Engine | Should -Be 'Fio' }
            [System.IO.File]::ReadAllBytes($image)[0..511] | Where-Object { $_ -ne 0 } | Should -Not -BeNullOrEmpty -Because 'fio wrote through the export'
            Get-NbdExport -Name pester-bench | Remove-NbdExport -Confirm:$false
        }

        It 'only reads a read-only export, with a warning' {
            if (-not $script:haveTools) { Set-ItResult -Skipped -Because 'qemu-nbd, nbdinfo and fio are not installed' }
            $image = New-ZeroImage 'readonly.raw'
            $export = New-NbdExport -Path $image -Name pester-ro -ReadOnly
            $warnings = $null
            $samples = $export | Measure-DiskThroughput -BlockSize 64KB -DurationSeconds 1 -WarningVariable warnings -WarningAction SilentlyContinue
            $samples.Operation | Should -Be @('Read')
            $warnings -join "`n" | Should -BeLike '*read-only*'
            $export | Remove-NbdExport -Confirm:$false
        }

        It 'measures an IscsiTarget piped from New-IscsiTarget with qemu-img bench, labelled tgt' {
            if (-not ($script:haveTools -and (Get-Command tgtd -ErrorAction SilentlyContinue))) { Set-ItResult -Skipped -Because 'tgt and qemu-utils are not installed' }
            $tgtd = Start-TestTgtd
            try {
                $disk = New-ZeroImage 'lun.raw'
                $configDirectory = Join-Path $TestDrive 'tgt-conf.d'
                New-Item -ItemType Directory -Path $configDirectory | Out-Null
                $iqn = 'iqn.2024-10.org.replicatools.pester:bench-{0}' -f [guid]::NewGuid().ToString('N').Substring(0, 6)
                $target = New-IscsiTarget -Iqn $iqn -BackingStore $disk -ControlPort $tgtd.ControlPort -ConfigDirectory $configDirectory
                $samples = $target | Measure-DiskThroughput -BlockSize 64KB -DurationSeconds 1
                $samples.Operation | Should -Be @('Read', 'Write')
                $samples | ForEach-Object { $_.Protocol | Should -Be 'iSCSI'; $_.Server | Should -Be 'tgt'; $_.Engine | Should -Be 'QemuImgBench'; $_.Target | Should -Be $target.Uri }
                [System.IO.File]::ReadAllBytes($disk)[0] | Should -Be 0x5a -Because 'qemu-img bench writes its pattern through the LUN'
                $target | Remove-IscsiTarget -Confirm:$false
            }
            finally {
                Stop-TestTgtd $tgtd
            }
        }

        It 'takes a DiskImage by its Path, and skips optional properties that are present but empty' {
            if (-not $script:haveTools) { Set-ItResult -Skipped -Because 'fio and qemu-img are not installed' }
            $image = New-ZeroImage 'image.raw'
            (Get-DiskImage -Path $image | Measure-DiskThroughput -BlockSize 4KB -Operation Read -DurationSeconds 1).Target | Should -Be $image
            ([pscustomobject]@{ Uri = $null; Device = ''; Path = $image } | Measure-DiskThroughput -BlockSize 4KB -Operation Read -DurationSeconds 1).Target | Should -Be $image
        }
    }

    Context 'Bad input: a clear error and nothing written' {
        It 'refuses writes to a target that holds data (TargetHoldsData), and measures it with -Force' {
            if (-not $script:haveTools) { Set-ItResult -Skipped -Because 'fio and qemu-io are not installed' }
            $path = New-ZeroImage 'data.raw'
            $stream = [System.IO.File]::OpenWrite($path)
            try { $stream.Position = 12MB; $stream.Write([byte[]](1..64), 0, 64) } finally { $stream.Dispose() }
            $before = Get-Sha256 $path

            $errors = $null
            Measure-DiskThroughput -Target $path -DurationSeconds 1 -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
            $errors[0].FullyQualifiedErrorId | Should -BeLike 'TargetHoldsData,*'
            $errors[0].CategoryInfo.Category | Should -Be 'PermissionDenied'
            $errors[0].Exception.Message | Should -BeLike "*'localhost'*$path*-Force*"
            Get-Sha256 $path | Should -Be $before

            (Measure-DiskThroughput -Target $path -BlockSize 4KB -Operation Write -DurationSeconds 1 -Force).Operation | Should -Be 'Write'
            Get-Sha256 $path | Should -Not -Be $before
        }

        It 'refuses a block size that is not a multiple of 512 with direct I/O (BlockSizeInvalid)' {
            $path = Join-Path $TestDrive 'never.raw'
            $errors = $null
            Measure-DiskThroughput -Target $path -BlockSize 1000 -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
            $errors[0].FullyQualifiedErrorId | Should -BeLike 'BlockSizeInvalid,*'
            $errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
            $errors[0].Exception.Message | Should -BeLike '*-Buffered*'
            $path | Should -Not -Exist
        }

        It 'reports an unreachable URL (TargetUnreachable) naming it' {
            if (-not $script:haveTools) { Set-ItResult -Skipped -Because 'nbdinfo is not installed' }
            $url = "nbd://127.0.0.1:$(Get-FreeTcpPort)/gone"
            $errors = $null
            Measure-DiskThroughput -Target $url -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
            $errors[0].FullyQualifiedErrorId | Should -BeLike 'TargetUnreachable,*'
            $errors[0].CategoryInfo.Category | Should -Be 'ConnectionError'
            $errors[0].Exception.Message | Should -BeLike "*$url*"
        }

        It 'reports fio missing on the host (ProgramNotFound) before writing' {
            if (-not $script:haveTools) { Set-ItResult -Skipped -Because 'fio is not installed' }
            $path = New-ZeroImage 'nofio.raw'
            $before = Get-Sha256 $path
            $bin = Join-Path $TestDrive 'bin-without-fio'
            New-Item -ItemType Directory -Path $bin | Out-Null
            Get-ChildItem /usr/bin -File | Where-Object Name -NE 'fio' | ForEach-Object { New-Item -ItemType SymbolicLink -Path (Join-Path $bin $_.Name) -Target $_.FullName | Out-Null }
            $savedPath = $env:PATH
            try {
                $env:PATH = "${bin}:/usr/sbin"
                $errors = $null
                Measure-DiskThroughput -Target $path -DurationSeconds 1 -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
            }
            finally {
                $env:PATH = $savedPath
            }

            $errors[0].FullyQualifiedErrorId | Should -BeLike 'ProgramNotFound,*'
            $errors[0].CategoryInfo.Category | Should -Be 'NotInstalled'
            $errors[0].Exception.Message | Should -BeLike '*fio*apt-get install fio*'
            Get-Sha256 $path | Should -Be $before
        }
    }
}

Describe 'Test-ReplicaTopology' {
    BeforeAll {
        $script:local = [ReplicaTools.Core.Remote.ReplicaSession]::Local
        $script:haveDrbd = [bool](Get-Command drbdadm -ErrorAction SilentlyContinue) -and [bool](Get-Command ping -ErrorAction SilentlyContinue)
    }

    It 'takes exactly two storage hosts, supports -WhatIf, and has help with examples' {
        $command = Get-Command Test-ReplicaTopology
        $command.Parameters['StorageHost'].Attributes.Where({ $_ -is [System.Management.Automation.ParameterAttribute] }).ValueFromPipeline | Should -BeTrue
        $command.Parameters.ContainsKey('WhatIf') | Should -BeTrue
        @((Get-Help Test-ReplicaTopology).examples.example).Count | Should -BeGreaterOrEqual 2

        { Test-ReplicaTopology -StorageHost $script:local -ErrorAction Stop } | Should -Throw '*exactly two*'
    }

    It 'checks a pair on this machine: every check has a status and a reason, the DRBD module is missing here, and the disks were measured' {
        if (-not ($script:haveTools -and $script:haveDrbd)) { Set-ItResult -Skipped -Because 'drbd-utils, iputils-ping, fio and qemu-utils are needed' }
        $a = New-ZeroImage 'backing-a.raw' 32MB
        $b = New-ZeroImage 'backing-b.raw' 32MB
        $report = Join-Path $TestDrive 'preflight.html'
        $result = Test-ReplicaTopology -StorageHost $script:local, $script:local -BackingDisk $a, $b -DurationSeconds 1 -ResyncRateMBps 10 -ReportPath $report -Confirm:$false

        $result | Should -BeOfType ([ReplicaTools.Core.Bench.ReplicaTopologyTestResult])
        $result.Checks | ForEach-Object { $_.Status | Should -BeIn @('Pass', 'Warn', 'Fail'); $_.Reason | Should -Not -BeNullOrEmpty }
        $result.Checks.Name | Should -Contain 'RoundTrip'
        ($result.Checks | Where-Object Name -EQ 'BackingDiskSize').Status | Should -Be 'Pass'
        ($result.Checks | Where-Object Name -EQ 'SequentialWrite').Status | Should -Be @('Pass', 'Pass')
        $result.EstimatedWriteLatencyUs | Should -BeGreaterThan 0
        $result.EstimatedInitialSync.TotalSeconds | Should -BeLessOrEqual (32MB / 10e6 + 0.01)
        if (-not (Test-Path /proc/drbd)) {
            $result.Status | Should -Be 'Fail'
            $result.Failed.Name | Should -Contain 'DrbdKernelModule'
        }
        Get-Content -Raw $report | Should -BeLike '*DrbdKernelModule*'
        ($result | Format-List | Out-String -Width 200) | Should -BeLike '*Checks*Reachable*'
    }

    It 'writes nothing to the backing disks with -WhatIf, and says so in the checks' {
        if (-not ($script:haveTools -and $script:haveDrbd)) { Set-ItResult -Skipped -Because 'drbd-utils, iputils-ping, fio and qemu-utils are needed' }
        $a = New-ZeroImage 'whatif-a.raw' 32MB
        $before = Get-Sha256 $a
        $result = Test-ReplicaTopology -StorageHost $script:local, $script:local -BackingDisk $a -WhatIf
        Get-Sha256 $a | Should -Be $before
        $result.DiskSamples | Should -BeNullOrEmpty
        ($result.Checks | Where-Object Name -EQ 'SequentialWrite').Reason | Should -BeLike '*not confirmed*'
    }
}
