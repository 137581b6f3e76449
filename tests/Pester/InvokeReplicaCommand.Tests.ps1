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

Describe 'Invoke-ReplicaCommand on the local machine' {
    It 'passes every argument through exactly, without a shell' {
        $hostile = "it's `$(touch $TestDrive/pwned); `"quoted`" | & `n second line"
        $result = Invoke-ReplicaCommand -ArgumentList 'printf', '%s', $hostile
        $result.StandardOutput | Should -BeExactly $hostile
        $result.ExitCode | Should -Be 0
        $result.HostName | Should -Be 'localhost'
        Join-Path $TestDrive 'pwned' | Should -Not -Exist
    }

    It 'passes an empty string as an argument' {
        $result = Invoke-ReplicaCommand -ArgumentList 'sh', '-c', 'printf "%s" "$#"', 'sh', ''
        $result.StandardOutput | Should -BeExactly '1'
    }

    It 'writes a CommandFailed error with the exit code and stderr for a failing command' {
        $errors = $null
        Invoke-ReplicaCommand -ArgumentList 'sh', '-c', 'echo boom >&2; exit 3' -ErrorAction SilentlyContinue -ErrorVariable errors | Should -BeNullOrEmpty
        $errors[0].FullyQualifiedErrorId | Should -BeLike 'CommandFailed,*'
        $errors[0].Exception.ExitCode | Should -Be 3
        $errors[0].Exception.Message | Should -BeLike '*localhost*exit code 3*boom*'
    }

    It 'returns the result of a failing command with -IgnoreExitCode' {
        $result = Invoke-ReplicaCommand -ArgumentList 'sh', '-c', 'exit 3' -IgnoreExitCode
        $result.ExitCode | Should -Be 3
    }

    It 'kills a command that exceeds -TimeoutSeconds' {
        $elapsed = Measure-Command {
            { Invoke-ReplicaCommand -ArgumentList 'sleep', '60' -TimeoutSeconds 1 -ErrorAction Stop } | Should -Throw -ErrorId 'CommandTimedOut,*'
        }
        $elapsed.TotalSeconds | Should -BeLessThan 20
    }

    It 'reports a program that does not exist as NotInstalled' {
        $errors = $null
        Invoke-ReplicaCommand -ArgumentList 'no-such-program-xyz' -ErrorAction SilentlyContinue -ErrorVariable errors
        $errors[0].CategoryInfo.Category | Should -Be 'NotInstalled'
    }

    It 'feeds -InputText to standard input' {
        (Invoke-ReplicaCommand -ArgumentList 'cat' -InputText 'secret stays off the command line').StandardOutput |
            Should -BeExactly 'secret stays off the command line'
    }

    It 'does not run anything with -WhatIf' {
        $marker = Join-Path $TestDrive 'whatif-marker'
        Invoke-ReplicaCommand -ArgumentList 'touch', $marker -WhatIf
        $marker | Should -Not -Exist
    }

    It 'binds ArgumentList from the pipeline by property name' {
        $result = [pscustomobject]@{ ArgumentList = @('echo', 'from the pipeline') } | Invoke-ReplicaCommand
        $result.StandardOutput | Should -BeExactly "from the pipeline`n"
    }

    It 'takes -Session from the pipeline by value and by property name' {
        $attribute = (Get-Command Invoke-ReplicaCommand).Parameters['Session'].Attributes |
            Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] }
        $attribute.ValueFromPipeline | Should -BeTrue
        $attribute.ValueFromPipelineByPropertyName | Should -BeTrue
    }

    It 'refuses an argument with a NUL character' {
        { Invoke-ReplicaCommand -ArgumentList 'echo', "a`0b" -ErrorAction Stop } | Should -Throw -ExpectedMessage '*NUL*'
    }
}
