#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
}

AfterAll {
    Get-ReplicaSession | Remove-ReplicaSession -Confirm:$false
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'New-ReplicaSession' {
    It 'requires -HostName and takes it from the pipeline by value and by property name' {
        $parameter = (Get-Command New-ReplicaSession).Parameters['HostName']
        $attribute = $parameter.Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }
        $attribute.Mandatory | Should -BeTrue
        $attribute.ValueFromPipeline | Should -BeTrue
        $attribute.ValueFromPipelineByPropertyName | Should -BeTrue
    }

    It 'supports -WhatIf and opens nothing with it' {
        (Get-Command New-ReplicaSession).Parameters.ContainsKey('WhatIf') | Should -BeTrue
        $before = @(Get-ReplicaSession).Count
        New-ReplicaSession -HostName 192.0.2.1 -WhatIf
        @(Get-ReplicaSession).Count | Should -Be $before
    }

    It 'reports an unreachable host with its name and the HostUnreachable error id' {
        $port = Get-FreeTcpPort
        $errors = $null
        New-ReplicaSession -HostName 127.0.0.1 -Port $port -ConnectTimeoutSeconds 3 -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors.Count | Should -Be 1
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'HostUnreachable,*'
        $errors[0].CategoryInfo.Category | Should -Be 'ConnectionError'
        $errors[0].Exception.Message | Should -BeLike "*127.0.0.1:$port*"
        Get-ReplicaSession -HostName 127.0.0.1 -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'refuses ssh options that ReplicaTools manages, naming the parameter to use' {
        { New-ReplicaSession -HostName 192.0.2.1 -SshOption 'StrictHostKeyChecking=no' -ErrorAction Stop } |
            Should -Throw -ExpectedMessage '*-AcceptNewHostKey*'
    }

    It 'binds topology hosts from the pipeline by property name' {
        # A closed port: the connection attempt fails, and its error shows which host and port were bound.
        $port = Get-FreeTcpPort
        $path = Join-Path $TestDrive 'topology.yml'
        Set-Content -Path $path -Value @"
hosts:
  nfs1:
    address: 127.0.0.1
    port: $port
    user: replica
    connectTimeoutSeconds: 3
    roles: [storage]
"@
        $errors = $null
        Import-ReplicaTopology -Path $path | ForEach-Object Hosts | New-ReplicaSession -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors.Count | Should -Be 1
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'HostUnreachable,*'
        $errors[0].Exception.Message | Should -BeLike "*'nfs1'*port $port*"
    }
}

Describe 'Get-ReplicaSession and Remove-ReplicaSession' {
    It 'reports a missing session id as ObjectNotFound' {
        $errors = $null
        Get-ReplicaSession -Id 987654 -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'SessionNotFound,*'
        $errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
    }

    It 'returns nothing (and no error) for a wildcard that matches no session' {
        $errors = $null
        Get-ReplicaSession -Name 'no-such-*' -ErrorVariable errors | Should -BeNullOrEmpty
        $errors | Should -BeNullOrEmpty
    }

    It 'has Session, Id and HostName parameter sets and supports -WhatIf' {
        $command = Get-Command Remove-ReplicaSession
        $command.ParameterSets.Name | Should -Contain 'Session'
        $command.ParameterSets.Name | Should -Contain 'Id'
        $command.ParameterSets.Name | Should -Contain 'HostName'
        $command.Parameters.ContainsKey('WhatIf') | Should -BeTrue
    }
}
