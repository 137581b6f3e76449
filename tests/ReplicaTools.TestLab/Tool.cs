using System.Diagnostics;

namespace ReplicaTools.TestLab;

/// <summary>Runs lab setup commands on this machine (not through the code under test).</summary>
public static class Tool
{
    public static string Run(string program, params string[] arguments) => Run(program, (IEnumerable<string>)arguments);

    public static string Run(string program, IEnumerable<string> arguments, TimeSpan? timeout = null)
    {
        var (code, stdout, stderr) = TryRun(program, arguments, timeout);
        if (code != 0)
        {
            throw new InvalidOperationException($"Lab setup command failed ({code}): {program} {string.Join(' ', arguments)}\n{stderr}{stdout}");
        }

        return stdout;
    }

    /// <summary>Runs a setup command with <paramref name="input"/> on its standard input (for secrets, which never go in arguments).</summary>
    public static string RunWithInput(string program, string input, params string[] arguments)
    {
        var (code, stdout, stderr) = TryRun(program, arguments, null, input);
        if (code != 0)
        {
            throw new InvalidOperationException($"Lab setup command failed ({code}): {program} {string.Join(' ', arguments)}\n{stderr}{stdout}");
        }

        return stdout;
    }

    public static (int ExitCode, string StandardOutput, string StandardError) TryRun(string program, IEnumerable<string> arguments, TimeSpan? timeout = null, string? input = null)
    {
        var startInfo = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        using var process = Process.Start(startInfo) ?? throw new InvalidOperationException($"Could not start {program}");
        if (input is not null)
        {
            process.StandardInput.Write(input);
        }

        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"Lab setup command timed out: {program} {string.Join(' ', arguments)}");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    public static bool Exists(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin")
        .Split(':')
        .Concat(new[] { "/usr/sbin", "/sbin" })
        .Any(dir => File.Exists(Path.Combine(dir, program)));

    public static void Require(params string[] programs)
    {
        var missing = programs.Where(p => !Exists(p)).ToArray();
        if (missing.Length > 0)
        {
            throw new InvalidOperationException($"The test lab needs {string.Join(", ", missing)}; run tests/run.sh as root to install the lab packages.");
        }
    }
}
