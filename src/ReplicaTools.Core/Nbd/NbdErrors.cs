namespace ReplicaTools.Core.Nbd;

/// <summary>The TCP port an NBD server was to listen on is taken on that host.</summary>
public sealed class NbdPortInUseException : ReplicaException
{
    public NbdPortInUseException(string hostName, string listenAddress, int port, string detail)
        : base("NbdPortInUse", ReplicaErrorCategory.ResourceUnavailable,
            $"On host '{hostName}', TCP port {port} ({listenAddress}) is already in use, so the NBD server cannot listen on it{(detail.Length > 0 ? $": {detail}" : ".")}",
            hostName, port)
    {
        Port = port;
        RecommendedAction = "Give another -Port, or omit -Port to let ReplicaTools pick a free one.";
    }

    public int Port { get; }
}

/// <summary>
/// A tool the NBD code needs is not installed on the host (a program, or a Python module such as python3-libnbd).
/// Same ErrorId and category as <see cref="Remote.ProgramNotFoundException"/>, plus the package to install.
/// </summary>
public sealed class NbdToolMissingException : ReplicaException
{
    public NbdToolMissingException(string hostName, string program, string package, string detail)
        : base("ProgramNotFound", ReplicaErrorCategory.NotInstalled,
            $"On host '{hostName}', {program} is not available ({detail.Trim()}). Install the package '{package}' on that host (e.g. apt-get install {package}).",
            hostName, program)
    {
        Program = program;
        Package = package;
        RecommendedAction = $"Install '{package}' on '{hostName}' (Debian/Ubuntu: apt-get install {package}).";
    }

    public string Program { get; }

    public string Package { get; }
}
