#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }

# Every object the module emits pipes into every cmdlet that binds one of its property names, with the object's optional
# properties null or empty. A minimal real instance of each output type (required members set, everything else left at
# its default) is piped into each such cmdlet, with -WhatIf where the cmdlet changes state. The binding may fail with the
# module's own error (the object names nothing that exists), but never with a parameter-validation or transformation
# error about a property the object left null or empty: the user did not set it.

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
    $module = Get-Module ReplicaTools

    # The module's output types: every [OutputType] of its cmdlets, and the element types of their collection properties
    # that are the module's own (TopologyHost from ReplicaTopology.Hosts, DiskCopyReport from Start-ReplicaVM, ...).
    $types = [System.Collections.Generic.HashSet[type]]::new()
    foreach ($command in $module.ExportedCmdlets.Values) {
        foreach ($attribute in $command.ImplementingType.GetCustomAttributes([System.Management.Automation.OutputTypeAttribute], $true)) {
            foreach ($name in $attribute.Type) {
                if ($name.Type -and $name.Type.Namespace -like 'ReplicaTools*') { [void]$types.Add($name.Type) }
            }
        }
    }
    $queue = [System.Collections.Generic.Queue[type]]::new([type[]]@($types))
    while ($queue.Count -gt 0) {
        $type = $queue.Dequeue()
        foreach ($property in $type.GetProperties()) {
            $candidates = @($property.PropertyType) + @($property.PropertyType.GetInterfaces() | Where-Object IsGenericType | ForEach-Object GetGenericArguments)
            foreach ($candidate in $candidates) {
                if ($candidate.Namespace -like 'ReplicaTools*' -and $candidate.IsClass -and -not $candidate.IsAbstract -and
                    $candidate.Name -notlike '*Collection' -and $candidate.Name -ne 'ReplicaSession' -and $types.Add($candidate)) {
                    $queue.Enqueue($candidate)
                }
            }
        }
    }

    $script:pairs = foreach ($type in $types) {
        $propertyNames = $type.GetProperties().Name
        foreach ($command in $module.ExportedCmdlets.Values) {
            $bound = foreach ($parameter in $command.Parameters.Values) {
                $byName = $parameter.Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] -and $_.ValueFromPipelineByPropertyName }
                if (-not $byName) { continue }
                $names = @($parameter.Name) + @($parameter.Aliases)
                $property = $names | Where-Object { $_ -in $propertyNames } | Select-Object -First 1
                if ($property) { @{ Parameter = $parameter.Name; Property = $property } }
            }
            # Session alone binds everywhere and is tested by every pair below; pair a type with a cmdlet only when a
            # property other than Session binds too.
            if (@($bound | Where-Object Parameter -ne 'Session').Count -gt 0) {
                @{ TypeFullName = $type.FullName; TypeName = $type.Name; Command = $command.Name; Bound = @($bound) }
            }
        }
    }
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Get-ReplicaToolsManifestPath) -Force
    $script:root = Join-Path ([System.IO.Path]::GetTempPath()) ('rt-binding-' + [guid]::NewGuid().ToString('N').Substring(0, 8))

    function Get-MinimalValue([type] $type, [string] $name, [int] $depth = 0) {
        if ($type -eq [string]) {
            if ($name -match 'Path|Socket|Destination|Location|Source|File|Copy|Device') { return (Join-Path $script:root "no-such-$($name.ToLowerInvariant())") }
            if ($name -match 'Uri') { return 'nbd://127.0.0.1:1/pipe-test' }
            return 'pipe-test'
        }
        if ($type -eq [ReplicaTools.Core.Remote.ReplicaSession]) { return [ReplicaTools.Core.Remote.ReplicaSession]::Local }
        # The comma keeps an empty collection one value: PowerShell would unroll it into nothing.
        if ($type.IsArray) { return , [Array]::CreateInstance($type.GetElementType(), 0) }
        if ($type.IsGenericType -and $type.GetGenericTypeDefinition().Name -like 'IReadOnly*') {
            return , [Array]::CreateInstance($type.GetGenericArguments()[0], 0)
        }
        if ($type.IsValueType) { return [Activator]::CreateInstance($type) }
        if ($depth -gt 3 -or $type.IsAbstract -or $type.IsInterface) { return $null }
        return New-MinimalInstance $type ($depth + 1)
    }

    # The smallest instance the type allows: its shortest constructor, then its C# 'required' members; everything else
    # stays null, empty or default, as on a real object whose optional facts are unknown.
    function New-MinimalInstance([type] $type, [int] $depth = 0) {
        $flags = [System.Reflection.BindingFlags]'Public, NonPublic, Instance'
        # Not a record's copy constructor: it needs an instance to copy.
        $constructor = $type.GetConstructors($flags) | Where-Object { -not ($_.GetParameters().Count -eq 1 -and $_.GetParameters()[0].ParameterType -eq $type) } |
            Sort-Object { $_.GetParameters().Count } | Select-Object -First 1
        $arguments = [System.Collections.Generic.List[object]]::new()
        foreach ($p in $constructor.GetParameters()) { $arguments.Add((Get-MinimalValue $p.ParameterType $p.Name $depth)) }
        $instance = $constructor.Invoke($arguments.ToArray())
        foreach ($property in $type.GetProperties()) {
            $required = $property.CustomAttributes | Where-Object { $_.AttributeType.Name -eq 'RequiredMemberAttribute' }
            if ($required -and $property.CanWrite) { $property.SetValue($instance, (Get-MinimalValue $property.PropertyType $property.Name $depth)) }
        }
        $instance
    }

    function Test-IsUnset($value) {
        $null -eq $value -or ($value -is [string] -and $value.Length -eq 0) -or
            ($value -is [System.Collections.ICollection] -and $value.Count -eq 0)
    }
}

AfterAll {
    Get-ReplicaSession -ErrorAction SilentlyContinue | Where-Object HostName -eq 'pipe-test' | Remove-ReplicaSession -ErrorAction SilentlyContinue
    Remove-Module ReplicaTools -Force -ErrorAction SilentlyContinue
    Remove-Module TestHelpers -Force -ErrorAction SilentlyContinue
}

Describe 'Pipeline binding by property name' {
    It 'finds the output types and the cmdlets that bind them' -ForEach @(@{ Count = $script:pairs.Count; Types = @($script:pairs.TypeName | Sort-Object -Unique) }) {
        $Count | Should -BeGreaterThan 100
        $Types | Should -Contain 'TopologyHost'
        $Types | Should -Contain 'CloneResult'
        $Types | Should -Contain 'NbdExport'
        $Types | Should -Contain 'ReplicaVmStartResult'
    }

    It '<TypeName> | <Command> binds, or fails with the module''s own error' -ForEach $script:pairs {
        $type = $TypeFullName -as [type]
        $instance = Get-MinimalValue $type 'instance'
        $command = Get-Command $Command
        $switches = @{ ErrorAction = 'SilentlyContinue' }
        if ($command.Parameters.ContainsKey('WhatIf')) { $switches.WhatIf = $true }
        if ($command.Parameters.ContainsKey('TimeoutSeconds')) { $switches.TimeoutSeconds = 5 }
        $errors = $null
        try {
            $null = $instance | & $Command @switches -ErrorVariable errors 6>$null 3>$null
        }
        catch {
            $errors = @($_) + @($errors)
        }

        $unset = @($Bound | Where-Object { Test-IsUnset $instance.($_.Property) } | ForEach-Object Parameter)
        foreach ($record in @($errors)) {
            $exception = $record.Exception
            while ($exception -and $exception -isnot [System.Management.Automation.ParameterBindingException] -and $exception.InnerException) {
                $exception = $exception.InnerException
            }
            if ($exception -is [System.Management.Automation.ParameterBindingException] -and $exception.ParameterName -in $unset) {
                throw "$TypeName | $Command failed on -$($exception.ParameterName), which the object left unset: $($record.FullyQualifiedErrorId): $($exception.Message)"
            }
        }
    }
}
