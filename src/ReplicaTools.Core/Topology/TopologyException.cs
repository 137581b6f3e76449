namespace ReplicaTools.Core.Topology;

/// <summary>A topology file that cannot be used, with the place in the file that is wrong.</summary>
public sealed class TopologyException : ReplicaException
{
    public TopologyException(string filePath, long line, long column, string problem, Exception? inner = null)
        : base("TopologyInvalid", ReplicaErrorCategory.ParserError, $"{filePath}:{line}:{column}: {problem}", null, filePath, inner)
    {
        FilePath = filePath;
        Line = line;
        Column = column;
        Problem = problem;
        RecommendedAction = "Fix the topology file at that line and column; the README shows a complete example.";
    }

    public string FilePath { get; }

    public long Line { get; }

    public long Column { get; }

    public string Problem { get; }
}
