package node

import (
	"testing"
	"time"
)

// TestContactTimeout: the placement driver's contact bound is 1s with the
// default heartbeats (150ms apart), and spans five heartbeats of a group
// tuned slower (--raft-heartbeat 10s: one a second), the data shards' or
// the meta group's.
func TestContactTimeout(t *testing.T) {
	cfg := DefaultConfig()
	if got := contactTimeout(time.Second, cfg); got != time.Second {
		t.Errorf("default tuning: %v, want 1s", got)
	}
	cfg.Tuning.HeartbeatTimeout = 10 * time.Second
	if got := contactTimeout(time.Second, cfg); got != 5*time.Second {
		t.Errorf("data shards at 10s: %v, want 5s", got)
	}
	cfg = DefaultConfig()
	cfg.MetaTuning.HeartbeatTimeout = 4 * time.Second
	if got := contactTimeout(time.Second, cfg); got != 2*time.Second {
		t.Errorf("meta group at 4s: %v, want 2s", got)
	}
}
