#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

BeforeDiscovery {
    $manifestPath = Join-Path $PSScriptRoot '../../out/ReplicaTools/ReplicaTools.psd1'
    $script:exportedCmdlets = if (Test-Path $manifestPath) { (Import-PowerShellDataFile $manifestPath).CmdletsToExport } else { @() }
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:manifestPath = Get-ReplicaToolsManifestPath
    Import-Module $script:manifestPath -Force
}

AfterAll {
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'The ReplicaTools module' {
    It 'passes Test-ModuleManifest' {
        { Test-ModuleManifest -Path $script:manifestPath -ErrorAction Stop } | Should -Not -Throw
    }

    It 'exports exactly the cmdlets its manifest lists' {
        $manifest = Import-PowerShellDataFile $script:manifestPath
        $exported = (Get-Command -Module ReplicaTools -CommandType Cmdlet).Name | Sort-Object
        $exported | Should -Be ($manifest.CmdletsToExport | Sort-Object)
    }

    It 'has a conceptual help topic: Get-Help about_ReplicaTools' {
        $topic = Get-Help about_ReplicaTools
        $topic | Should -Not -BeNullOrEmpty
        $text = $topic | Out-String
        $text | Should -BeLike '*SESSIONS AND THE LOCAL DEFAULT*'
        $text | Should -BeLike '*TOPOLOGY FILES*'
        $text | Should -BeLike '*-WHATIF PLANS*'
        foreach ($cmdlet in (Get-Command -Module ReplicaTools -CommandType Cmdlet).Name) {
            $text | Should -BeLike "*$cmdlet*" -Because "about_ReplicaTools says which scenario $cmdlet serves"
        }
    }

    It 'uses only approved verbs' {
        $approved = (Get-Verb).Verb
        Get-Command -Module ReplicaTools | ForEach-Object { $approved | Should -Contain $_.Verb -Because "$($_.Name) should use an approved verb" }
    }
}

Describe 'Help for <_>' -ForEach $script:exportedCmdlets {
    BeforeAll {
        $script:help = Get-Help -Name $_ -Full
        $script:command = Get-Command -Name $_
    }

    It 'has a synopsis and a description' {
        $script:help.Synopsis | Should -Not -BeNullOrEmpty
        $script:help.Synopsis | Should -Not -Match '^\s*\S+-\S+\s*\[' -Because 'an auto-generated synopsis means the MAML help was not found'
        ($script:help.description.Text -join '') | Should -Not -BeNullOrEmpty
    }

    It 'has at least one example with code and remarks' {
        @($script:help.examples.example).Count | Should -BeGreaterThan 0
        $script:help.examples.example[0].code | Should -Not -BeNullOrEmpty
    }

    It 'describes every parameter' {
        $common = [System.Management.Automation.Cmdlet]::CommonParameters + [System.Management.Automation.Cmdlet]::OptionalCommonParameters
        foreach ($name in $script:command.Parameters.Keys | Where-Object { $_ -notin $common }) {
            $parameterHelp = $script:help.parameters.parameter | Where-Object name -EQ $name
            ($parameterHelp.description.Text -join '') | Should -Not -BeNullOrEmpty -Because "-$name of $($script:command.Name) should be described"
        }
    }
}
