package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/shard"
	"github.com/hashicorp/raft"
)

// fakeLeader is a led replica whose transfers to the nodes in dead fail, as
// a transfer to a node that stopped a moment ago does.
type fakeLeader struct {
	id      uint64
	members []shard.Member
	dead    map[string]bool
	busy    int // answers "leadership transfer in progress" this many times after a failed transfer

	mu    sync.Mutex
	tried []string
	to    string
}

func (f *fakeLeader) ID() uint64                       { return f.id }
func (f *fakeLeader) Members() ([]shard.Member, error) { return f.members, nil }
func (f *fakeLeader) TransferLeader(id, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tried = append(f.tried, id)
	if f.dead[id] {
		return errors.New("failed to make TimeoutNow RPC: EOF")
	}
	if len(f.tried) > 1 && f.busy > 0 {
		f.busy--
		return fmt.Errorf("transfer leadership: %w: %w", shard.ErrUnavailable, raft.ErrLeadershipTransferInProgress)
	}
	f.to = id
	return nil
}

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) log(msg string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprint(append([]any{msg}, args...)...))
	l.mu.Unlock()
}

// A node stopping right after another still sees it alive in gossip (the
// leave not yet heard): the handoff to it fails, and the leadership must go
// to the next live voter, with no warning for the routine failure
// (TestHealthyClusterLogsNoErrors failed on "leave: hand off shard
// leadership ... to=n1 err=... leadership transfer timeout" when n2 stopped
// just after n1, and the shard stayed on the stopping node).
func TestHandOffTriesTheNextLiveVoter(t *testing.T) {
	members := []shard.Member{{ID: "n3", Voter: true}, {ID: "n2", Voter: true}, {ID: "n1", Voter: true}, {ID: "n4"}}
	alive := map[string]bool{"n1": true, "n3": true, "n4": true}
	cases := []struct {
		name      string
		dead      map[string]bool
		busy      int
		wantTo    string
		wantTried []string
		moved     int
		warns     int
	}{
		{"first target alive", nil, 0, "n1", []string{"n1"}, 1, 0},
		{"first target stopped a moment ago", map[string]bool{"n1": true}, 0, "n3", []string{"n1", "n3"}, 1, 0},
		// raft still busy with the failed transfer when the next one is
		// asked (make test: "leave: hand off shard leadership ... to=n3
		// err=... leadership transfer in progress")
		{"raft still busy with the failed transfer", map[string]bool{"n1": true}, 2, "n3", []string{"n1", "n3", "n3", "n3"}, 1, 0},
		{"every target stopped", map[string]bool{"n1": true, "n3": true}, 0, "", []string{"n1", "n3"}, 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := &fakeLeader{id: 7, members: members, dead: tc.dead, busy: tc.busy}
			var info, warn logLines
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			moved := handOff(ctx, []leader{rep}, "n2", alive, info.log, warn.log)
			if moved != tc.moved || rep.to != tc.wantTo || fmt.Sprint(rep.tried) != fmt.Sprint(tc.wantTried) {
				t.Fatalf("moved %d to %q after trying %v, want %d to %q after %v",
					moved, rep.to, rep.tried, tc.moved, tc.wantTo, tc.wantTried)
			}
			if len(warn.lines) != tc.warns {
				t.Fatalf("warnings %q, want %d", warn.lines, tc.warns)
			}
			if len(info.lines) != len(tc.dead)-tc.warns {
				t.Fatalf("info lines %q, want one per routine failure", info.lines)
			}
		})
	}
}
