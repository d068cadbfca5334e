package main

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/internal/cli"
)

// TestGCPercent: --gc-percent when given; else GOGC when the environment
// sets it (left as the runtime applied it); else 200.
func TestGCPercent(t *testing.T) {
	for _, c := range []struct {
		name         string
		changed      bool
		flag         int
		gogc         string
		gogcSet      bool
		want         int
		apply, isErr bool
	}{
		{"default", false, defaultGCPercent, "", false, 200, true, false},
		{"flag", true, 400, "", false, 400, true, false},
		{"flag off", true, -1, "", false, -1, true, false},
		{"flag wins over GOGC", true, 50, "300", true, 50, true, false},
		{"GOGC", false, defaultGCPercent, "300", true, 300, false, false},
		{"GOGC off", false, defaultGCPercent, "off", true, -1, false, false},
		{"GOGC unreadable", false, defaultGCPercent, "lots", true, 100, false, false},
		{"below -1", true, -2, "", false, 0, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, apply, err := gcPercent(c.changed, c.flag, c.gogc, c.gogcSet)
			if (err != nil) != c.isErr || got != c.want || apply != c.apply {
				t.Fatalf("gcPercent = %d, apply %v, err %v; want %d, %v, error %v", got, apply, err, c.want, c.apply, c.isErr)
			}
		})
	}
}

// TestServerGCPercentFlag: a server started with a bad --gc-percent exits 2
// naming the flag, before it opens anything; a good one sets the runtime's
// target.
func TestServerGCPercentFlag(t *testing.T) {
	_, errOut, code := runCommand(func(*cli.GlobalOptions) *cobra.Command { return newServerCmd() }, "server", "--id", "n1", "--data-dir", t.TempDir(),
		"--bootstrap-expect", "1", "--gc-percent", "-7")
	if code != 2 || !strings.Contains(errOut, "--gc-percent -7") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	cmd := newServerCmd()
	if err := cmd.Flags().Parse([]string{"--gc-percent", "321"}); err != nil {
		t.Fatal(err)
	}
	if p, err := applyGC(cmd, 321); err != nil || p != 321 || debug.SetGCPercent(100) != 321 {
		t.Fatalf("applyGC: %d %v", p, err)
	}
}
