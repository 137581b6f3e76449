namespace ReplicaTools.Core.Storage;

/// <summary>Error ids the storage cmdlets report (the FullyQualifiedErrorId prefix).</summary>
public static class StorageErrorIds
{
    public const string ImageExists = "ImageExists";
    public const string ImageNotFound = "ImageNotFound";
    public const string ImageInUse = "ImageInUse";
    public const string ImageLockProbeFailed = "ImageLockProbeFailed";
    public const string NotAnImageFile = "NotAnImageFile";
    public const string ImageOpenFailed = "ImageOpenFailed";
    public const string DirectoryNotFound = "DirectoryNotFound";
    public const string NoCowNotSet = "NoCowNotSet";
    public const string NfsServerUnreachable = "NfsServerUnreachable";
    public const string NfsServerNotResponding = "NfsServerNotResponding";
    public const string NfsRemoveUnsupported = "NfsRemoveUnsupported";
    public const string CompareFailed = "CompareFailed";
    public const string NbdExportFailed = "NbdExportFailed";
    public const string NotBtrfs = "NotBtrfs";
    public const string StoreExists = "StoreExists";
    public const string StoreNotFound = "StoreNotFound";
    public const string CheckpointExists = "CheckpointExists";
    public const string CheckpointNotFound = "CheckpointNotFound";
    public const string NotACheckpoint = "NotACheckpoint";
}
