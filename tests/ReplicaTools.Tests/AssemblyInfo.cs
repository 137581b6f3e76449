[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

// The integration tests share one machine's daemons (rpcbind, libvirtd, loop devices) and two cores:
// run test classes one after another so they never race each other or starve a timeout.
[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)]
