using System.Management.Automation;
using ReplicaTools.Core.Remote;
using ReplicaTools.Core.Storage;
using ReplicaTools.Core.Text;

namespace ReplicaTools.Commands;

/// <summary>What the storage cmdlets share: local path resolution and size parsing.</summary>
internal static class StorageCmdletHelpers
{
    /// <summary>
    /// On the local machine a path may be relative to PowerShell's current location (or a PSDrive path); on a remote
    /// host, and for nfs:// URLs, it is passed as given (the core requires an absolute path there).
    /// </summary>
    public static string ResolvePath(PSCmdlet cmdlet, ReplicaSession session, string path)
    {
        if (!session.IsLocal || path.Contains("://", StringComparison.Ordinal) || string.IsNullOrWhiteSpace(path))
        {
            return path;
        }

        return cmdlet.GetUnresolvedProviderPathFromPSPath(path);
    }

    /// <summary>"20GB", "512M", "1.5TiB" or a number of bytes (PowerShell's 20GB arrives as 21474836480): binary units.</summary>
    public static long ParseSize(string text)
    {
        if (!ByteSize.TryParse(text, out var bytes) || bytes <= 0)
        {
            throw new ArgumentException($"-Size '{text}' is not a size; write it like 20GB, 512MB, 1.5TB or a number of bytes (units are binary: 1GB = 1024^3 bytes).", "Size");
        }

        return bytes;
    }

    public static string Describe(StoragePlan plan, string what) =>
        plan.Steps.Count == 0 ? what : $"{what}: {Environment.NewLine}{plan.Describe()}";
}
