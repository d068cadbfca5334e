package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The quorum round of a linearizable read (invariant I2, step b).
//
// hashicorp/raft's VerifyLeader is not used: it counts every successful
// answer that reaches a follower's replication goroutine after the verify
// registered, whatever the answer replies to (raft v1.7.3 replication.go:
// heartbeat, replicateTo via updateLastAppended and pipelineDecode all call
// notifyAll). An answer to a heartbeat or append sent before the read index
// was taken says nothing about leadership after it: when the leader is
// paused (SIGSTOP) or its followers' answers are delayed past an election,
// the answers given in the old term arrive after the followers elected a new
// leader that acknowledged writes, and the old leader's VerifyLeader succeeds
// on them (TestVerifyIgnoresAnswersSentBeforeIt). Coalesced heartbeats
// (beats.go) change nothing there: a heartbeat call waits for the answer to
// its own request, however late, and raft counts it.
//
// So the round sends heartbeats of its own, after the read index was taken,
// to every voter of the latest configuration, through the coalesced heartbeat
// connection (urgent: no linger). Each answer on that connection is matched
// to its request, so only answers to these heartbeats count. A follower
// answers Success to a heartbeat of term T only while its own term is at
// most T; with a quorum of such answers (this leader included), at the
// moment the read index was taken no majority had moved past T, so no leader
// of a later term had committed anything, and every write acknowledged
// before the read is covered by the read index (in T, by this leader's own
// commit index; before T, by its no-op of T). A follower handles the
// heartbeat exactly as raft's own (the same handler), so it changes nothing
// on a follower that raft's heartbeats of term T would not.

// verifier coalesces concurrent rounds: readers that arrive while a round is
// in flight share the next one. A reader joins a round that starts after it
// took its read index, which is what ReadIndex needs.
type verifier struct {
	mu      sync.Mutex
	waiting []chan roundResult
	running bool
}

// roundResult is a round's outcome and the term it confirmed.
type roundResult struct {
	term uint64
	err  error
}

// verify runs round (or joins the next run) and returns the term it
// confirmed leadership in. round must be safe to call repeatedly.
func (v *verifier) verify(ctx context.Context, round func() (uint64, error)) (uint64, error) {
	ch := make(chan roundResult, 1)
	v.mu.Lock()
	v.waiting = append(v.waiting, ch)
	if !v.running {
		v.running = true
		go v.loop(round)
	}
	v.mu.Unlock()
	select {
	case res := <-ch:
		return res.term, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (v *verifier) loop(round func() (uint64, error)) {
	for {
		v.mu.Lock()
		batch := v.waiting
		v.waiting = nil
		if len(batch) == 0 {
			v.running = false
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
		term, err := round()
		for _, ch := range batch {
			ch <- roundResult{term: term, err: err}
		}
	}
}

// errNoQuorum: too few voters confirmed leadership in the round.
var errNoQuorum = errors.New("a quorum did not confirm leadership")

// roundPoll is how often a round checks that raft still leads in its term.
const roundPoll = 20 * time.Millisecond

// leadershipRound confirms that this replica leads in raft's current term
// with a quorum of answers to fresh heartbeats, and returns that term.
// raft.ErrLeadershipLost when a voter is in a later term or raft stepped
// down meanwhile; errNoQuorum when too many voters failed to answer.
func (r *Replica) leadershipRound() (uint64, error) {
	term := r.g.raft.CurrentTerm()
	if r.g.raft.State() != raft.Leader {
		return term, raft.ErrNotLeader
	}
	cf := r.g.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return term, err
	}
	self := raft.ServerID(r.nodeID)
	var peers []raft.Server
	acks, voters := 0, 0
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID == self {
			acks++
		} else {
			peers = append(peers, s)
		}
	}
	need := voters/2 + 1
	if acks >= need {
		return term, nil
	}
	t := r.g.transport
	local := t.LocalAddr()
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(self), Addr: t.EncodePeer(self, local)},
		Term:      term,
		//lint:ignore SA1019 raft still sends and reads it, as raft's own heartbeat does
		Leader: t.EncodePeer(self, local),
	}
	answers := make(chan error, len(peers)) // nil: success in term
	for _, p := range peers {
		go func() {
			resp, err := t.heartbeat(p.Address, req)
			switch {
			case err != nil:
				answers <- err
			case resp.Term > term:
				answers <- fmt.Errorf("%s is in term %d: %w", p.ID, resp.Term, raft.ErrLeadershipLost)
			case !resp.Success:
				answers <- fmt.Errorf("%s refused a heartbeat of term %d", p.ID, term)
			default:
				answers <- nil
			}
		}()
	}
	poll := time.NewTicker(roundPoll)
	defer poll.Stop()
	deadline := time.NewTimer(r.applyTimeout)
	defer deadline.Stop()
	var failed []error
	for acks < need {
		if acks+len(peers)-len(failed) < need {
			return term, fmt.Errorf("%w in term %d: %w", errNoQuorum, term, errors.Join(failed...))
		}
		select {
		case err := <-answers:
			if errors.Is(err, raft.ErrLeadershipLost) {
				return term, err
			}
			if err != nil {
				failed = append(failed, err)
				continue
			}
			acks++
		case <-poll.C:
			if r.g.raft.State() != raft.Leader || r.g.raft.CurrentTerm() != term {
				return term, raft.ErrLeadershipLost
			}
		case <-deadline.C:
			return term, fmt.Errorf("%w in term %d within %v", errNoQuorum, term, r.applyTimeout)
		case <-r.stop:
			return term, ErrClosed
		}
	}
	return term, nil
}

// heartbeat sends one heartbeat of this group to target now (no linger) and
// returns the answer to that heartbeat, and to no other.
func (t *GroupTransport) heartbeat(target raft.ServerAddress, req *raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
	return t.layer.mux.beats.call(string(target), t.layer.group, req, true, t.timeout)
}
