using ReplicaTools.Core;
using ReplicaTools.Core.Nbd;
using ReplicaTools.Core.Remote;

namespace ReplicaTools.Tests.Nbd;

/// <summary>Parsers, builders and validation of the NBD code (no daemons).</summary>
public sealed class NbdParsingTests
{
    // nbdinfo 1.14.2 --json against qemu-nbd 7.2 -r -B p0, verbatim.
    private const string QemuNbdJson = """
        {
        "protocol": "newstyle-fixed",
        "TLS": false,
        "structured": true,
        "exports": [
        	{
        	"export-name": "disk",
        	"content": "data",
        	"uri": "nbd://127.0.0.1:55647/disk",
        	"contexts": [
        		"base:allocation",
        		"qemu:dirty-bitmap:p0"
        	],
        	"is_rotational": false,
        	"is_read_only": true,
        	"can_cache": true,
        	"can_df": true,
        	"can_fast_zero": false,
        	"can_flush": true,
        	"can_fua": true,
        	"can_multi_conn": true,
        	"can_trim": false,
        	"can_zero": false,
        	"block_size_minimum": 1,
        	"block_size_preferred": 4096,
        	"block_size_maximum": 33554432,
        	"export-size": 268435456,
        	"export-size-str": "256M"
        	} ]
        }
        """;

    // nbd-server 3.24 answers the info request with size 0 and no structured replies.
    private const string NbdServerJson = """
        {
        "protocol": "newstyle-fixed",
        "TLS": false,
        "structured": false,
        "exports": [
        	{
        	"export-name": "big",
        	"content": "empty",
        	"is_read_only": true,
        	"can_multi_conn": true,
        	"can_flush": false,
        	"export-size": 0,
        	"export-size-str": "0"
        	} ]
        }
        """;

    [Fact]
    public void NbdInfoJson_FromQemuNbd_GivesSizeContextsAndFlags()
    {
        var info = NbdInfo.Parse(QemuNbdJson, "nbd://127.0.0.1:55647/disk");

        Assert.Equal("disk", info.ExportName);
        Assert.Equal(268435456, info.Size);
        Assert.Equal(new[] { "base:allocation", "qemu:dirty-bitmap:p0" }, info.Contexts);
        Assert.True(info.HasDirtyBitmap("p0"));
        Assert.True(info.HasDirtyBitmap("qemu:dirty-bitmap:p0"));
        Assert.False(info.HasDirtyBitmap("p1"));
        Assert.True(info.IsReadOnly);
        Assert.True(info.CanMultiConn);
        Assert.True(info.Structured);
        Assert.Equal(4096, info.PreferredBlockSize);
        Assert.Equal(33554432, info.MaximumBlockSize);
    }

    [Fact]
    public void NbdInfoJson_FromNbdServer_ReportsSizeZero_WhichGetAsyncReplacesWithNbdinfoSize()
    {
        var info = NbdInfo.Parse(NbdServerJson, "nbd://127.0.0.1:1/big");
        Assert.Equal(0, info.Size);
        Assert.False(info.Structured);
        Assert.Empty(info.Contexts);
    }

    [Fact]
    public void NbdInfoJson_Garbage_IsAnInvalidDataError()
    {
        var error = Assert.Throws<ReplicaException>(() => NbdInfo.Parse("{\"exports\": []}", "nbd://x/y"));
        Assert.Equal("NbdInfoUnreadable", error.ErrorId);
        Assert.Contains("nbd://x/y", error.Message);
    }

    [Fact]
    public void MapTotals_SplitDataFromHolesAndZeros()
    {
        var allocation = NbdInfo.ParseTotals("""
            [
            { "size": 67108864, "percent": 25, "type": 0, "description": "data" },
            { "size": 201326592, "percent": 75, "type": 3, "description": "hole,zero" },
            { "size": 4096, "percent": 0, "type": 2, "description": "zero" }
            ]
            """);
        Assert.Equal(67108864, allocation.DataBytes);
        Assert.Equal(201326592 + 4096, allocation.ZeroBytes);
    }

    [Fact]
    public void SsOutput_GivesEveryListeningPort_WhateverTheAddressForm()
    {
        var ports = ListeningPorts.ParseSs("""
            LISTEN 0      4096       127.0.0.1:55647      0.0.0.0:*
            LISTEN 0      128          0.0.0.0:2024       0.0.0.0:*
            LISTEN 0      128             [::]:22            [::]:*
            LISTEN 0      5                  *:10809            *:*
            LISTEN 0      5      10.0.0.1%eth0:8080       0.0.0.0:*    users:(("x",pid=1,fd=3))
            garbage
            """);
        Assert.Equal(new[] { 22, 2024, 8080, 10809, 55647 }, ports.Order());
    }

    [Theory]
    [InlineData("/srv/plain.raw", "/srv/plain.raw")]
    [InlineData("/srv/back\\slash", "/srv/back\\\\slash")]
    [InlineData("/srv/new\nline", "/srv/new\\nline")]
    [InlineData(" lead and trail ", "\\slead and trail\\s")]
    [InlineData("/srv/%s [x]=y;#c", "/srv/%s [x]=y;#c")]
    public void KeyFileEscape_KeepsPathsLiteral(string value, string expected) =>
        Assert.Equal(expected, NbdServerConfig.Escape(value));

    [Fact]
    public void NbdServerConfig_TakesPathsLiterally_AndOffersFlushOnlyWhenWritable()
    {
        var readOnly = NbdServerConfig.Build("vm1", "/srv/vm1.raw", readOnly: true, "127.0.0.1", 10809);
        Assert.Contains("[generic]\nlistenaddr = 127.0.0.1\nport = 10809\n", readOnly);
        Assert.Contains("[vm1]\nexportname = /srv/vm1.raw\nreadonly = true\nvirtstyle = none\n", readOnly);
        Assert.DoesNotContain("maxconnections", readOnly); // nbd-server 3.24 counts it over its whole life
        Assert.DoesNotContain("flush", readOnly);
        Assert.Contains("flush = true\nfua = true\n", NbdServerConfig.Build("vm1", "/srv/vm1.raw", readOnly: false, "::", 10809));
    }

    [Theory]
    [InlineData("127.0.0.1", 10809, "vm1", "nbd://127.0.0.1:10809/vm1")]
    [InlineData("::1", 10810, "vm1", "nbd://[::1]:10810/vm1")]
    [InlineData("10.0.0.5", 1, "a.b_c-d", "nbd://10.0.0.5:1/a.b_c-d")]
    public void Uri_IsNbdSchemeWithBracketedIpv6(string address, int port, string name, string expected) =>
        Assert.Equal(expected, NbdUri.Build(address, port, name));

    [Theory]
    [InlineData("/srv/vdis/vm1.qcow2", "vm1")]
    [InlineData("/dev/vg0/vm 2 root", "vm-2-root")]
    [InlineData("/srv/.hidden", "hidden")]
    [InlineData("/srv/\u00fcn\u00efcode.raw", "n-code")]
    [InlineData("/srv/...raw", "export")]
    public void DefaultName_ComesFromTheFileName_AndIsValid(string path, string expected)
    {
        var name = NbdExportRequest.DefaultNameFor(path);
        Assert.Equal(expected, name);
        new NbdExportRequest { Name = name, Path = path }.Validate("h");
    }

    public static IEnumerable<object[]> InvalidRequests => new[]
    {
        new object[] { new NbdExportRequest { Name = "bad name", Path = "/x" }, "export name" },
        new object[] { new NbdExportRequest { Name = "-lead", Path = "/x" }, "export name" },
        new object[] { new NbdExportRequest { Name = "a]b", Path = "/x" }, "export name" },
        new object[] { new NbdExportRequest { Name = "ok", Path = "relative.raw" }, "not an absolute path" },
        new object[] { new NbdExportRequest { Name = "ok", Path = "/a\nb" }, "not an absolute path" },
        new object[] { new NbdExportRequest { Name = "ok", Path = "/x", ListenAddress = "localhost" }, "-ListenAddress" },
        new object[] { new NbdExportRequest { Name = "ok", Path = "/x", Port = 70000 }, "-Port" },
        new object[] { new NbdExportRequest { Name = "ok", Path = "/x", Format = "Q COW" }, "-Format" },
        new object[] { new NbdExportRequest { Name = "ok", Path = "/x", Server = NbdServerKind.NbdServer, Format = "qcow2" }, "Use -Server QemuNbd" },
        new object[] { new NbdExportRequest { Name = "ok", Path = "/x", Server = NbdServerKind.NbdServer, Bitmap = "b0" }, "cannot export a dirty bitmap" },
        new object[] { new NbdExportRequest { Name = "ok", Path = "/x", Bitmap = "" }, "-Bitmap" },
    };

    [Theory]
    [MemberData(nameof(InvalidRequests))]
    public void InvalidRequests_AreRefusedBeforeTouchingTheHost_NamingTheParameter(NbdExportRequest request, string expected)
    {
        var error = Assert.Throws<ReplicaException>(() => request.Validate("nfs1"));
        Assert.Equal("NbdExportInvalidArgument", error.ErrorId);
        Assert.Equal(ReplicaErrorCategory.InvalidArgument, error.Category);
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void TemporaryPath_IsAHiddenSiblingOfTheDestination()
    {
        var temporary = NbdCopier.TemporaryPathFor("/srv/copies/vm1.raw");
        Assert.Matches(@"^/srv/copies/\.vm1\.raw\.rt-partial-[0-9a-f]{8}$", temporary);
        Assert.Matches(@"^/\.top\.rt-partial-[0-9a-f]{8}$", NbdCopier.TemporaryPathFor("/top"));
        Assert.NotEqual(temporary, NbdCopier.TemporaryPathFor("/srv/copies/vm1.raw"));
    }

    [Fact]
    public void CopyCommands_AreExactArgumentLists()
    {
        var copier = new NbdCopier(LocalHost.Instance);
        Assert.Equal("nbdcopy -C 4 -T 4 --flush '--progress=1' -- nbd://10.0.0.5:10809/vm1 /srv/vm1.raw",
            copier.BuildNbdCopyCommand("nbd://10.0.0.5:10809/vm1", "/srv/vm1.raw", 4).CommandLine);
        Assert.Equal("qemu-img convert -p -f raw -O qcow2 nbd://10.0.0.5:10809/vm1 /srv/vm1.qcow2",
            NbdCopier.BuildQemuImgCommand("nbd://10.0.0.5:10809/vm1", "/srv/vm1.qcow2", "qcow2", destinationIsDevice: false).CommandLine);
        Assert.EndsWith(" -n nbd://h:1/d /dev/vg0/copy", NbdCopier.BuildQemuImgCommand("nbd://h:1/d", "/dev/vg0/copy", "raw", destinationIsDevice: true).CommandLine);

        var incremental = copier.BuildDirtyExtentCommand("nbd://h:1/d", "qemu:dirty-bitmap:b0", "/srv/vm1.raw");
        Assert.Equal(new[] { "/usr/bin/python3", "-c", DirtyExtentScript.Source, "nbd://h:1/d", "qemu:dirty-bitmap:b0", "/srv/vm1.raw" }, incremental.Arguments);
        Assert.True(SshHost.BuildRemoteCommandLine(incremental.Arguments, null).Length < PosixShell.MaxCommandLineBytes);
    }

    [Fact]
    public void DirtyBitmapContext_IsPrefixedOnce()
    {
        Assert.Equal("qemu:dirty-bitmap:b0", NbdContexts.DirtyBitmap("b0"));
        Assert.Equal("qemu:dirty-bitmap:b0", NbdContexts.DirtyBitmap("qemu:dirty-bitmap:b0"));
    }
}
