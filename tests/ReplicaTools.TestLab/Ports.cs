using System.Net;
using System.Net.Sockets;

namespace ReplicaTools.TestLab;

public static class Ports
{
    /// <summary>A currently free TCP port on <paramref name="address"/>. Callers retry if a daemon loses the race for it.</summary>
    public static int Free(string address)
    {
        var listener = new TcpListener(IPAddress.Parse(address), 0);
        listener.Start();
        try
        {
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }
        finally
        {
            listener.Stop();
        }
    }

    public static async Task<bool> WaitListeningAsync(string address, int port, TimeSpan timeout, Func<bool>? stillAlive = null)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (stillAlive is not null && !stillAlive())
            {
                return false;
            }

            using var client = new TcpClient();
            try
            {
                await client.ConnectAsync(IPAddress.Parse(address), port);
                return true;
            }
            catch (SocketException)
            {
                await Task.Delay(50);
            }
        }

        return false;
    }
}
