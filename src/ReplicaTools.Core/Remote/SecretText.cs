using System.Runtime.InteropServices;
using System.Security;

namespace ReplicaTools.Core.Remote;

/// <summary>
/// The one place a SecureString (SSH passwords and key passphrases, DRBD shared secrets) becomes text: only to be handed
/// to the library or written to standard input that needs it, never into arguments, messages or logs.
/// </summary>
internal static class SecretText
{
    public static string Reveal(SecureString secret)
    {
        var pointer = Marshal.SecureStringToGlobalAllocUnicode(secret);
        try
        {
            return Marshal.PtrToStringUni(pointer, secret.Length);
        }
        finally
        {
            Marshal.ZeroFreeGlobalAllocUnicode(pointer);
        }
    }
}
