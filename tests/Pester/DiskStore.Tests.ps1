#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# btrfs stores on the local machine. The btrfs tests need root and loop devices: they are skipped otherwise.

BeforeDiscovery {
    $tools = 'mkfs.btrfs', 'btrfs', 'losetup', 'mount', 'umount', 'chattr', 'lsattr', 'qemu-img' | Where-Object { -not (Get-Command $_ -ErrorAction Ignore) }
    $script:noBtrfs = ([System.Environment]::UserName -ne 'root') -or ($tools.Count -gt 0) -or -not (Test-Path /dev/loop-control)
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Disk store cmdlets: parameters' {
    It 'state-changing store cmdlets support -WhatIf; Remove-DiskStoreCheckpoint has ConfirmImpact High' {
        foreach ($name in 'Initialize-DiskStore', 'Checkpoint-DiskStore', 'Remove-DiskStoreCheckpoint') {
            (Get-Command $name).Parameters.ContainsKey('WhatIf') | Should -BeTrue -Because $name
        }
        $attribute = (Get-Command Remove-DiskStoreCheckpoint).ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0]
        $attribute.ConfirmImpact | Should -Be 'High'
    }

    It 'Get-DiskStoreCheckpoint only reads' {
        (Get-Command Get-DiskStoreCheckpoint).Parameters.ContainsKey('WhatIf') | Should -BeFalse
    }

    It 'refuses a store outside btrfs, naming the host and the path' {
        $path = Join-Path ([System.IO.Path]::GetTempPath()) ('rt-not-btrfs-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
        if ((& stat -f -c %T ([System.IO.Path]::GetTempPath())) -eq 'btrfs') {
            Set-ItResult -Skipped -Because 'the temporary directory is on btrfs here'
            return
        }
        $errors = $null
        Initialize-DiskStore -Path $path -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'NotBtrfs,*'
        $errors[0].Exception.Message | Should -BeLike "*'localhost'*not btrfs*"
        $errors[0].Exception.Message | Should -BeLike "*$path*"
        $path | Should -Not -Exist
    }
}

Describe 'Disk stores on a loop-mounted btrfs' -Skip:$noBtrfs {
    BeforeAll {
        $script:volume = Join-Path $TestDrive 'btrfs.img'
        $script:mount = Join-Path $TestDrive 'mnt'
        New-Item -ItemType Directory -Path $mount | Out-Null
        & truncate -s 256M $volume
        & mkfs.btrfs -q $volume | Out-Null
        & mount -o loop $volume $mount
        if ($LASTEXITCODE -ne 0) { throw "mount -o loop $volume failed" }
        $script:store = Join-Path $mount 'images'
    }

    AfterAll {
        # Unmount before Pester removes TestDrive (even when tests failed): the loop device goes with the mount (autoclear).
        Get-DiskStoreCheckpoint -Path $store -ErrorAction SilentlyContinue | Remove-DiskStoreCheckpoint -Confirm:$false -ErrorAction SilentlyContinue
        & umount $mount 2>$null
        if (Test-Path $volume) { & truncate -s 0 $volume }
    }

    It 'creates nothing with -WhatIf' {
        Initialize-DiskStore -Path $store -WhatIf | Should -BeNullOrEmpty
        $store | Should -Not -Exist
    }

    It 'creates a subvolume with No_COW' {
        $created = Initialize-DiskStore -Path $store
        $created.Path | Should -Be $store
        $created.NoCow | Should -BeTrue
        $created.HostName | Should -Be 'localhost'
        $created.CheckpointDirectory | Should -Be "$store.checkpoints"
        (& lsattr -d $store) | Should -BeLike '*C* *'
        & btrfs subvolume show $store | Out-Null
        $LASTEXITCODE | Should -Be 0
    }

    It 'refuses to initialize an existing store' {
        $errors = $null
        Initialize-DiskStore -Path $store -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'StoreExists,*'
    }

    It 'creates images in it with No_COW and says so' {
        $image = New-DiskImage -Path (Join-Path $store 'vm1.vdi') -Size 64MB -Format vdi -Verbose 4>&1 |
            Tee-Object -Variable output | Where-Object { $_ -is [ReplicaTools.Core.Storage.DiskImage] }
        $image.NoCow | Should -BeTrue
        $image.FileSystemType | Should -Be 'btrfs'
        ($output | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }).Message | Should -Contain "[localhost] No_COW is set on '$(Join-Path $store 'vm1.vdi')' (lsattr shows 'C')."
    }

    It 'takes a read-only checkpoint next to the store, not inside it' {
        $checkpoint = Checkpoint-DiskStore -Path $store
        $checkpoint.ReadOnly | Should -BeTrue
        $checkpoint.Name | Should -Match '^\d{8}T\d{6}\.\d{3}Z$'
        $checkpoint.Path | Should -Be (Join-Path "$store.checkpoints" $checkpoint.Name)
        $checkpoint.StorePath | Should -Be $store
        Join-Path $checkpoint.Path 'vm1.vdi' | Should -Exist
        { New-Item -ItemType File -Path (Join-Path $checkpoint.Path 'x') -ErrorAction Stop } | Should -Throw
    }

    It 'checkpoints a store from the pipeline, and -WhatIf takes none' {
        $before = @(Get-DiskStoreCheckpoint -Path $store).Count
        Get-Item $store | Checkpoint-DiskStore -WhatIf
        @(Get-DiskStoreCheckpoint -Path $store).Count | Should -Be $before
        [pscustomobject]@{ Path = $store } | Checkpoint-DiskStore | Out-Null
        @(Get-DiskStoreCheckpoint -Path $store).Count | Should -Be ($before + 1)
    }

    It 'lists checkpoints oldest first and filters by name' {
        $all = @(Get-DiskStoreCheckpoint -Path $store)
        $all.Count | Should -BeGreaterOrEqual 2
        ($all.Name | Sort-Object) | Should -Be $all.Name
        @(Get-DiskStoreCheckpoint -Path $store -Name $all[0].Name).Count | Should -Be 1
        @(Get-DiskStoreCheckpoint -Path $store -Name 'nothing*').Count | Should -Be 0
    }

    It 'removes a checkpoint from the pipeline, and refuses to remove the store itself' {
        $first = Get-DiskStoreCheckpoint -Path $store | Select-Object -First 1
        $first | Remove-DiskStoreCheckpoint -WhatIf
        $first.Path | Should -Exist
        $first | Remove-DiskStoreCheckpoint -Confirm:$false
        $first.Path | Should -Not -Exist

        $errors = $null
        Remove-DiskStoreCheckpoint -Path $store -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'NotACheckpoint,*'
        $store | Should -Exist
    }
}
