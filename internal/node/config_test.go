package node

import (
	"testing"
	"time"
)

// The configuration recipe (issue 11 item 6): DefaultConfig with an identity
// and addresses is valid; each bad setting is refused by Validate.
func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.ID, good.DataDir = "n1", t.TempDir()
	good.HTTPAddr, good.RaftAddr, good.GossipAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if err := good.Validate(); err != nil {
		t.Fatalf("default config with identity: %v", err)
	}
	bad := map[string]func(c *Config){
		"no id":                    func(c *Config) { c.ID = "" },
		"id with a slash":          func(c *Config) { c.ID = "a/b" },
		"no data dir":              func(c *Config) { c.DataDir = "" },
		"bad http address":         func(c *Config) { c.HTTPAddr = "nohost" },
		"negative bootstrap":       func(c *Config) { c.BootstrapExpect = -1 },
		"dead-after below 1s":      func(c *Config) { c.DeadAfter = time.Millisecond },
		"tiny split size":          func(c *Config) { c.SplitSize = 1 },
		"no replication":           func(c *Config) { c.Replication = 0 },
		"duplicate initial splits": func(c *Config) { c.InitialSplits = []string{"m", "m"} },
		"negative apply timeout":   func(c *Config) { c.ApplyTimeout = -time.Second },
		"bad tuning":               func(c *Config) { c.Tuning.MaxAppendEntries = 0 },
		"bad meta tuning":          func(c *Config) { c.MetaTuning.LogCacheSize = 0 },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			c := good
			mutate(&c)
			if c.Validate() == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}
