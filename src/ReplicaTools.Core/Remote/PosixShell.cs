using System.Text;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// The one audited place that turns an argument list into a POSIX shell command line.
/// Every remote command line in ReplicaTools is built here; nothing else concatenates user text into a shell line.
/// </summary>
public static class PosixShell
{
    /// <summary>Linux MAX_ARG_STRLEN: sshd hands the whole command line to the login shell as one argument.</summary>
    public const int MaxCommandLineBytes = 131072;

    // Words that a shell would treat as syntax if they stood unquoted as the first word.
    private static readonly HashSet<string> ReservedWords = new(StringComparer.Ordinal)
    {
        "!", "{", "}", "case", "do", "done", "elif", "else", "esac", "fi", "for", "function",
        "if", "in", "select", "then", "time", "until", "while", "[[", "]]", "coproc",
    };

    /// <summary>
    /// Quotes one argument so that a POSIX shell passes it through byte-identical as a single word.
    /// Plain words (letters, digits and <c>_ - . / : , + @ %</c>) stay readable; everything else is wrapped in
    /// single quotes, inside which nothing is special; an embedded single quote becomes <c>'\''</c>.
    /// </summary>
    public static string Quote(string argument)
    {
        ArgumentNullException.ThrowIfNull(argument);
        if (argument.Contains('\0'))
        {
            throw new ArgumentException("An argument contains a NUL character; no command line can carry one. Pass binary data on standard input instead.", nameof(argument));
        }

        if (argument.Length > 0 && IsPlainWord(argument) && !ReservedWords.Contains(argument))
        {
            return argument;
        }

        var builder = new StringBuilder(argument.Length + 2);
        builder.Append('\'');
        foreach (var c in argument)
        {
            if (c == '\'')
            {
                builder.Append("'\\''");
            }
            else
            {
                builder.Append(c);
            }
        }

        builder.Append('\'');
        return builder.ToString();
    }

    /// <summary>Joins an argument list into one command line, every element quoted by <see cref="Quote"/>.</summary>
    public static string Join(IEnumerable<string> arguments)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        return string.Join(' ', arguments.Select(Quote));
    }

    private static bool IsPlainWord(string word)
    {
        foreach (var c in word)
        {
            var plain = c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9')
                or '_' or '-' or '.' or '/' or ':' or ',' or '+' or '@' or '%';
            if (!plain)
            {
                return false;
            }
        }

        return true;
    }
}
