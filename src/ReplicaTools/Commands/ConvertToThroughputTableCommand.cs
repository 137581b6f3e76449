using System.Management.Automation;
using ReplicaTools.Core.Bench;

namespace ReplicaTools.Commands;

/// <summary>Pivots Measure-DiskThroughput's samples into the seed's table: one row per target, a column per block size and operation.</summary>
[Cmdlet(VerbsData.ConvertTo, "ThroughputTable")]
[OutputType(typeof(ThroughputTableRow), typeof(string))]
public sealed class ConvertToThroughputTableCommand : ReplicaCmdlet
{
    private readonly List<ThroughputSample> samples = new();

    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    [AllowEmptyCollection]
    public ThroughputSample[] InputObject { get; set; } = Array.Empty<ThroughputSample>();

    /// <summary>Emit the table as Markdown text in the seed's layout instead of row objects.</summary>
    [Parameter]
    public SwitchParameter Markdown { get; set; }

    protected override void ProcessRecord() => samples.AddRange(InputObject.Where(s => s is not null));

    protected override void EndProcessing()
    {
        var rows = ThroughputTable.Build(samples);
        if (Markdown)
        {
            WriteObject(ThroughputTable.ToMarkdown(rows).TrimEnd());
        }
        else
        {
            WriteObject(rows, enumerateCollection: true);
        }
    }
}
