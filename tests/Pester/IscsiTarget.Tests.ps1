#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# iSCSI targets on the local machine, served by a tgtd of this suite's own (its own control port, so the system's
# tgtd is never touched; its portal on 127.0.0.1 and a free port) and read by userspace initiators (qemu-io, iscsi-inq).

BeforeDiscovery {
    $script:haveTgt = [bool](Get-Command tgtd -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-io -ErrorAction SilentlyContinue)
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
    $script:haveTgt = [bool](Get-Command tgtd -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-io -ErrorAction SilentlyContinue)
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'iSCSI target cmdlets' {
    BeforeAll {
        $script:confDir = Join-Path $TestDrive 'conf.d'
        New-Item -ItemType Directory -Path $script:confDir | Out-Null
        $script:disk = Join-Path $TestDrive 'disk.raw'
        $bytes = [byte[]]::new(4MB)
        [System.Array]::Fill($bytes, [byte]0x5a)
        [System.IO.File]::WriteAllBytes($script:disk, $bytes)
        $script:iqn = 'iqn.2024-10.org.replicatools.pester:disk-{0}' -f [guid]::NewGuid().ToString('N').Substring(0, 6)
        if ($script:haveTgt) {
            $script:tgtd = Start-TestTgtd
            $script:common = @{ ControlPort = $script:tgtd.ControlPort; ConfigDirectory = $script:confDir }
        }
    }

    AfterAll {
        if ($script:tgtd) { Stop-TestTgtd $script:tgtd }
    }

    Context 'Parameters' {
        It 'New- and Remove-IscsiTarget support -WhatIf; Get-IscsiTarget does not' {
            foreach ($name in 'New-IscsiTarget', 'Remove-IscsiTarget') {
                (Get-Command $name).Parameters.ContainsKey('WhatIf') | Should -BeTrue
            }
            (Get-Command Get-IscsiTarget).Parameters.ContainsKey('WhatIf') | Should -BeFalse
        }

        It 'takes -ConfigDirectory and -ControlPort from piped targets by property name' {
            foreach ($name in 'New-IscsiTarget', 'Get-IscsiTarget', 'Remove-IscsiTarget') {
                foreach ($parameter in 'ConfigDirectory', 'ControlPort', 'Session') {
                    $attribute = (Get-Command $name).Parameters[$parameter].Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] } | Select-Object -First 1
                    $attribute.ValueFromPipelineByPropertyName | Should -BeTrue -Because "$name -$parameter"
                }
            }
        }
    }

    Context 'Against a running tgtd' -Skip:(-not $script:haveTgt) {
        It '-WhatIf prints the conf.d file and the tgtadm commands, and changes nothing' {
            $output = Get-WhatIfText { New-IscsiTarget -Iqn $script:iqn -BackingStore $script:disk @common -WhatIf }
            $output | Should -Match ([regex]::Escape("<target $script:iqn>"))
            $output | Should -Match ([regex]::Escape("tgtadm -C $($script:tgtd.ControlPort) --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b $script:disk"))
            $output | Should -Match 'allow every initiator|-I ALL'
            Get-ChildItem $script:confDir | Should -BeNullOrEmpty
            Get-IscsiTarget @common | Should -BeNullOrEmpty
        }

        It 'New-IscsiTarget serves the file; the Uri it returns reads the exact bytes' {
            $target = New-IscsiTarget -Iqn $script:iqn -BackingStore $script:disk @common
            $target | Should -BeOfType ([ReplicaTools.Core.Iscsi.IscsiTarget])
            $target.State | Should -Be 'Running'
            $target.Uri | Should -Be "iscsi://127.0.0.1:$($script:tgtd.Port)/$script:iqn/1"
            $target.HostName | Should -Be 'localhost'
            $read = & qemu-io -f raw -c 'read -P 0x5a 0 4M' $target.Uri 2>&1 | Out-String
            $read | Should -Match 'read 4194304/4194304 bytes'
            Test-Path (Join-Path $script:confDir "$($script:iqn.Replace(':', '_')).conf") | Should -BeTrue
        }

        It 'shows up in Get-IscsiTarget, by wildcard too, with the table view' {
            (Get-IscsiTarget @common -Iqn 'iqn.2024-10.org.replicatools.pester:*').Iqn | Should -Be $script:iqn
            $table = Get-IscsiTarget @common | Format-Table | Out-String -Width 300
            $table | Should -Match 'LoggedIn'
            $table | Should -Match 'ALL'
        }

        It 'a second target with the same IQN is IscsiTargetExists, and with the same backing store IscsiBackingStoreInUse' {
            { New-IscsiTarget -Iqn $script:iqn -BackingStore $script:disk @common -ErrorAction Stop } | Should -Throw -ErrorId 'IscsiTargetExists,ReplicaTools.Commands.NewIscsiTargetCommand'
            $other = 'iqn.2024-10.org.replicatools.pester:other'
            $err = { New-IscsiTarget -Iqn $other -BackingStore $script:disk @common -ErrorAction Stop } | Should -Throw -PassThru
            $err.FullyQualifiedErrorId | Should -BeLike 'IscsiBackingStoreInUse,*'
            $err.CategoryInfo.Category | Should -Be 'ResourceExists'
            $err.Exception.Message | Should -Match ([regex]::Escape($script:iqn))
        }

        It 'a bad IQN is IscsiTargetInvalidArgument naming the parameter' {
            $err = { New-IscsiTarget -Iqn 'iqn.2024-10.example.com:$(reboot)' -BackingStore $script:disk @common -ErrorAction Stop } | Should -Throw -PassThru
            $err.FullyQualifiedErrorId | Should -BeLike 'IscsiTargetInvalidArgument,*'
            $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
            $err.Exception.Message | Should -Match '-Iqn'
        }

        It 'a name that matches nothing is IscsiTargetNotFound' {
            Get-IscsiTarget @common -Iqn 'iqn.2024-10.org.replicatools.pester:none' -ErrorVariable missing -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
            $missing[0].FullyQualifiedErrorId | Should -BeLike 'IscsiTargetNotFound,*'
        }

        It 'Get-IscsiTarget | Remove-IscsiTarget removes the target and its file' {
            Get-IscsiTarget @common | Remove-IscsiTarget -Confirm:$false
            Get-IscsiTarget @common | Should -BeNullOrEmpty
            Get-ChildItem $script:confDir | Should -BeNullOrEmpty
            & qemu-io -f raw -c 'read 0 512' "iscsi://127.0.0.1:$($script:tgtd.Port)/$script:iqn/1" 2>&1 | Out-Null
            $LASTEXITCODE | Should -Not -Be 0
        }

        It 'with no tgtd on the control port, New-IscsiTarget is TgtdNotRunning' {
            $err = { New-IscsiTarget -Iqn $script:iqn -BackingStore $script:disk -ControlPort 1 -ConfigDirectory $script:confDir -ErrorAction Stop } | Should -Throw -PassThru
            $err.FullyQualifiedErrorId | Should -BeLike 'TgtdNotRunning,*'
            $err.ErrorDetails.RecommendedAction | Should -Match 'systemctl start tgt'
        }
    }
}
