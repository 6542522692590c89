package app

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// arbiterModule and franzGoModule are the modules whose versions 'version'
// reports.
const (
	arbiterModule = "github.com/arbiter-cqrs/arbiter"
	franzGoModule = "github.com/twmb/franz-go"
)

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the versions of this binary, Arbiter, Go and franz-go",
		Args:  cobra.NoArgs,
		RunE: c.run(func(_ context.Context, _ []string) error {
			info, ok := debug.ReadBuildInfo()
			if !ok {
				info = &debug.BuildInfo{GoVersion: runtime.Version()}
			}
			writeVersion(c.stdout, info)
			return nil
		}),
	}
}

// writeVersion prints the main module (the binary's own, which is Arbiter's
// for the arbiter binary), Arbiter's module version, the VCS revision the
// binary was built from, and the Go and franz-go versions.
func writeVersion(w io.Writer, info *debug.BuildInfo) {
	arbiter, franzGo := "unknown", "unknown"
	if info.Main.Path == arbiterModule {
		arbiter = info.Main.Version
	}
	for _, dep := range info.Deps {
		module := dep
		if dep.Replace != nil {
			module = dep.Replace
		}
		switch dep.Path {
		case arbiterModule:
			arbiter = module.Version
			if dep.Replace != nil && module.Version == "" {
				arbiter = "(replaced by " + module.Path + ")"
			}
		case franzGoModule:
			franzGo = module.Version
		}
	}
	settings := make(map[string]string)
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	revision := settings["vcs.revision"]
	switch {
	case revision == "":
		revision = "unknown (built without VCS stamping)"
	case settings["vcs.modified"] == "true":
		revision += " (modified)"
	}
	if t := settings["vcs.time"]; t != "" {
		revision += " " + t
	}
	mainModule := info.Main.Path
	if mainModule == "" {
		mainModule = "unknown"
	}
	faults := "no"
	if FaultInjection {
		faults = "yes (built with -tags arbiter_faults; not for production)"
	}
	fmt.Fprintf(w, "arbiter:    %s\n", arbiter)
	fmt.Fprintf(w, "binary:     %s %s (module %s)\n", info.Path, info.Main.Version, mainModule)
	fmt.Fprintf(w, "revision:   %s\n", revision)
	fmt.Fprintf(w, "go:         %s\n", info.GoVersion)
	fmt.Fprintf(w, "franz-go:   %s\n", franzGo)
	fmt.Fprintf(w, "test hooks: %s\n", faults)
}
