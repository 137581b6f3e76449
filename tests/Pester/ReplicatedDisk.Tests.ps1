#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# The replicated-disk cmdlets from the user's side. This machine has no DRBD kernel module: the suite shows what a user
# sees here - the validated plan (-WhatIf), the clear refusals, DrbdKernelModuleMissing with nothing written - with this
# machine as mirror-a and an sshd in its own UTS namespace as mirror-b. The kernel-side behaviour (roles, sync, failover)
# is covered by the xunit suite's DRBD lab. ConvertTo-LibvirtDiskXml and Mount-ReplicatedDisk run for real (an NBD
# export, a tgtd, a private libvirtd).

BeforeDiscovery {
    $script:isRoot = (& id -u) -eq '0'
    $script:haveDrbd = $script:isRoot -and [bool](Get-Command drbdadm -ErrorAction SilentlyContinue) -and [bool](Get-Command losetup -ErrorAction SilentlyContinue)
    $script:haveTgt = $script:isRoot -and [bool](Get-Command tgtd -ErrorAction SilentlyContinue)
    $script:haveLibvirt = $script:isRoot -and [bool](Get-Command libvirtd -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-nbd -ErrorAction SilentlyContinue)
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
    $script:secret = ConvertTo-SecureString 'Pester-Secret-42' -AsPlainText -Force
    $script:local = [ReplicaTools.Core.Remote.ReplicaSession]::Local

    function Get-CmdletAttribute([string] $Name) {
        (Get-Command $Name).ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0]
    }

    function Get-ParameterAttribute([string] $Command, [string] $Parameter) {
        (Get-Command $Command).Parameters[$Parameter].Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }
    }
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Replicated disk cmdlets: shape' {
    It 'Switch- and Remove-ReplicatedDisk have ConfirmImpact High; New- and Mount- support -WhatIf; Get, Wait and ConvertTo change nothing' {
        (Get-CmdletAttribute Switch-ReplicatedDisk).ConfirmImpact | Should -Be 'High'
        (Get-CmdletAttribute Remove-ReplicatedDisk).ConfirmImpact | Should -Be 'High'
        foreach ($name in 'New-ReplicatedDisk', 'Mount-ReplicatedDisk', 'Switch-ReplicatedDisk', 'Remove-ReplicatedDisk') {
            (Get-Command $name).Parameters.ContainsKey('WhatIf') | Should -BeTrue -Because $name
        }
        foreach ($name in 'Get-ReplicatedDisk', 'Wait-ReplicatedDisk', 'ConvertTo-LibvirtDiskXml') {
            (Get-Command $name).Parameters.ContainsKey('WhatIf') | Should -BeFalse -Because $name
        }
    }

    It '-SharedSecret is a mandatory SecureString' {
        $parameter = (Get-Command New-ReplicatedDisk).Parameters['SharedSecret']
        $parameter.ParameterType | Should -Be ([securestring])
        (Get-ParameterAttribute New-ReplicatedDisk SharedSecret).Mandatory | Should -BeTrue
    }

    It 'Get/Wait/Switch/Remove take -Name and -StorageHost from a piped ReplicatedDisk' {
        foreach ($name in 'Get-ReplicatedDisk', 'Wait-ReplicatedDisk', 'Switch-ReplicatedDisk', 'Remove-ReplicatedDisk') {
            (Get-ParameterAttribute $name StorageHost).ValueFromPipelineByPropertyName | Should -BeTrue -Because $name
            (Get-ParameterAttribute $name Name).ValueFromPipelineByPropertyName | Should -BeTrue -Because $name
        }
        [ReplicaTools.Core.Drbd.ReplicatedDisk].GetProperty('StorageHost') | Should -Not -BeNullOrEmpty
        # A replicated disk spans two hosts: it must not bind a VM cmdlet's -Session or -HostName.
        [ReplicaTools.Core.Drbd.ReplicatedDisk].GetProperty('Session') | Should -BeNullOrEmpty
        [ReplicaTools.Core.Drbd.ReplicatedDisk].GetProperty('HostName') | Should -BeNullOrEmpty
    }

    It 'Mount-ReplicatedDisk is a VM cmdlet (Libvirt and Qmp sets) taking -Uri by property name' {
        $command = Get-Command Mount-ReplicatedDisk
        $command.ParameterSets.Name | Should -Contain 'Libvirt'
        $command.ParameterSets.Name | Should -Contain 'Qmp'
        (Get-ParameterAttribute Mount-ReplicatedDisk Uri).ValueFromPipelineByPropertyName | Should -BeTrue
        (Get-ParameterAttribute ConvertTo-LibvirtDiskXml Uri).ValueFromPipelineByPropertyName | Should -BeTrue
    }
}

Describe 'New-ReplicatedDisk refuses bad input before it contacts a host' {
    It 'a name with shell metacharacters is DrbdInvalidArgument' {
        $err = { New-ReplicatedDisk -Name 'r0;reboot' -PrimaryHost $script:local -SecondaryHost 'pester-unused.invalid' -Disk /dev/null -SharedSecret $script:secret -ErrorAction Stop } |
            Should -Throw -PassThru
        $err.FullyQualifiedErrorId | Should -BeLike 'DrbdInvalidArgument,*'
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        $err.Exception.Message | Should -Match "-Name 'r0;reboot'"
    }

    It 'the same host twice is DrbdSameHost' {
        $err = { New-ReplicatedDisk -Name r0 -PrimaryHost $script:local -SecondaryHost $script:local -Disk /dev/sdb -SharedSecret $script:secret -ErrorAction Stop } |
            Should -Throw -PassThru
        $err.FullyQualifiedErrorId | Should -BeLike 'DrbdSameHost,*'
    }

    It 'an empty or over-long secret is DrbdInvalidArgument, and the message never shows it' {
        $empty = [securestring]::new()
        { New-ReplicatedDisk -Name r0 -PrimaryHost $script:local -SecondaryHost 'pester-unused.invalid' -Disk /dev/sdb -SharedSecret $empty -ErrorAction Stop } |
            Should -Throw -ErrorId 'DrbdInvalidArgument,ReplicaTools.Commands.NewReplicatedDiskCommand'
        $long = ConvertTo-SecureString ('s' * 64) -AsPlainText -Force
        $err = { New-ReplicatedDisk -Name r0 -PrimaryHost $script:local -SecondaryHost 'pester-unused.invalid' -Disk /dev/sdb -SharedSecret $long -ErrorAction Stop } |
            Should -Throw -PassThru
        $err.Exception.Message | Should -Match 'at most 63'
        $err.Exception.Message | Should -Not -Match ('s' * 20)
    }
}

Describe 'Two storage hosts: this machine and an sshd named pester-mirror-b' -Skip:(-not $script:haveDrbd) {
    BeforeAll {
        $script:files = foreach ($n in 'a', 'b') { $f = Join-Path $TestDrive "disk-$n.img"; [System.IO.File]::Create($f).Dispose(); & truncate -s 64M $f; $f }
        $script:disks = foreach ($f in $script:files) { (& losetup -f --show $f).Trim() }
        $script:sshd = Start-TestSshd -Address 127.0.0.3 -KernelHostName pester-mirror-b
        $script:b = $script:sshd | New-ReplicaSession
        $script:name = 'rtp' + [guid]::NewGuid().ToString('N').Substring(0, 6)
        $script:port = Get-FreeTcpPort
        $script:new = @{
            Name = $script:name; PrimaryHost = $script:local; SecondaryHost = $script:b; Disk = $script:disks; SharedSecret = $script:secret
            ReplicationAddress = '127.0.0.1', '127.0.0.3'; Port = $script:port; Export = 'Nbd'; ExportAddress = '127.0.0.1', '127.0.0.3'
        }
        function Test-Metadata([string] $Disk) { & drbdmeta - v09 $Disk internal dump-md *> $null; $LASTEXITCODE -eq 0 }
    }

    AfterAll {
        if ($script:b) { $script:b | Remove-ReplicaSession }
        if ($script:sshd) { Stop-TestSshd $script:sshd }
        foreach ($d in $script:disks) { & losetup -d $d }
    }

    It '-WhatIf prints the whole plan host by host - the file (secret as ********), every command, what drbdadm will run - and writes nothing' {
        $text = Get-WhatIfText { New-ReplicatedDisk @new -WhatIf -WarningAction SilentlyContinue }
        $file = "/etc/drbd.d/$($script:name).res"
        $text | Should -Match ([regex]::Escape("[localhost] write the resource file $file"))
        $text | Should -Match ([regex]::Escape("[$($script:b.Host.Name)] drbdadm -c $file up $($script:name)"))
        $text | Should -Match ([regex]::Escape("# [$($script:b.Host.Name)] configure the Nbd export of $($script:name) without starting it"))
        $text | Should -Match ([regex]::Escape("[localhost] drbdadm -c $file primary --force $($script:name)"))
        $text | Should -Match ([regex]::Escape('shared-secret "********";'))
        $text | Should -Match ([regex]::Escape("on pester-mirror-b {"))
        $text | Should -Match ([regex]::Escape("drbdsetup new-peer $($script:name) 1 --_name=pester-mirror-b --shared-secret=******** --cram-hmac-alg=sha256 --protocol=C"))
        $text | Should -Match 'nbd-server -C '
        $text | Should -Not -Match 'Pester-Secret-42'
        Test-Path $file | Should -BeFalse
        $script:disks | ForEach-Object { Test-Metadata $_ | Should -BeFalse }
    }

    It 'without the DRBD kernel module it stops with DrbdKernelModuleMissing, warns which host, and changes nothing' {
        New-ReplicatedDisk @new -Confirm:$false -WarningVariable warnings -WarningAction SilentlyContinue -ErrorVariable failed -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $err = $failed[0]
        $err.FullyQualifiedErrorId | Should -BeLike 'DrbdKernelModuleMissing,*'
        $err.CategoryInfo.Category | Should -Be 'NotInstalled'
        $err.ErrorDetails.RecommendedAction | Should -Match 'modprobe drbd'
        ($warnings -join "`n") | Should -Match 'DRBD kernel module is not available'
        Test-Path "/etc/drbd.d/$($script:name).res" | Should -BeFalse
        $script:disks | ForEach-Object { Test-Metadata $_ | Should -BeFalse }
    }

    It 'a disk missing on the secondary is DrbdDiskNotFound naming the host and the disk' {
        $missing = $new.Clone(); $missing.Disk = $script:disks[0], '/dev/pester-no-such-disk'
        $err = { New-ReplicatedDisk @missing -WhatIf -ErrorAction Stop } | Should -Throw -PassThru
        $err.FullyQualifiedErrorId | Should -BeLike 'DrbdDiskNotFound,*'
        $err.Exception.Message | Should -Match ([regex]::Escape("host '$($script:b.Host.Name)'"))
        $err.Exception.Message | Should -Match '/dev/pester-no-such-disk'
    }

    It 'a port already in use is DrbdPortInUse' {
        $busy = $new.Clone(); $busy.Port = $script:sshd.Port
        { New-ReplicatedDisk @busy -WhatIf -ErrorAction Stop } | Should -Throw -ErrorId 'DrbdPortInUse,ReplicaTools.Commands.NewReplicatedDiskCommand'
    }

    It 'Get-ReplicatedDisk lists nothing here, and by name says ReplicatedDiskNotFound' {
        Get-ReplicatedDisk -StorageHost $script:local, $script:b -Name 'rtp*' | Should -BeNullOrEmpty
        Get-ReplicatedDisk -StorageHost $script:local, $script:b -Name $script:name -ErrorVariable missing -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $missing[0].FullyQualifiedErrorId | Should -BeLike 'ReplicatedDiskNotFound,*'
        { Switch-ReplicatedDisk $script:name -StorageHost $script:local, $script:b -NewPrimary pester-mirror-b -WhatIf -ErrorAction Stop } |
            Should -Throw -ErrorId 'ReplicatedDiskNotFound,ReplicaTools.Commands.SwitchReplicatedDiskCommand'
    }
}

Describe 'ConvertTo-LibvirtDiskXml' {
    It 'emits a validated nbd element for a piped object with a Uri, shown as XML' {
        $disk = [pscustomobject]@{ Uri = 'nbd://mirror-a:10809/r0' } | ConvertTo-LibvirtDiskXml -UsedTargetDev vda, vdb
        $disk | Should -BeOfType ([ReplicaTools.Core.Libvirt.LibvirtDiskXml])
        $disk.TargetDev | Should -Be 'vdc'
        $xml = [xml]$disk.Xml
        $xml.disk.type | Should -Be 'network'
        $xml.disk.driver.cache | Should -Be 'none'
        $xml.disk.source.protocol | Should -Be 'nbd'
        $xml.disk.source.name | Should -Be 'r0'
        $xml.disk.source.host.name | Should -Be 'mirror-a'
        $xml.disk.source.host.port | Should -Be '10809'
        ($disk | Out-String) | Should -Match '<disk type="network" device="disk">'
    }

    It 'builds the seed''s iSCSI element with the initiator and SATA' {
        $disk = ConvertTo-LibvirtDiskXml -Uri iscsi://192.168.39.184:3260/iqn.2023-10.world.srv:dlp.target01/1 -Bus Sata -TargetDev sdc -InitiatorName iqn.2023-10.world.srv:node01.initiator01
        $xml = [xml]$disk.Xml
        $xml.disk.source.name | Should -Be 'iqn.2023-10.world.srv:dlp.target01/1'
        $xml.disk.source.initiator.iqn.name | Should -Be 'iqn.2023-10.world.srv:node01.initiator01'
        $xml.disk.target.bus | Should -Be 'sata'
    }

    It 'another kind of URI is an InvalidArgument error' {
        ConvertTo-LibvirtDiskXml -Uri nfs://server/export/disk.raw -ErrorVariable bad -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $bad[0].FullyQualifiedErrorId | Should -BeLike 'InvalidArgument,*'
        $bad[0].Exception.Message | Should -Match 'nbd://HOST:PORT/EXPORT'
    }

    It 'takes an IscsiTarget: its Uri and its one allowed initiator; several allowed initiators need -InitiatorName' -Skip:(-not $script:haveTgt) {
        $tgtd = Start-TestTgtd
        try {
            $conf = Join-Path $TestDrive 'conf.d'
            $backing = Join-Path $TestDrive 'lun.raw'
            [System.IO.File]::Create($backing).Dispose(); & truncate -s 4M $backing
            $target = New-IscsiTarget -Iqn iqn.2024-10.org.replicatools.pester:xml -BackingStore $backing -ControlPort $tgtd.ControlPort -ConfigDirectory $conf -InitiatorName iqn.2024-10.org.replicatools.pester:kvm1
            $disk = $target | ConvertTo-LibvirtDiskXml -Bus Scsi
            ([xml]$disk.Xml).disk.source.initiator.iqn.name | Should -Be 'iqn.2024-10.org.replicatools.pester:kvm1'
            $disk.Uri | Should -Be $target.Uri
            $two = [pscustomobject]@{ Uri = $target.Uri; InitiatorName = 'iqn.2024-10.com.example:a', 'iqn.2024-10.com.example:b' }
            { $two | ConvertTo-LibvirtDiskXml -ErrorAction Stop } | Should -Throw -ErrorId 'InitiatorNameAmbiguous,ReplicaTools.Commands.ConvertToLibvirtDiskXmlCommand'
            $target | Remove-IscsiTarget -Confirm:$false
        }
        finally {
            Stop-TestTgtd $tgtd
        }
    }
}

Describe 'Mount-ReplicatedDisk on a running libvirt domain' -Skip:(-not $script:haveLibvirt) {
    BeforeAll {
        $script:previousStateDirectory = $env:REPLICATOOLS_NBD_STATE_DIR
        $env:REPLICATOOLS_NBD_STATE_DIR = Join-Path $TestDrive 'nbd-state'
        $script:libvirtd = Start-TestLibvirtd
        $os = Join-Path $script:libvirtd.Directory 'os.qcow2'
        & qemu-img create -q -f qcow2 $os 16M
        $script:domain = 'rt-pester-mount-' + [guid]::NewGuid().ToString('N').Substring(0, 6)
        $domainXml = Join-Path $script:libvirtd.Directory 'domain.xml'
        Set-Content $domainXml ("<domain type='qemu'><name>$($script:domain)</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>" +
            "<os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>" +
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$os'/><target dev='vda' bus='virtio'/></disk>" +
            "<controller type='usb' model='none'/><memballoon model='none'/></devices></domain>")
        & virsh -q -c $script:libvirtd.Uri create $domainXml --paused | Out-Null
        $image = Join-Path $TestDrive 'shared.raw'
        [System.IO.File]::Create($image).Dispose(); & truncate -s 8M $image
        $script:export = New-NbdExport -Path $image -Name pester-mount -ListenAddress 127.0.0.1
    }

    AfterAll {
        if ($script:export) { $script:export | Remove-NbdExport -Confirm:$false -ErrorAction SilentlyContinue }
        if ($script:libvirtd) { Stop-TestLibvirtd $script:libvirtd }
        $env:REPLICATOOLS_NBD_STATE_DIR = $script:previousStateDirectory
    }

    It '-WhatIf shows virsh attach-device with the element on standard input, and attaches nothing' {
        $text = Get-WhatIfText { $script:export | Mount-ReplicatedDisk -Session $script:local -VMName $script:domain -LibvirtUri $script:libvirtd.Uri -WhatIf }
        $text | Should -Match ([regex]::Escape("attach-device --domain $($script:domain) --file /dev/stdin --live <<< <disk type=""network"""))
        (& virsh -q -c $script:libvirtd.Uri domblklist $script:domain) -join "`n" | Should -Not -Match 'vdb'
    }

    It 'attaches the export live as the next virtio disk and returns the VM and drive; again it finds it and changes nothing' {
        $attached = $script:export | Mount-ReplicatedDisk -Session $script:local -VMName $script:domain -LibvirtUri $script:libvirtd.Uri -Confirm:$false
        $attached | Should -BeOfType ([ReplicaTools.Core.Libvirt.AttachedDisk])
        $attached.VMName | Should -Be $script:domain
        $attached.LibvirtUri | Should -Be $script:libvirtd.Uri
        $attached.Drive | Should -Be 'vdb'
        (& virsh -q -c $script:libvirtd.Uri domblklist $script:domain) -join "`n" | Should -Match 'vdb\s+pester-mount'
        $again = $script:export | Mount-ReplicatedDisk -Session $script:local -VMName $script:domain -LibvirtUri $script:libvirtd.Uri -Confirm:$false
        $again.Drive | Should -Be 'vdb'
        @(& virsh -q -c $script:libvirtd.Uri domblklist $script:domain | Where-Object { $_ -match 'pester-mount' }).Count | Should -Be 1
    }

    It 'a bare QEMU (-QmpSocket) is MountNeedsLibvirt' {
        $err = { Mount-ReplicatedDisk -QmpSocket /run/pester-none.qmp -Uri $script:export.Uri -Confirm:$false -ErrorAction Stop } | Should -Throw -PassThru
        $err.FullyQualifiedErrorId | Should -BeLike 'MountNeedsLibvirt,*'
    }
}
