#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# Disk images on the local machine only (a plain temporary directory, no btrfs, no root needed).

BeforeDiscovery {
    $script:noQemu = -not (Get-Command qemu-img -ErrorAction Ignore) -or -not (Get-Command qemu-io -ErrorAction Ignore)
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force

    function Write-ImageByte([string] $Path, [string] $Format, [long] $Offset, [int] $Pattern) {
        & qemu-io -f $Format -c ('write -P 0x{0:x2} {1} 1' -f $Pattern, $Offset) $Path | Out-Null
        if ($LASTEXITCODE -ne 0) { throw "qemu-io failed on $Path" }
    }
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Disk image cmdlets: parameters' {
    It 'New-DiskImage, Remove-DiskImage support -WhatIf; Remove-DiskImage has ConfirmImpact High' {
        (Get-Command New-DiskImage).Parameters.ContainsKey('WhatIf') | Should -BeTrue
        (Get-Command Remove-DiskImage).Parameters.ContainsKey('WhatIf') | Should -BeTrue
        $attribute = (Get-Command Remove-DiskImage).ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0]
        $attribute.ConfirmImpact | Should -Be 'High'
    }

    It 'binds -Path and -Session from the pipeline by property name' -TestCases @(
        @{ Name = 'Get-DiskImage' }, @{ Name = 'Remove-DiskImage' }, @{ Name = 'New-DiskImage' }
    ) {
        foreach ($parameter in 'Path', 'Session', 'HostName') {
            $attribute = (Get-Command $Name).Parameters[$parameter].Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }
            $attribute.ValueFromPipelineByPropertyName | Should -BeTrue -Because "$Name -$parameter"
        }
    }

    It 'Compare-DiskImage has a host per side' {
        $parameters = (Get-Command Compare-DiskImage).Parameters
        foreach ($name in 'ReferencePath', 'DifferencePath', 'ReferenceSession', 'ReferenceHostName', 'DifferenceSession', 'DifferenceHostName', 'Session', 'HostName', 'Quiet') {
            $parameters.ContainsKey($name) | Should -BeTrue -Because $name
        }
        $parameters['ReferencePath'].Aliases | Should -Contain 'Path'
    }

    It 'New-DiskImage accepts only raw, qcow2 and vdi' {
        { New-DiskImage -Path /tmp/x.vmdk -Size 1MB -Format vmdk -ErrorAction Stop } | Should -Throw -ErrorId 'InvalidArgument,*' -ExpectedMessage '*raw, qcow2 or vdi*'
    }
}

Describe 'New-DiskImage, Get-DiskImage, Remove-DiskImage on the local machine' -Skip:$noQemu {
    BeforeAll {
        $script:dir = Join-Path $TestDrive 'images'
        New-Item -ItemType Directory -Path $dir | Out-Null
    }

    It 'creates an image of binary size and returns it with HostName and Session' -TestCases @(
        @{ Format = 'raw' }, @{ Format = 'qcow2' }, @{ Format = 'vdi' }
    ) {
        $path = Join-Path $dir "vm1.$Format"
        $image = New-DiskImage -Path $path -Size 64MB -Format $Format
        $image.Path | Should -Be $path
        $image.Format | Should -Be $Format
        $image.VirtualSize | Should -Be 67108864
        $image.HostName | Should -Be 'localhost'
        $image.Session | Should -Not -BeNullOrEmpty
        $image.InUse | Should -BeFalse
        $path | Should -Exist
    }

    It 'takes sizes written as strings, with binary units' {
        (New-DiskImage -Path (Join-Path $dir 's1.qcow2') -Size '1.5G').VirtualSize | Should -Be 1610612736
        (New-DiskImage -Path (Join-Path $dir 's2.raw') -Size 1048576 -Format raw).VirtualSize | Should -Be 1MB
    }

    It 'refuses a size that is not one' {
        $errors = $null
        New-DiskImage -Path (Join-Path $dir 'bad.raw') -Size 'lots' -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'InvalidArgument,*'
        $errors[0].Exception.Message | Should -BeLike '*-Size*lots*'
    }

    It 'resolves a relative path against the current location' {
        Push-Location $dir
        try {
            $image = New-DiskImage -Path 'relative.qcow2' -Size 1MB
            $image.Path | Should -Be (Join-Path $dir 'relative.qcow2')
        }
        finally { Pop-Location }
    }

    It 'refuses to overwrite an existing image, and replaces it with -Force' {
        $path = Join-Path $dir 'keep.qcow2'
        New-DiskImage -Path $path -Size 64MB | Out-Null
        $errors = $null
        New-DiskImage -Path $path -Size 128MB -Format raw -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'ImageExists,*'
        $errors[0].CategoryInfo.Category | Should -Be 'ResourceExists'
        $errors[0].Exception.Message | Should -BeLike "*localhost*$path*"
        (Get-DiskImage -Path $path).Format | Should -Be 'qcow2'

        $replaced = New-DiskImage -Path $path -Size 128MB -Format raw -Force
        $replaced.Format | Should -Be 'raw'
        $replaced.VirtualSize | Should -Be 128MB
    }

    It 'creates nothing with -WhatIf' {
        $path = Join-Path $dir 'whatif.vdi'
        New-DiskImage -Path $path -Size 64MB -Format vdi -WhatIf | Should -BeNullOrEmpty
        $path | Should -Not -Exist
    }

    It 'reports No_COW as not applicable outside btrfs' {
        $image = Get-DiskImage -Path (Join-Path $dir 'vm1.qcow2')
        $image.FileSystemType | Should -Not -Be 'btrfs'
        $image.NoCow | Should -BeNullOrEmpty
    }

    It 'reads dirty bitmaps with their flags' {
        $path = Join-Path $dir 'bitmaps.qcow2'
        New-DiskImage -Path $path -Size 64MB | Out-Null
        & qemu-img bitmap --add -g 65536 $path backup0
        $bitmap = (Get-DiskImage -Path $path).DirtyBitmaps | Select-Object -First 1
        $bitmap.Name | Should -Be 'backup0'
        $bitmap.Granularity | Should -Be 65536
        $bitmap.Inconsistent | Should -BeFalse
    }

    It 'binds file objects from Get-ChildItem by FullName' {
        $images = Get-ChildItem -Path $dir -Filter 'vm1.*' | Get-DiskImage
        @($images).Count | Should -Be 3
        $images.Format | Sort-Object | Should -Be @('qcow2', 'raw', 'vdi')
    }

    It 'reports a missing image with its host and path' {
        $missing = Join-Path $dir 'missing.qcow2'
        $errors = $null
        Get-DiskImage -Path $missing -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'ImageNotFound,*'
        $errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $errors[0].Exception.Message | Should -BeLike "*'localhost'*$missing*"
        $errors[0].TargetObject | Should -Be $missing
    }

    It 'keeps the image with -WhatIf, and removes it from the pipeline with -Confirm:$false' {
        $path = Join-Path $dir 'gone.raw'
        New-DiskImage -Path $path -Size 1MB -Format raw | Out-Null
        Get-DiskImage -Path $path | Remove-DiskImage -WhatIf
        $path | Should -Exist
        Get-DiskImage -Path $path | Remove-DiskImage -Confirm:$false
        $path | Should -Not -Exist
    }

    It 'explains that an nfs:// image is removed on its server' {
        $errors = $null
        Remove-DiskImage -Path 'nfs://192.0.2.1/images/vm1.vdi' -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'NfsRemoveUnsupported,*'
        $errors[0].ErrorDetails.RecommendedAction | Should -BeLike '*192.0.2.1*'
    }

    It 'refuses to remove a directory' {
        $errors = $null
        Remove-DiskImage -Path $dir -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'NotAnImageFile,*'
        $dir | Should -Exist
    }
}

Describe 'Compare-DiskImage on the local machine' -Skip:$noQemu {
    BeforeAll {
        $script:dir = Join-Path $TestDrive 'compare'
        New-Item -ItemType Directory -Path $dir | Out-Null
        $script:reference = Join-Path $dir 'reference.qcow2'
        $script:difference = Join-Path $dir 'difference.vdi'
        New-DiskImage -Path $reference -Size 64MB -Format qcow2 | Out-Null
        New-DiskImage -Path $difference -Size 64MB -Format vdi | Out-Null
    }

    It 'finds identical images of different formats identical' {
        $result = Compare-DiskImage -ReferencePath $reference -DifferencePath $difference
        $result.Identical | Should -BeTrue
        $result.FirstDifferenceOffset | Should -BeNullOrEmpty
        $result.ReferenceHost | Should -Be 'localhost'
        $result.ComparedOn | Should -Be 'localhost'
        Compare-DiskImage $reference $difference -Quiet | Should -BeTrue
    }

    It 'reports the exact offset of the first differing byte' {
        Write-ImageByte -Path $difference -Format vdi -Offset 1000005 -Pattern 0xab
        Write-ImageByte -Path $difference -Format vdi -Offset 2000000 -Pattern 0xab
        $result = Compare-DiskImage -ReferencePath $reference -DifferencePath $difference
        $result.Identical | Should -BeFalse
        $result.FirstDifferenceOffset | Should -Be 1000005
        $result.Message | Should -BeLike '*1000005*'
        Compare-DiskImage $reference $difference -Quiet | Should -BeFalse
    }

    It 'takes the reference image from the pipeline' {
        $result = Get-DiskImage -Path $reference | Compare-DiskImage -DifferencePath $difference
        $result.ReferencePath | Should -Be $reference
        $result.FirstDifferenceOffset | Should -Be 1000005
    }

    It 'never calls images of different sizes identical' {
        $small = Join-Path $dir 'small.raw'
        $large = Join-Path $dir 'large.raw'
        New-DiskImage -Path $small -Size 64MB -Format raw | Out-Null
        New-DiskImage -Path $large -Size 80MB -Format raw | Out-Null
        $result = Compare-DiskImage $small $large
        $result.Identical | Should -BeFalse
        $result.SizesDiffer | Should -BeTrue
        $result.FirstDifferenceOffset | Should -Be 64MB
        $result.Message | Should -BeLike '*sizes differ*'
    }

    It 'reports a missing image with its path' {
        $errors = $null
        Compare-DiskImage $reference (Join-Path $dir 'nope.raw') -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'ImageNotFound,*'
        $errors[0].Exception.Message | Should -BeLike '*nope.raw*'
    }
}

# Field report (issue 9, case 1): QEMU opened a raw image with -blockdev driver=raw,file.driver=file and a virtio-blk
# device; qemu-img info reads it without a lock error, and Remove-DiskImage deleted the running VM's disk.
Describe 'A raw image that a running QEMU opened with -blockdev' -Skip:($noQemu -or -not (Get-Command qemu-system-x86_64 -ErrorAction Ignore)) {
    BeforeAll {
        $script:dir = Join-Path $TestDrive 'held'
        New-Item -ItemType Directory -Path $dir | Out-Null
        $script:held = Join-Path $dir 'data.raw'
        New-DiskImage -Path $held -Size 64MB -Format raw | Out-Null
        $script:inode = & stat -c %i $held
        $pidFile = Join-Path $dir 'qemu.pid'
        & qemu-system-x86_64 -machine pc,accel=tcg -S -nodefaults -display none `
            -blockdev "driver=raw,node-name=d1,file.driver=file,file.filename=$held" -device virtio-blk-pci,drive=d1 -daemonize -pidfile $pidFile
        if ($LASTEXITCODE -ne 0) { throw 'qemu-system-x86_64 did not start' }
        $script:qemuPid = [int](Get-Content $pidFile)
        $script:previousStateDirectory = $env:REPLICATOOLS_NBD_STATE_DIR
        $env:REPLICATOOLS_NBD_STATE_DIR = Join-Path $TestDrive 'nbd-state'
    }

    AfterAll {
        $env:REPLICATOOLS_NBD_STATE_DIR = $previousStateDirectory
        if ($qemuPid) { Stop-Process -Id $qemuPid -Force -ErrorAction SilentlyContinue }
    }

    It 'Get-DiskImage reports it in use and names the QEMU that holds it' {
        $image = Get-DiskImage -Path $held -WarningAction SilentlyContinue
        $image.InUse | Should -BeTrue
        $image.InUseBy | Should -BeLike "*qemu-system-x86_64 (pid $qemuPid)*write*"
    }

    It 'Remove-DiskImage -Confirm:$false refuses with ImageInUse and keeps the file' {
        $errors = $null
        Get-DiskImage -Path $held -WarningAction SilentlyContinue | Remove-DiskImage -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'ImageInUse,*'
        $errors[0].CategoryInfo.Category | Should -Be 'ResourceUnavailable'
        $errors[0].Exception.Message | Should -BeLike "*$held*qemu-system-x86_64*"
        $errors[0].ErrorDetails.RecommendedAction | Should -BeLike '*Stop or detach*'
        & stat -c %i $held | Should -Be $inode
    }

    It 'New-DiskImage -Force refuses with ImageInUse and keeps the file' {
        $errors = $null
        New-DiskImage -Path $held -Size 128MB -Format qcow2 -Force -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'ImageInUse,*'
        & stat -c %i $held | Should -Be $inode
        (Get-Item $held).Length | Should -Be 64MB
    }

    It 'New-NbdExport refuses to export it writable' {
        $errors = $null
        New-NbdExport -Path $held -Name held -Server NbdServer -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'ImageInUse,*'
        $errors[0].Exception.Message | Should -BeLike '*-ReadOnly*'
    }

    It 'is free again once QEMU is gone, and then removed by the same pipeline' {
        Stop-Process -Id $qemuPid -Force
        Wait-Process -Id $qemuPid -Timeout 10 -ErrorAction SilentlyContinue
        (Get-DiskImage -Path $held).InUse | Should -BeFalse
        Get-DiskImage -Path $held | Remove-DiskImage -Confirm:$false
        $held | Should -Not -Exist
    }
}
