using System.Text;

namespace ReplicaTools.Tests.Remote;

/// <summary>
/// Strings that break naive command-line building. Each must arrive byte-identical as one argument, and none may run:
/// the ones that would create <c>{marker}</c> if executed are checked for that.
/// </summary>
public static class HostileStrings
{
    private static readonly string[] Templates =
    {
        "",
        " ",
        "  leading and trailing spaces  ",
        "'",
        "''",
        "\"",
        "\"\"",
        "'\"'\"'",
        "$(touch {marker})",
        "`touch {marker}`",
        "; touch {marker}",
        "&& touch {marker}",
        "|| touch {marker}",
        "| touch {marker}",
        "& touch {marker} &",
        "\ntouch {marker}\n",
        "\r\ntouch {marker}\r\n",
        "'; touch {marker}; echo '",
        "\"; touch {marker}; echo \"",
        "$(printf x)$(touch {marker})",
        "> {marker}",
        "A=1 touch {marker}",
        "$HOME",
        "${HOME}",
        "${IFS}",
        "$((1+1))",
        "$'\\x41'",
        "$0 $1 $@ $* $# $? $$ $!",
        "*",
        "?",
        "[a-z]*",
        "/*",
        "*/../*",
        "~",
        "~root",
        "-n",
        "-e",
        "--help",
        "-",
        "--",
        "-rf /",
        "\\",
        "\\\\",
        "\\'",
        "trailing backslash\\",
        "#comment",
        "a #b",
        "!",
        "!!",
        "!$",
        "{a,b}",
        "(subshell)",
        "< /etc/passwd",
        "2>&1",
        "\ttab\tseparated",
        "line1\nline2\nline3",
        "unicode: héllo wörld ✓ 日本語 🚀",
        "\u00a0non-breaking\u00a0space",
        "\u202eright-to-left override",
        "\u001b[31mred\u001b[0m",
        "\u0001\u0002\u0007\u007f control characters",
        "%s%n%x%%",
        "x=y",
        "if",
        "then",
        "{",
        "}",
        "exec",
        "\u001ert-pid:999",
        "it's a \"quoted\" `mixed` $(string) \\ with ; everything | & > <",
    };

    public static IReadOnlyList<string> All(string marker)
    {
        var strings = Templates.Select(t => t.Replace("{marker}", marker, StringComparison.Ordinal)).ToList();
        strings.Add(Long64KiB());
        return strings;
    }

    public static int Count => Templates.Length + 1;

    public static IEnumerable<object[]> Indexes => Enumerable.Range(0, Count).Select(i => new object[] { i });

    /// <summary>64 KiB of quote-heavy text: stays under the remote command-line limit after quoting.</summary>
    public static string Long64KiB()
    {
        const string pattern = "ab'c$(d)`e` \n;|&*\"";
        var builder = new StringBuilder(65536);
        while (builder.Length < 65536)
        {
            builder.Append(pattern);
        }

        return builder.ToString(0, 65536);
    }

    public static string Hex(string value) => Convert.ToHexString(Encoding.UTF8.GetBytes(value)).ToLowerInvariant();
}
