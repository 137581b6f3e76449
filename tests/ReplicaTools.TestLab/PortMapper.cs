using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace ReplicaTools.TestLab;

/// <summary>
/// A minimal PMAP v2 client for the local rpcbind (UDP 127.0.0.1:111). rpcbind holds one registration per (program,
/// version) for the whole machine; a ganesha stopped with SIGTERM anywhere removes NFS and MOUNT for every instance.
/// <see cref="EnsureNfsRegistered"/> puts them back (from a reserved port, as rpcbind requires for SET).
/// </summary>
public static class PortMapper
{
    private const uint PmapProgram = 100000;
    private const uint NfsProgram = 100003;
    private const uint MountProgram = 100005;
    private const uint Tcp = 6;

    /// <summary>The port registered for (program, version, TCP), or 0.</summary>
    public static int GetPort(uint program, uint version) => (int)Call(3, program, version, 0);

    /// <summary>Re-registers NFS v3/v4 and MOUNT v1/v3 over TCP at the lab's fixed ports where they are missing; returns true if it had to.</summary>
    public static bool EnsureNfsRegistered(int nfsPort = NfsLab.NfsPort, int mountPort = NfsLab.MountPort)
    {
        var changed = false;
        foreach (var (program, version, port) in new[] { (NfsProgram, 3u, nfsPort), (NfsProgram, 4u, nfsPort), (MountProgram, 1u, mountPort), (MountProgram, 3u, mountPort) })
        {
            if (GetPort(program, version) == 0)
            {
                Call(1, program, version, (uint)port, reservedPort: true);
                changed = true;
            }
        }

        return changed;
    }

    private static uint Call(uint procedure, uint program, uint version, uint port, bool reservedPort = false)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        if (reservedPort)
        {
            BindReserved(socket);
        }

        socket.ReceiveTimeout = 3000;
        var xid = (uint)Random.Shared.Next();
        var request = new byte[56];
        uint[] words = { xid, 0, 2, PmapProgram, 2, procedure, 0, 0, 0, 0, program, version, Tcp, port };
        for (var i = 0; i < words.Length; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(request.AsSpan(i * 4), words[i]);
        }

        socket.SendTo(request, new IPEndPoint(IPAddress.Loopback, 111));
        var reply = new byte[512];
        var length = socket.Receive(reply);

        // xid, REPLY(1), MSG_ACCEPTED(0), verifier (flavor, length 0), SUCCESS(0), result.
        if (length < 28 || BinaryPrimitives.ReadUInt32BigEndian(reply) != xid || BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(8)) != 0 || BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(20)) != 0)
        {
            throw new InvalidOperationException($"rpcbind rejected PMAP procedure {procedure} for program {program} v{version}.");
        }

        return BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(24));
    }

    private static void BindReserved(Socket socket)
    {
        for (var attempt = 0; attempt < 50; attempt++)
        {
            try
            {
                socket.Bind(new IPEndPoint(IPAddress.Loopback, Random.Shared.Next(600, 1024)));
                return;
            }
            catch (SocketException)
            {
            }
        }

        throw new InvalidOperationException("No free reserved UDP port to talk to rpcbind from.");
    }
}
