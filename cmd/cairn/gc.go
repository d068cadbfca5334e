package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/spf13/cobra"
)

// defaultGCPercent is the Go garbage collector's target (GOGC) a cairn
// server runs with unless told otherwise. A node's live heap is small (tens
// of MiB: the state is in bbolt's memory map, not the Go heap) while a
// loaded node allocates a hundred MiB a second or more, so Go's default of
// 100 collects several times a second: 6–10% of a node's CPU on the
// benchmarks. 200 halves the collections for a few tens of MiB of heap
// (txn/DESIGN.md, "Where the time goes").
const defaultGCPercent = 200

// gcUsage documents --gc-percent for cairn server and cairn dev.
const gcUsage = "Go garbage collector target, as GOGC (a collection when the heap grows this many percent " +
	"over the live heap; -1: off); GOGC in the environment, when set and this flag is not, wins"

// addGCFlag adds --gc-percent to cmd.
func addGCFlag(cmd *cobra.Command, v *int) {
	cmd.Flags().IntVar(v, "gc-percent", defaultGCPercent, gcUsage)
}

// gcPercent decides the GC target: the flag when given, else GOGC when the
// environment sets it (the runtime has applied it already: nothing to do),
// else defaultGCPercent.
func gcPercent(flagChanged bool, flag int, gogc string, gogcSet bool) (percent int, apply bool, err error) {
	if flagChanged {
		if flag < -1 {
			return 0, false, fmt.Errorf("--gc-percent %d: want -1 (off) or a percentage >= 0", flag)
		}
		return flag, true, nil
	}
	if gogcSet {
		if gogc == "off" {
			return -1, false, nil
		}
		n, err := strconv.Atoi(gogc)
		if err != nil {
			return 100, false, nil // the runtime ignores a GOGC it cannot read
		}
		return n, false, nil
	}
	return defaultGCPercent, true, nil
}

// applyGC sets the GC target for --gc-percent and returns it.
func applyGC(cmd *cobra.Command, flag int) (int, error) {
	gogc, set := os.LookupEnv("GOGC")
	p, apply, err := gcPercent(cmd.Flags().Changed("gc-percent"), flag, gogc, set)
	if err != nil {
		return 0, err
	}
	if apply {
		debug.SetGCPercent(p)
	}
	return p, nil
}
