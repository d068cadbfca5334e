package api

import (
	"testing"
	"time"
)

// The configuration recipe (issue 11 item 6): DefaultConfig plus the
// backend is valid; a missing backend or a negative duration is refused.
func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Backend = notReadyBackend{t}
	if err := good.Validate(); err != nil {
		t.Fatalf("default config with a backend: %v", err)
	}
	bad := map[string]func(c *Config){
		"no backend":               func(c *Config) { c.Backend = nil },
		"negative dial timeout":    func(c *Config) { c.DialTimeout = -time.Second },
		"negative unreachable-for": func(c *Config) { c.UnreachableFor = -time.Second },
		"negative route wait":      func(c *Config) { c.RouteWait = -time.Second },
		"negative session wait":    func(c *Config) { c.SessionWait = -time.Second },
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
