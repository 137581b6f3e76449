@{
    RootModule           = 'ReplicaTools.dll'
    # Imported before RootModule: sets up the module's own AssemblyLoadContext for the core and its dependencies.
    NestedModules        = @('ReplicaTools.Loader.dll')
    ModuleVersion        = '0.0.0'
    GUID                 = '5d0c7c1e-4f2b-4b8e-9a57-3c2f1e9b7a41'
    Author               = 'ReplicaTools contributors'
    CompanyName          = 'ReplicaTools'
    Copyright            = '(c) ReplicaTools contributors. MIT License.'
    Description          = 'Replicated VM disks for Linux KVM hosts over SSH: live drive mirrors, DRBD-replicated disks over NBD and iSCSI, quorum disks, live NBD clones with incremental dirty-bitmap refreshes, and throughput measurements.'
    PowerShellVersion    = '7.4'
    CompatiblePSEditions = @('Core')
    FormatsToProcess     = @('ReplicaTools.Format.ps1xml')
    CmdletsToExport      = @(
        'Checkpoint-DiskStore'
        'Compare-DiskImage'
        'ConvertTo-ThroughputTable'
        'Get-DiskCheckpoint'
        'Get-DiskImage'
        'Get-DiskStoreCheckpoint'
        'Get-DriveMirror'
        'Get-IscsiTarget'
        'Get-NbdExport'
        'Get-QuorumDisk'
        'Get-ReplicaSession'
        'Import-ReplicaTopology'
        'Initialize-DiskStore'
        'Invoke-NbdClone'
        'Invoke-ReplicaCommand'
        'Measure-DiskThroughput'
        'New-DiskImage'
        'New-IscsiTarget'
        'New-NbdExport'
        'New-QuorumDisk'
        'New-ReplicaSession'
        'Remove-DiskCheckpoint'
        'Remove-DiskImage'
        'Remove-DiskStoreCheckpoint'
        'Remove-IscsiTarget'
        'Remove-NbdExport'
        'Remove-ReplicaSession'
        'Repair-QuorumDisk'
        'Resume-DriveMirror'
        'Start-DriveMirror'
        'Start-ReplicaVM'
        'Stop-DriveMirror'
        'Suspend-DriveMirror'
        'Test-QuorumDisk'
        'Test-ReplicaTopology'
        'Wait-DriveMirror'
    )
    FunctionsToExport    = @()
    VariablesToExport    = @()
    AliasesToExport      = @()
    PrivateData          = @{
        PSData = @{
            Tags         = @('KVM', 'QEMU', 'libvirt', 'DRBD', 'NBD', 'iSCSI', 'Replication', 'Backup', 'Storage', 'Linux', 'SSH')
            LicenseUri   = 'https://github.com/replicatools/ReplicaTools/blob/main/LICENSE'
            ProjectUri   = 'https://github.com/replicatools/ReplicaTools'
            ReleaseNotes = 'See https://github.com/replicatools/ReplicaTools/releases'
        }
    }
}
