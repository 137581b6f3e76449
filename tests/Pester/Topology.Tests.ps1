#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Import-ReplicaTopology' {
    BeforeAll {
        $script:path = Join-Path $TestDrive 'topology.yml'
        Set-Content -Path $script:path -Value @'
defaults:
  user: root
hosts:
  kvm1:
    address: 192.0.2.10
    roles: [kvm]
  nfs1:
    address: 192.0.2.11
    roles: [storage, nfs]
  nfs2:
    address: 192.0.2.12
    roles: [storage, nfs]
disks:
  vm1-root:
    vm: vm1
    host: kvm1
    format: vdi
    size: 20GB
    copies:
      - host: nfs1
        path: /srv/vdis/vm1.vdi
      - host: nfs2
        path: /srv/vdis/vm1.vdi
'@
    }

    It 'returns typed hosts and disks' {
        $topology = Import-ReplicaTopology -Path $script:path
        $topology | Should -BeOfType 'ReplicaTools.Core.Topology.ReplicaTopology'
        $topology.Hosts.Count | Should -Be 3
        $topology.Hosts['nfs2'].HostName | Should -Be '192.0.2.12'
        $topology.Hosts['nfs2'].UserName | Should -Be 'root'
        @($topology.Hosts | Where-Object Roles -Contains 'storage').Count | Should -Be 2
        $topology.Disks[0].Size | Should -Be 20GB
        $topology.Disks[0].Copies[1].Host | Should -Be 'nfs2'
    }

    It 'accepts the path from the pipeline (Get-Item)' {
        (Get-Item $script:path | Import-ReplicaTopology).Hosts.Count | Should -Be 3
    }

    It 'reports an unknown key with file, line and column' {
        $broken = Join-Path $TestDrive 'broken.yml'
        Set-Content -Path $broken -Value "hosts:`n  nfs1:`n    adress: 192.0.2.11`n"
        { Import-ReplicaTopology -Path $broken -ErrorAction Stop } |
            Should -Throw -ExpectedMessage "*broken.yml:3:5: host 'nfs1': unknown key 'adress'*"
    }

    It 'gives the TopologyInvalid error id and ParserError category' {
        $broken = Join-Path $TestDrive 'broken2.yml'
        Set-Content -Path $broken -Value "hosts: [unclosed`n"
        $errors = $null
        Import-ReplicaTopology -Path $broken -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'TopologyInvalid,*'
        $errors[0].CategoryInfo.Category | Should -Be 'ParserError'
    }
}
