namespace ReplicaTools.Core.Remote;

/// <summary>
/// The module's one way to replace a file on a host so that the path never holds a half-written file, and its one way
/// to reflink. Commands only (argument lists, paths as positional parameters of fixed scripts): plans show them, hosts
/// run them.
/// </summary>
public static class HostFiles
{
    /// <summary>Exit code of <see cref="Promote"/> when the destination exists and must not be overwritten.</summary>
    public const int DestinationExists = 17;

    /// <summary>
    /// $1 path, $2 umask, $3 "mkdir" to create the parent directory. Writes standard input to $1.tmp, flushes it and
    /// renames it over $1 (rename(2) is atomic on one filesystem: readers see the old or the new file, never a part).
    /// </summary>
    private const string WriteScript =
        "set -e; umask \"$2\"; [ \"$3\" != mkdir ] || mkdir -p -- \"$(dirname -- \"$1\")\"; cat > \"$1.tmp\"; sync -- \"$1.tmp\"; mv -f -T -- \"$1.tmp\" \"$1\"";

    /// <summary>$1 temporary, $2 destination, $3 "overwrite" or "keep". Flushes $1, renames it to $2 (unless keep and $2 exists: exit 17), flushes the directory.</summary>
    private const string PromoteScript =
        "sync -- \"$1\" && { [ \"$3\" = overwrite ] || [ ! -e \"$2\" ] || exit 17; } && mv -f -T -- \"$1\" \"$2\" && sync -- \"$(dirname -- \"$2\")\"";

    /// <summary>
    /// Writes <paramref name="content"/> (or, when null, whatever standard input the caller sets later with
    /// <see cref="CommandSpec.WithStandardInput"/>) to <paramref name="path"/> through PATH.tmp and a rename.
    /// </summary>
    /// <param name="isPrivate">Mode 0600 (state, configuration with secrets); else 0644.</param>
    /// <param name="createDirectory">Create the parent directory first.</param>
    public static CommandSpec WriteAtomically(string path, byte[]? content = null, bool isPrivate = true, bool createDirectory = false, TimeSpan? timeout = null) =>
        new("sh", "-c", WriteScript, "sh", path, isPrivate ? "077" : "022", createDirectory ? "mkdir" : "no")
        {
            StandardInput = content,
            Timeout = timeout ?? TimeSpan.FromMinutes(1),
        };

    /// <summary>
    /// Puts a finished temporary file in place: flush, rename over <paramref name="destination"/>, flush the directory.
    /// With <paramref name="overwrite"/> false an existing destination is kept and the command exits with
    /// <see cref="DestinationExists"/> (a success code, so the caller can say so).
    /// </summary>
    public static CommandSpec Promote(string temporary, string destination, bool overwrite = true, TimeSpan? timeout = null) =>
        new("sh", "-c", PromoteScript, "sh", temporary, destination, overwrite ? "overwrite" : "keep")
        {
            Timeout = timeout ?? Timeout.InfiniteTimeSpan,
            SuccessExitCodes = new[] { 0, DestinationExists },
        };

    /// <summary>
    /// cp --reflink: a copy that shares the source's extents (instant on btrfs and XFS). With <paramref name="required"/>
    /// it fails where the filesystem cannot share extents (cp --reflink=always; the caller checks the exit code); without,
    /// it falls back to a full, sparse copy there (cp --reflink=auto --sparse=always).
    /// </summary>
    public static CommandSpec Reflink(string from, string to, bool required, TimeSpan? timeout = null) =>
        // coreutils accepts --reflink=always only with the default --sparse=auto.
        new(required ? new[] { "cp", "--reflink=always", "--", from, to } : new[] { "cp", "--reflink=auto", "--sparse=always", "--", from, to })
        {
            Timeout = timeout ?? Timeout.InfiniteTimeSpan,
            ThrowOnFailure = !required,
        };

    /// <summary>
    /// $1 directory, $2 first line, then glob patterns (the module's own, e.g. *.res): prints every matching regular
    /// file whose first line is exactly $2 as RS NAME LF CONTENT. Nothing when the directory does not exist.
    /// </summary>
    private const string ListByFirstLineScript =
        "cd -- \"$1\" 2>/dev/null || exit 0; h=$2; shift 2; for g in \"$@\"; do for f in $g; do [ -f \"$f\" ] || continue; " +
        "IFS= read -r first < \"$f\" || true; [ \"$first\" = \"$h\" ] || continue; printf '\\036%s\\n' \"$f\"; cat -- \"$f\"; done; done";

    /// <summary>Lists the files of <paramref name="directory"/> matching <paramref name="patterns"/> that start with <paramref name="firstLine"/> (see <see cref="ParseListing"/>).</summary>
    public static CommandSpec ListByFirstLine(string directory, string firstLine, params string[] patterns) =>
        new(new[] { "sh", "-c", ListByFirstLineScript, "sh", directory, firstLine }.Concat(patterns)) { Timeout = TimeSpan.FromMinutes(1) };

    /// <summary>The (file name, content) pairs <see cref="ListByFirstLine"/> printed.</summary>
    public static IEnumerable<(string FileName, string Content)> ParseListing(string output)
    {
        foreach (var chunk in output.Split('\u001e', StringSplitOptions.RemoveEmptyEntries))
        {
            var newline = chunk.IndexOf('\n');
            if (newline > 0)
            {
                yield return (chunk[..newline], chunk[(newline + 1)..]);
            }
        }
    }
}
