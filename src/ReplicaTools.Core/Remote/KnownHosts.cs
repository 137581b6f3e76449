using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace ReplicaTools.Core.Remote;

/// <summary>What known_hosts says about the key a host presented.</summary>
public enum HostKeyStatus
{
    /// <summary>A line for this host records exactly this key.</summary>
    Known,

    /// <summary>No line for this host records a key of this type.</summary>
    Unknown,

    /// <summary>A line for this host records a different key of the same type: possibly someone in the middle.</summary>
    Changed,

    /// <summary>The key is listed under @revoked.</summary>
    Revoked,
}

/// <summary>One key line of a known_hosts file.</summary>
public sealed record KnownHostEntry(string File, int Line, string KeyType, byte[] Key)
{
    public string Fingerprint => KnownHosts.Fingerprint(Key);
}

/// <summary>The verdict on a presented host key, with the lines it rests on.</summary>
public sealed record HostKeyCheck(HostKeyStatus Status, IReadOnlyList<KnownHostEntry> Entries);

/// <summary>
/// OpenSSH's known_hosts files, read and written in OpenSSH's format (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"), so that
/// the SshNet transport trusts exactly what ssh trusts and ssh trusts what SshNet recorded: plain and hashed
/// (<c>|1|salt|HMAC-SHA1(salt, name)</c>) host fields, comma-separated patterns with <c>*</c>, <c>?</c> and <c>!</c>
/// negation, <c>[host]:port</c> names for ports other than 22, several keys per host, and <c>@revoked</c> lines.
/// <c>@cert-authority</c> lines are skipped (host certificates are not offered).
/// </summary>
public static class KnownHosts
{
    /// <summary>~/.ssh/known_hosts (on Windows %USERPROFILE%\.ssh\known_hosts, as Win32-OpenSSH uses).</summary>
    public static string DefaultUserPath => Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".ssh", "known_hosts");

    /// <summary>The system-wide file ssh also reads (GlobalKnownHostsFile): /etc/ssh/ssh_known_hosts, or %ProgramData%\ssh\ssh_known_hosts.</summary>
    public static string GlobalPath => OperatingSystem.IsWindows()
        ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.CommonApplicationData), "ssh", "ssh_known_hosts")
        : "/etc/ssh/ssh_known_hosts";

    /// <summary>The name known_hosts records a host under: the host for port 22, else <c>[host]:port</c>.</summary>
    public static string HostName(string host, int port) => port == 22 ? host : $"[{host}]:{port}";

    /// <summary>The SHA256 fingerprint of a public key blob as ssh-keygen -l prints it: <c>SHA256:</c> and unpadded base64.</summary>
    public static string Fingerprint(byte[] key) => "SHA256:" + Convert.ToBase64String(SHA256.HashData(key)).TrimEnd('=');

    /// <summary>The key type a public key blob names in its first field (RFC 4253 section 6.6), e.g. ssh-ed25519.</summary>
    /// <exception cref="FormatException">The blob does not start with a length-prefixed name.</exception>
    public static string KeyType(byte[] key)
    {
        if (key.Length < 4)
        {
            throw new FormatException("The public key blob is shorter than its type field.");
        }

        var length = BinaryPrimitives.ReadUInt32BigEndian(key);
        if (length == 0 || length > 64 || 4 + length > key.Length)
        {
            throw new FormatException("The public key blob has no valid type field.");
        }

        return Encoding.ASCII.GetString(key, 4, (int)length);
    }

    /// <summary>The label ssh-keygen -l prints after a fingerprint: ED25519, RSA, ECDSA, DSA.</summary>
    public static string KeyLabel(string keyType) => Family(keyType) switch
    {
        "ssh-ed25519" => "ED25519",
        "ssh-rsa" => "RSA",
        "ecdsa" => "ECDSA",
        "ssh-dss" => "DSA",
        var other => other.ToUpperInvariant(),
    };

    /// <summary>The keys known_hosts records for a host (not @revoked ones), in file order.</summary>
    public static IReadOnlyList<KnownHostEntry> EntriesFor(IEnumerable<string> files, string host, int port) =>
        Read(files, host, port).Where(e => !e.Revoked).Select(e => e.Entry).ToList();

    /// <summary>The key types known_hosts holds for a host, in file order (to prefer them when negotiating, as ssh does).</summary>
    public static IReadOnlyList<string> KeyTypesFor(IEnumerable<string> files, string host, int port) =>
        EntriesFor(files, host, port).Select(e => e.KeyType).Distinct(StringComparer.Ordinal).ToList();

    /// <summary>"SHA256:... (ED25519) at FILE:LINE", for messages.</summary>
    public static string Describe(KnownHostEntry entry) => $"{entry.Fingerprint} ({KeyLabel(entry.KeyType)}) at {entry.File}:{entry.Line}";

    /// <summary>Checks a presented key against every line for the host in <paramref name="files"/> (missing files count as empty).</summary>
    public static HostKeyCheck Check(IEnumerable<string> files, string host, int port, byte[] key)
    {
        var lines = Read(files, host, port);
        var revoked = lines.Where(l => l.Revoked && l.Entry.Key.AsSpan().SequenceEqual(key)).Select(l => l.Entry).ToList();
        if (revoked.Count > 0)
        {
            return new HostKeyCheck(HostKeyStatus.Revoked, revoked);
        }

        var entries = lines.Where(l => !l.Revoked).Select(l => l.Entry).ToList();
        var same = entries.Where(e => e.Key.AsSpan().SequenceEqual(key)).ToList();
        if (same.Count > 0)
        {
            return new HostKeyCheck(HostKeyStatus.Known, same);
        }

        var family = Family(KeyType(key));
        var sameType = entries.Where(e => Family(e.KeyType) == family).ToList();
        return sameType.Count > 0 ? new HostKeyCheck(HostKeyStatus.Changed, sameType) : new HostKeyCheck(HostKeyStatus.Unknown, entries);
    }

    /// <summary>
    /// Appends <c>NAME KEYTYPE BASE64</c> for the host (unhashed, as ssh writes it without HashKnownHosts), creating the
    /// file and its directory (0700) when missing.
    /// </summary>
    public static void Append(string file, string host, int port, byte[] key)
    {
        var line = $"{HostName(host, port)} {KeyType(key)} {Convert.ToBase64String(key)}\n";
        var directory = Path.GetDirectoryName(Path.GetFullPath(file))!;
        if (!Directory.Exists(directory))
        {
            if (OperatingSystem.IsWindows())
            {
                Directory.CreateDirectory(directory);
            }
            else
            {
                Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
        }

        lock (AppendGate)
        {
            var options = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.Read };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            using var stream = new FileStream(file, options);
            var needsNewline = false;
            if (stream.Length > 0)
            {
                stream.Seek(-1, SeekOrigin.End);
                needsNewline = stream.ReadByte() != '\n';
            }

            stream.Seek(0, SeekOrigin.End);
            stream.Write(Encoding.ASCII.GetBytes(needsNewline ? "\n" + line : line));
        }
    }

    private static readonly object AppendGate = new();

    /// <summary>Groups key types the way ssh decides "changed": all ECDSA curves are one type; RSA and DSA by name.</summary>
    private static string Family(string keyType) => keyType.StartsWith("ecdsa-sha2-", StringComparison.Ordinal) ? "ecdsa" : keyType;

    private static List<(KnownHostEntry Entry, bool Revoked)> Read(IEnumerable<string> files, string host, int port)
    {
        var name = HostName(host, port).ToLowerInvariant();
        var found = new List<(KnownHostEntry, bool)>();
        foreach (var file in files)
        {
            string[] lines;
            try
            {
                lines = File.ReadAllLines(file);
            }
            catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
            {
                continue;
            }

            for (var i = 0; i < lines.Length; i++)
            {
                var fields = lines[i].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length == 0 || fields[0].StartsWith('#'))
                {
                    continue;
                }

                var marker = fields[0].StartsWith('@') ? fields[0] : null;
                if (marker is not null)
                {
                    fields = fields[1..];
                }

                if (marker is "@cert-authority" || (marker is not null && marker != "@revoked") || fields.Length < 3 || !HostFieldMatches(fields[0], name))
                {
                    continue;
                }

                byte[] key;
                try
                {
                    key = Convert.FromBase64String(fields[2]);
                    if (KeyType(key) != fields[1])
                    {
                        continue;
                    }
                }
                catch (FormatException)
                {
                    continue;
                }

                found.Add((new KnownHostEntry(file, i + 1, fields[1], key), marker == "@revoked"));
            }
        }

        return found;
    }

    /// <summary>OpenSSH's match_hostname: a hashed field, or patterns where any '!' match vetoes the line.</summary>
    private static bool HostFieldMatches(string field, string name)
    {
        if (field.StartsWith("|1|", StringComparison.Ordinal))
        {
            var parts = field.Split('|');
            if (parts.Length != 4)
            {
                return false;
            }

            try
            {
                var salt = Convert.FromBase64String(parts[2]);
                var hash = Convert.FromBase64String(parts[3]);
                return CryptographicOperations.FixedTimeEquals(HMACSHA1.HashData(salt, Encoding.UTF8.GetBytes(name)), hash);
            }
            catch (FormatException)
            {
                return false;
            }
        }

        var matched = false;
        foreach (var pattern in field.Split(','))
        {
            var negated = pattern.StartsWith('!');
            if (Wildcard(negated ? pattern[1..] : pattern, name))
            {
                if (negated)
                {
                    return false;
                }

                matched = true;
            }
        }

        return matched;
    }

    /// <summary>Case-insensitive glob with '*' (any run) and '?' (one character), as OpenSSH's match_pattern.</summary>
    private static bool Wildcard(string pattern, string text)
    {
        int p = 0, t = 0, star = -1, mark = 0;
        while (t < text.Length)
        {
            if (p < pattern.Length && (pattern[p] == '?' || char.ToLowerInvariant(pattern[p]) == text[t]))
            {
                p++;
                t++;
            }
            else if (p < pattern.Length && pattern[p] == '*')
            {
                star = p++;
                mark = t;
            }
            else if (star >= 0)
            {
                p = star + 1;
                t = ++mark;
            }
            else
            {
                return false;
            }
        }

        while (p < pattern.Length && pattern[p] == '*')
        {
            p++;
        }

        return p == pattern.Length;
    }
}
