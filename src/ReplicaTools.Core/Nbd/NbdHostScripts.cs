namespace ReplicaTools.Core.Nbd;

/// <summary>
/// The fixed shell scripts the NBD code runs on a host (<c>sh -c SCRIPT sh ARG...</c>). They never contain user
/// text: paths, names and numbers arrive as positional parameters, quoted by <see cref="Remote.PosixShell"/>.
/// </summary>
internal static class NbdHostScripts
{
    /// <summary>$1: path. Creates the file from standard input only if it does not exist yet (exit 17 if it does).</summary>
    public const string CreateExclusive = "umask 077; set -C; [ -e \"$1\" ] && exit 17; cat > \"$1\"";

    /// <summary>$1: path. Prints "file", "block", "other" or "missing", then the resolved absolute path.</summary>
    public const string ProbePath =
        "p=$1; if [ -b \"$p\" ]; then echo block; elif [ -f \"$p\" ]; then echo file; elif [ -e \"$p\" ]; then echo other; else echo missing; exit 0; fi; " +
        "realpath -e -- \"$p\"";

    /// <summary>$1: directory. Prints each *.json in it as: RS name LF content LF.</summary>
    public const string ListRecords =
        "cd -- \"$1\" 2>/dev/null || exit 0; for f in *.json; do [ -f \"$f\" ] || continue; printf '\\036%s\\n' \"$f\"; cat -- \"$f\"; echo; done";

    /// <summary>Shell function: is $p alive (not a zombie), started with pid file $f, and is its argv[0] the program $prog?</summary>
    private const string OursFunction =
        "ours() { [ -r \"/proc/$p/status\" ] && ! grep -q '^State:[[:space:]]*Z' \"/proc/$p/status\" 2>/dev/null && " +
        "tr '\\0' '\\n' < \"/proc/$p/cmdline\" 2>/dev/null | grep -qxF -- \"$f\" && " +
        "[ \"$(tr '\\0' '\\n' < \"/proc/$p/cmdline\" 2>/dev/null | head -n 1 | sed 's|.*/||')\" = \"$prog\" ]; }; ";

    /// <summary>Triples (pid, pid file, program). Prints "PID ours", "PID gone" (exited or zombie) or "PID other" (pid reused).</summary>
    public const string CheckProcesses =
        OursFunction +
        "while [ \"$#\" -ge 3 ]; do p=$1; f=$2; prog=$3; shift 3; " +
        "if [ ! -r \"/proc/$p/status\" ] || grep -q '^State:[[:space:]]*Z' \"/proc/$p/status\" 2>/dev/null; then echo \"$p gone\"; " +
        "elif ours; then echo \"$p ours\"; else echo \"$p other\"; fi; done";

    /// <summary>
    /// $1 pid file, $2 port. Waits up to 10 s until the pid in the file listens on the port ("listening PID"),
    /// or has exited ("exited PID"); else prints "timeout PID".
    /// </summary>
    public const string WaitListening =
        "f=$1; port=$2; i=0; pid=; while [ \"$i\" -lt 100 ]; do pid=; [ -s \"$f\" ] && read -r pid < \"$f\"; " +
        "if [ -n \"$pid\" ]; then " +
        "if [ ! -r \"/proc/$pid/status\" ] || grep -q '^State:[[:space:]]*Z' \"/proc/$pid/status\" 2>/dev/null; then echo \"exited $pid\"; exit 0; fi; " +
        "if ss -ltnpH \"sport = :$port\" | grep -q \"pid=$pid,\"; then echo \"listening $pid\"; exit 0; fi; fi; " +
        "sleep 0.1; i=$((i+1)); done; echo \"timeout $pid\"";

    /// <summary>
    /// $1 pid (0: read it from the pid file), $2 pid file, $3 program, $4 grace seconds. Stops the server only if the pid still is that server:
    /// TERM, then (after the grace period) KILL of its children and itself. Prints notrunning, stopped or killed.
    /// </summary>
    public const string StopServer =
        "p=$1; f=$2; prog=$3; grace=$4; " + OursFunction +
        "if [ \"$p\" = 0 ] && [ -s \"$f\" ]; then read -r p < \"$f\"; fi; case $p in ''|*[!0-9]*) p=0;; esac; " +
        "if [ \"$p\" -le 0 ] || ! ours; then echo notrunning; exit 0; fi; " +
        "kill -TERM \"$p\" 2>/dev/null; i=0; n=$((grace * 10)); " +
        "while [ \"$i\" -lt \"$n\" ]; do ours || { echo stopped; exit 0; }; sleep 0.1; i=$((i+1)); done; " +
        "pkill -KILL -P \"$p\" 2>/dev/null; kill -KILL \"$p\" 2>/dev/null; " +
        "i=0; while [ \"$i\" -lt 50 ] && ours; do sleep 0.1; i=$((i+1)); done; " +
        "if ours; then echo alive; exit 1; fi; echo killed";

    /// <summary>Lists listening TCP sockets without a header: <c>ss -ltnH</c>.</summary>
    public static readonly string[] ListeningSockets = { "ss", "-ltnH" };
}
