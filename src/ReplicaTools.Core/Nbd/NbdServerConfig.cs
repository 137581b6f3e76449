using System.Globalization;
using System.Text;

namespace ReplicaTools.Core.Nbd;

/// <summary>Writes nbd-server configuration files (GLib key files) for one export.</summary>
public static class NbdServerConfig
{
    /// <summary>
    /// The configuration of one export. No <c>maxconnections</c>: nbd-server 3.24 counts it over the server's whole life
    /// (every connection ever accepted), so any cap would end the export after that many clients in total.
    /// </summary>
    public static string Build(string exportName, string path, bool readOnly, string listenAddress, int port)
    {
        var builder = new StringBuilder();
        builder.Append("# Written by ReplicaTools (New-NbdExport) for one export; Remove-NbdExport deletes it.\n");
        builder.Append("[generic]\n");
        builder.Append("listenaddr = ").Append(Escape(listenAddress)).Append('\n');
        builder.Append("port = ").Append(port.ToString(CultureInfo.InvariantCulture)).Append('\n');
        builder.Append("allowlist = true\n");
        builder.Append('[').Append(exportName).Append("]\n");
        builder.Append("exportname = ").Append(Escape(path)).Append('\n');
        builder.Append("readonly = ").Append(readOnly ? "true" : "false").Append('\n');

        // The default virtstyle (ipliteral) substitutes %s in the path with the client's address: take paths literally.
        builder.Append("virtstyle = none\n");
        if (!readOnly)
        {
            builder.Append("flush = true\n");
            builder.Append("fua = true\n");
        }

        return builder.ToString();
    }

    /// <summary>Escapes a key file value so GLib reads back exactly <paramref name="value"/> (backslashes, newlines, leading and trailing blanks).</summary>
    public static string Escape(string value)
    {
        var builder = new StringBuilder(value.Length + 8);
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            switch (c)
            {
                case '\\': builder.Append("\\\\"); break;
                case '\n': builder.Append("\\n"); break;
                case '\r': builder.Append("\\r"); break;
                case '\t': builder.Append("\\t"); break;
                case ' ' when i == 0 || i == value.Length - 1: builder.Append("\\s"); break;
                default: builder.Append(c); break;
            }
        }

        return builder.ToString();
    }
}
