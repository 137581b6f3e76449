#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# Local-machine NBD exports only. Every export of this suite is recorded in its own state directory under $TestDrive
# (REPLICATOOLS_NBD_STATE_DIR), never in the user's, and AfterAll removes whatever a failed test left running.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force

    function Test-ProcessRunning([int] $Id) {
        # A killed daemon may stay a zombie until PID 1 reaps it: that is not running.
        $status = Get-Content -Path "/proc/$Id/status" -ErrorAction SilentlyContinue
        [bool]($status -match '^State:\s+[^Z]')
    }

    function Wait-ProcessGone([int] $Id) {
        $deadline = [datetime]::UtcNow.AddSeconds(10)
        while ((Test-ProcessRunning $Id) -and [datetime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 100 }
        -not (Test-ProcessRunning $Id)
    }

    function Test-TcpPort([int] $Port) {
        $client = [System.Net.Sockets.TcpClient]::new()
        try { $client.ConnectAsync('127.0.0.1', $Port).Wait(3000) } catch { $false } finally { $client.Dispose() }
    }
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'NBD export cmdlets on the local machine' {
    BeforeAll {
        $script:previousStateDirectory = $env:REPLICATOOLS_NBD_STATE_DIR
        $env:REPLICATOOLS_NBD_STATE_DIR = Join-Path $TestDrive 'nbd-state'
        $script:image = Join-Path $TestDrive 'disk.raw'
        $bytes = [byte[]]::new(1MB)
        [System.Random]::new(42).NextBytes($bytes)
        [System.IO.File]::WriteAllBytes($script:image, $bytes)
        $script:haveServers = [bool](Get-Command qemu-nbd -ErrorAction SilentlyContinue) -and [bool](Get-Command nbd-server -ErrorAction SilentlyContinue) -and
            [bool](Get-Command nbdinfo -ErrorAction SilentlyContinue)
    }

    AfterAll {
        Get-NbdExport -WarningAction SilentlyContinue -ErrorAction SilentlyContinue | Remove-NbdExport -GraceSeconds 2 -Confirm:$false -ErrorAction SilentlyContinue
        $env:REPLICATOOLS_NBD_STATE_DIR = $script:previousStateDirectory
    }

    Context 'Parameters' {
        It 'New-NbdExport has a Path and a Device parameter set, each mandatory in its own' {
            $command = Get-Command New-NbdExport
            $command.ParameterSets.Name | Should -Contain 'Path'
            $command.ParameterSets.Name | Should -Contain 'Device'
            $command.DefaultParameterSet | Should -Be 'Path'
            ($command.ParameterSets | Where-Object Name -EQ 'Path').Parameters | Where-Object Name -EQ 'Path' | ForEach-Object IsMandatory | Should -BeTrue
            ($command.ParameterSets | Where-Object Name -EQ 'Device').Parameters | Where-Object Name -EQ 'Device' | ForEach-Object IsMandatory | Should -BeTrue
            ($command.ParameterSets | Where-Object Name -EQ 'Device').Parameters.Name | Should -Not -Contain 'Path'
        }

        It 'offers the servers NbdServer and QemuNbd' {
            [enum]::GetNames((Get-Command New-NbdExport).Parameters['Server'].ParameterType) | Should -Be @('NbdServer', 'QemuNbd')
        }

        It 'New-NbdExport and Remove-NbdExport support -WhatIf and -Confirm; Get-NbdExport does not need them' {
            foreach ($name in 'New-NbdExport', 'Remove-NbdExport') {
                (Get-Command $name).Parameters.ContainsKey('WhatIf') | Should -BeTrue
                (Get-Command $name).Parameters.ContainsKey('Confirm') | Should -BeTrue
            }
            (Get-Command Get-NbdExport).Parameters.ContainsKey('WhatIf') | Should -BeFalse
        }

        It 'Remove-NbdExport takes exports from the pipeline by value, or -Name with wildcards' {
            $command = Get-Command Remove-NbdExport
            $inputObject = $command.Parameters['InputObject'].Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }
            $inputObject.ValueFromPipeline | Should -BeTrue
            $command.Parameters['Name'].Attributes.TypeId.Name | Should -Contain 'SupportsWildcardsAttribute'
            $command.ParameterSets.Name | Should -Contain 'InputObject'
            $command.ParameterSets.Name | Should -Contain 'Name'
        }
    }

    Context 'Errors' {
        It 'refuses -Bitmap with nbd-server before touching anything' {
            $errors = $null
            New-NbdExport -Path $script:image -Name bad -Server NbdServer -Bitmap b0 -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
            $errors[0].FullyQualifiedErrorId | Should -BeLike 'NbdExportInvalidArgument,*'
            $errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
            $errors[0].Exception.Message | Should -BeLike '*-Server QemuNbd*'
        }

        It 'reports a missing file as NbdPathNotFound naming the host' {
            $errors = $null
            New-NbdExport -Path (Join-Path $TestDrive 'no-such.raw') -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
            $errors[0].FullyQualifiedErrorId | Should -BeLike 'NbdPathNotFound,*'
            $errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
            $errors[0].Exception.Message | Should -BeLike "*'localhost'*"
        }

        It 'reports an unknown export name as NbdExportNotFound, but not an unmatched wildcard' {
            $errors = $null
            Get-NbdExport -Name 'no-such-export' -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
            $errors[0].FullyQualifiedErrorId | Should -BeLike 'NbdExportNotFound,*'
            $errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'

            $errors = $null
            Get-NbdExport -Name 'no-such-*' -ErrorVariable errors | Should -BeNullOrEmpty
            $errors | Should -BeNullOrEmpty
        }
    }

    Context 'Exports served by <_>' -ForEach @('QemuNbd', 'NbdServer') {
        BeforeAll {
            $script:server = $_
            $script:name = "pester-$($_.ToLowerInvariant())"
        }

        It 'starts nothing with -WhatIf' {
            if (-not $script:haveServers) { Set-ItResult -Skipped -Because 'qemu-nbd, nbd-server and nbdinfo are not installed' }
            New-NbdExport -Path $script:image -Name $script:name -Server $script:server -ReadOnly -WhatIf | Should -BeNullOrEmpty
            Get-NbdExport -Name $script:name -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
            @(Get-ChildItem -Path $env:REPLICATOOLS_NBD_STATE_DIR -ErrorAction SilentlyContinue).Count | Should -Be 0
        }

        It 'starts a read-only export that serves the file, and lists it' {
            if (-not $script:haveServers) { Set-ItResult -Skipped -Because 'qemu-nbd, nbd-server and nbdinfo are not installed' }
            $export = New-NbdExport -Path $script:image -Name $script:name -Server $script:server -ReadOnly
            $export.GetType().FullName | Should -Be 'ReplicaTools.Core.Nbd.NbdExport'
            $export.State | Should -Be 'Running'
            $export.Server | Should -Be $script:server
            $export.HostName | Should -Be 'localhost'
            $export.Session.IsLocal | Should -BeTrue
            $export.ReadOnly | Should -BeTrue
            $export.Uri | Should -Be "nbd://127.0.0.1:$($export.Port)/$($script:name)"
            Test-ProcessRunning $export.ProcessId | Should -BeTrue

            (Invoke-ReplicaCommand -ArgumentList 'nbdinfo', '--size', $export.Uri).StandardOutput.Trim() | Should -Be '1048576'

            $listed = Get-NbdExport -Name 'pester-*' | Where-Object Name -EQ $script:name
            $listed.State | Should -Be 'Running'
            $listed.ProcessId | Should -Be $export.ProcessId
            $listed.Uri | Should -Be $export.Uri
        }

        It 'refuses a second export with the same name' {
            if (-not $script:haveServers) { Set-ItResult -Skipped -Because 'qemu-nbd, nbd-server and nbdinfo are not installed' }
            $errors = $null
            New-NbdExport -Path $script:image -Name $script:name -ReadOnly -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
            $errors[0].FullyQualifiedErrorId | Should -BeLike 'NbdExportExists,*'
            $errors[0].CategoryInfo.Category | Should -Be 'ResourceExists'
        }

        It 'keeps the export with Remove-NbdExport -WhatIf' {
            if (-not $script:haveServers) { Set-ItResult -Skipped -Because 'qemu-nbd, nbd-server and nbdinfo are not installed' }
            Get-NbdExport -Name $script:name | Remove-NbdExport -WhatIf
            (Get-NbdExport -Name $script:name).State | Should -Be 'Running'
        }

        It 'stops the server and frees the port when the export is piped to Remove-NbdExport' {
            if (-not $script:haveServers) { Set-ItResult -Skipped -Because 'qemu-nbd, nbd-server and nbdinfo are not installed' }
            $export = Get-NbdExport -Name $script:name
            $export | Remove-NbdExport -Confirm:$false
            Wait-ProcessGone $export.ProcessId | Should -BeTrue
            Test-TcpPort $export.Port | Should -BeFalse
            Get-NbdExport -Name $script:name -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        }

        It 'reports an export whose server was killed as stale, with a warning, and removes it by name' {
            if (-not $script:haveServers) { Set-ItResult -Skipped -Because 'qemu-nbd, nbd-server and nbdinfo are not installed' }
            $export = New-NbdExport -Path $script:image -Name "$($script:name)-stale" -Server $script:server -ReadOnly
            Stop-Process -Id $export.ProcessId -Force
            Wait-ProcessGone $export.ProcessId | Should -BeTrue

            $warnings = $null
            $stale = Get-NbdExport -Name "$($script:name)-stale" -WarningAction SilentlyContinue -WarningVariable warnings
            $stale.State | Should -Be 'Stale'
            $stale.StaleReason | Should -BeLike "*$($export.ProcessId)*gone*"
            $warnings.Count | Should -Be 1
            $warnings[0].Message | Should -BeLike '*Remove-NbdExport*'

            Remove-NbdExport -Name "$($script:name)-stale" -Confirm:$false
            Get-NbdExport -Name "$($script:name)-stale" -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        }
    }

    Context 'Pipeline binding' {
        It 'binds a file from Get-Item to -Path (FullName) and names the export after it' {
            if (-not $script:haveServers) { Set-ItResult -Skipped -Because 'qemu-nbd, nbd-server and nbdinfo are not installed' }
            $export = Get-Item -Path $script:image | New-NbdExport -ReadOnly
            try {
                $export.Name | Should -Be 'disk'
                $export.Path | Should -Be (Resolve-Path $script:image).ProviderPath
            }
            finally {
                if ($export) { $export | Remove-NbdExport -Confirm:$false }
            }
        }
    }
}
