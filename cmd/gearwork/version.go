package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// versionInfo is what "gearwork --version" reports.
type versionInfo struct {
	// Version is the module version the binary was built from (go install
	// ...@v1.2.3 or a pseudo-version), else the source tree's version.
	Version string
	// Commit is the VCS revision ("-dirty" with uncommitted changes), or
	// "unknown" when the build recorded none.
	Commit string
	// Go is the Go version the binary was built with.
	Go string
}

func (v versionInfo) String() string {
	return fmt.Sprintf("gearwork %s (commit %s, %s %s/%s)", v.Version, v.Commit, v.Go, runtime.GOOS, runtime.GOARCH)
}

// buildVersion reads the version, commit and Go version from the build
// information the Go toolchain embeds in the binary.
func buildVersion() versionInfo {
	bi, _ := debug.ReadBuildInfo()
	return versionFrom(bi)
}

// versionFrom is buildVersion's reading of bi (nil: none recorded).
func versionFrom(bi *debug.BuildInfo) versionInfo {
	v := versionInfo{Version: version, Commit: "unknown", Go: runtime.Version()}
	if bi == nil {
		return v
	}
	v.Go = bi.GoVersion
	if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
		v.Version = mv
		// A pseudo-version ends in the commit: v0.0.0-20260102150405-abcdef123456.
		if i := strings.LastIndexByte(mv, '-'); i >= 0 && len(mv)-i-1 >= 12 {
			v.Commit = strings.TrimSuffix(mv[i+1:], "+dirty")
		}
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && v.Commit != "unknown" {
		v.Commit += "-dirty"
	}
	return v
}
