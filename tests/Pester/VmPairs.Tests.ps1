#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# Every pair: the output of every VM cmdlet, for a bare QEMU and for a libvirt domain on a libvirtd of its own (a
# non-default URI), piped into every other VM cmdlet, reaches the same VM and the same drive. Read-only cmdlets run for
# real; state-changing ones run with -WhatIf (those that plan against the VM still ask it) and say in -Verbose which VM
# and drive they resolved.

BeforeDiscovery {
    $script:canRun = (Get-Command qemu-system-x86_64, libvirtd, virsh, unshare, nbdcopy -ErrorAction SilentlyContinue).Count -eq 5 -and
        ((& id -u) -eq '0')
    $script:pairs = foreach ($backend in 'Qmp', 'Libvirt') {
        foreach ($kind in 'Start-ReplicaVM', 'Invoke-NbdClone', 'Get-DiskCheckpoint', 'Start-DriveMirror') { @{ Backend = $backend; Kind = $kind } }
    }
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
    $script:vms = @{}
    $script:libvirtd = $null
    $script:qemuPid = 0

    # The VM's identity as every VM object carries it.
    function Get-Identity($Object) {
        '{0}|{1}|{2}|{3}|{4}' -f $Object.HostName, $Object.VMName, $Object.QmpSocket, $Object.LibvirtUri, $Object.Drive
    }

    # The 'Target:' line a VM cmdlet writes with -Verbose: the VM and drive it resolved.
    function Get-ResolvedTarget([scriptblock] $Invocation) {
        $records = & $Invocation 4>&1
        @($records | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] -and $_.Message -like 'Target: *' } | ForEach-Object Message)
    }
}

AfterAll {
    if ($script:qemuPid -gt 0) { Stop-Process -Id $script:qemuPid -Force -ErrorAction SilentlyContinue }
    Stop-TestLibvirtd $script:libvirtd
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'VM objects piped into every VM cmdlet' -Skip:(-not $script:canRun) {
    BeforeAll {
        $script:libvirtd = Start-TestLibvirtd
        $directory = Join-Path $TestDrive 'pairs'
        New-Item -ItemType Directory -Path $directory | Out-Null
        & chmod 0755 $TestDrive $directory
        $template = "<domain type='qemu'><name>x</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>" +
            "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>" +
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/nowhere.qcow2'/><target dev='vda' bus='virtio'/></disk>" +
            "<controller type='usb' model='none'/><memballoon model='none'/></devices></domain>"
        foreach ($backend in 'Qmp', 'Libvirt') {
            $image = Join-Path $directory "$backend.qcow2"
            & qemu-img create -q -f qcow2 $image 16M
            & qemu-io -f qcow2 -c 'write -P 0x5a 0 2M' $image | Out-Null
            $start = if ($backend -eq 'Qmp') {
                Start-ReplicaVM -Name pair -DiskPath $image -QmpSocket (Join-Path $directory 'pair.qmp') -Machine 'pc,accel=tcg' -QemuArgument '-nodefaults' -MemoryMB 32 -Paused -Confirm:$false
            }
            else {
                Start-ReplicaVM -VMName "rt-pair-$([guid]::NewGuid().ToString('N').Substring(0, 6))" -LibvirtUri $script:libvirtd.Uri -DomainXml $template -DiskPath $image -MemoryMB 48 -Paused -Confirm:$false
            }
            if ($start.ProcessId -gt 0) { $script:qemuPid = $start.ProcessId }

            # Each object is made by piping the previous one on: these pairs run for real.
            $clone = $start | Invoke-NbdClone -Destination (Join-Path $directory "$backend-clone.raw") -Confirm:$false
            $checkpoint = $clone | Get-DiskCheckpoint -CloneOnly
            $job = $start | Start-DriveMirror -Destination (Join-Path $directory "$backend-mirror.qcow2") -Wait -PassThru -Confirm:$false
            $script:vms[$backend] = @{
                Image = $image; Identity = Get-Identity $start
                Objects = @{ 'Start-ReplicaVM' = $start; 'Invoke-NbdClone' = $clone; 'Get-DiskCheckpoint' = $checkpoint; 'Start-DriveMirror' = $job }
                Job = $job; Checkpoint = $checkpoint
            }
        }
    }

    It 'makes one object of each kind with the same identity (<Backend>)' -ForEach @(@{ Backend = 'Qmp' }, @{ Backend = 'Libvirt' }) {
        $vm = $script:vms[$Backend]
        foreach ($object in $vm.Objects.Values) {
            Get-Identity $object | Should -Be $vm.Identity
        }
        if ($Backend -eq 'Libvirt') {
            $vm.Objects['Start-ReplicaVM'].QmpSocket | Should -BeNullOrEmpty
            $vm.Objects['Start-ReplicaVM'].LibvirtUri | Should -Be $script:libvirtd.Uri
        }
        else {
            $vm.Objects['Start-ReplicaVM'].VMName | Should -BeNullOrEmpty
        }
    }

    It 'the <Kind> object of a <Backend> VM reaches the same VM and drive in every VM cmdlet' -ForEach $script:pairs {
        $vm = $script:vms[$Backend]
        $object = $vm.Objects[$Kind]
        $errors = $null

        # Read-only: the real answer comes from the same VM and drive.
        $got = @($object | Get-DriveMirror -NoStallCheck -ErrorVariable +errors)
        $got.Count | Should -Be 1
        $got[0].JobId | Should -Be $vm.Job.JobId
        Get-Identity $got[0] | Should -Be $vm.Identity
        $waited = $object | Wait-DriveMirror -TimeoutSeconds 30 -ErrorVariable +errors
        $waited.State | Should -Be 'Ready'
        Get-Identity $waited | Should -Be $vm.Identity
        $checkpoints = @($object | Get-DiskCheckpoint -CloneOnly -ErrorVariable +errors)
        $checkpoints.Name | Should -Be @($vm.Checkpoint.Name)
        Get-Identity $checkpoints[0] | Should -Be $vm.Identity

        # Planning against the VM: a second mirror of the same drive is refused, naming it.
        $refused = $null
        $object | Start-DriveMirror -Destination (Join-Path $TestDrive 'second.qcow2') -WhatIf -ErrorAction SilentlyContinue -ErrorVariable refused
        $refused[0].FullyQualifiedErrorId | Should -BeLike 'MirrorAlreadyRunning,*'
        $refused[0].Exception.Message | Should -BeLike "*$($vm.Job.Drive)*"

        # -WhatIf: each resolves the same VM and drive (the libvirt URI is named, as it is not the default).
        $expected = if ($Backend -eq 'Qmp') { "Target: QEMU VM at '$($object.QmpSocket)' on host 'localhost', drive '$($object.Drive)'." }
            else { "Target: VM '$($object.VMName)' ($($script:libvirtd.Uri)) on host 'localhost', drive '$($object.Drive)'." }
        Get-ResolvedTarget { $object | Stop-DriveMirror -WhatIf -Verbose -ErrorVariable +errors } | Should -Be $expected
        Get-ResolvedTarget { $object | Suspend-DriveMirror -WhatIf -Verbose -ErrorVariable +errors } | Should -Be $expected
        Get-ResolvedTarget { $object | Resume-DriveMirror -WhatIf -Verbose -ErrorVariable +errors } | Should -Be $expected
        Get-ResolvedTarget { $object | Invoke-NbdClone -Destination '/nonexistent/pair.raw' -WhatIf -Verbose -ErrorVariable +errors } | Should -Be $expected
        Get-ResolvedTarget { $object | Remove-DiskCheckpoint -Name $vm.Checkpoint.Name -WhatIf -Verbose -ErrorVariable +errors } | Should -Be $expected
        $errors | Should -BeNullOrEmpty

        # Nothing changed: the mirror still runs, the checkpoint is still there.
        ($vm.Job | Get-DriveMirror -NoStallCheck).State | Should -Be 'Ready'
        @($vm.Job | Get-DiskCheckpoint -CloneOnly).Count | Should -Be 1
    }
}
