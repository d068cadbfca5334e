package shard

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

// raft.QuorumContact must not count late answers. A review of 91dd0db found
// it stamped a follower's contact with the time its answer arrived
// (followerReplication.setLastContact on receipt), not the time the
// answered request was sent. An answer given in term T that
// is held in flight (a SIGSTOPped leader's socket buffers, a slow link)
// arrives after the followers elected a later leader and acknowledged writes,
// and makes QuorumContact "now": the leader serves a stale read whose data
// is far older than max_staleness. Same setup as
// TestVerifyIgnoresAnswersSentBeforeIt (A's long lease stands in for a
// paused process or a stalled main goroutine). It failed on 91dd0db:
// "BUG: A (term 3) served a stale read with max_staleness 1s at applied
// index 6 (k=v0) although k=v1 was acknowledged in term 4 2.353s ago;
// QuorumContact said 369ms ago, from answers sent before the cut 3.201s
// ago". A contact is now stamped with the answered request's send time.
func TestStaleReadIgnoresLateAnswersOfOldTerm(t *testing.T) {
	c, delays, reps := startPausableLeaderCluster(t)
	put(t, reps[0], "k", "v0")
	term := reps[0].Raft().CurrentTerm()
	const maxStaleness = time.Second
	if _, err := reps[0].StaleRead(maxStaleness); err != nil {
		t.Fatalf("stale read on a healthy leader: %v", err)
	}

	const answerDelay = 3 * time.Second
	a, b, cc := c.nodes[0].addr, c.nodes[1].addr, c.nodes[2].addr
	delays.set(b, a, answerDelay) // B's and C's answers to A from now on arrive late
	delays.set(cc, a, answerDelay)
	time.Sleep(300 * time.Millisecond) // answers of term T on their way
	cut := time.Now()
	delays.set(a, b, 2*answerDelay) // A no longer reaches B and C (until after the read)
	delays.set(a, cc, 2*answerDelay)
	delays.set(b, a, 2*answerDelay) // nor the new term's messages A
	delays.set(cc, a, 2*answerDelay)

	newLeader := -1
	readWaitFor(t, 2*time.Second, "a leader of a later term among B and C", func() error {
		for _, i := range []int{1, 2} {
			if reps[i].IsLeader() && reps[i].Raft().CurrentTerm() > term {
				newLeader = i
				return nil
			}
		}
		return errors.New("not yet")
	})
	put(t, reps[newLeader], "k", "v1")
	acked := time.Now()
	if time.Since(cut) > answerDelay-500*time.Millisecond {
		t.Skipf("the new term took %v: too slow for the setup", time.Since(cut))
	}
	// The answers B and C gave A in term T (written 0-300ms before the cut,
	// each delayed answerDelay) have now arrived.
	time.Sleep(time.Until(cut.Add(answerDelay + 200*time.Millisecond)))
	if !reps[0].IsLeader() || reps[0].Raft().CurrentTerm() != term {
		t.Fatalf("A left term %d: the setup did not hold", term)
	}
	if time.Since(acked) <= maxStaleness {
		t.Skipf("v1 acknowledged only %v ago: the setup needs it older than max_staleness", time.Since(acked))
	}
	qc := reps[0].Raft().QuorumContact()
	idx, err := reps[0].StaleRead(maxStaleness)
	if err == nil {
		t.Fatalf("BUG: A (term %d) served a stale read with max_staleness %v at applied index %d (k=%s) although "+
			"k=v1 was acknowledged in term %d %v ago; QuorumContact said %v ago, from answers sent before the cut %v ago",
			term, maxStaleness, idx, value(t, reps[0], "k"), reps[newLeader].Raft().CurrentTerm(),
			time.Since(acked).Round(time.Millisecond), time.Since(qc).Round(time.Millisecond),
			time.Since(cut).Round(time.Millisecond))
	}
	t.Logf("A refused: %v", err)
}

// TestPeerContacts (third_party/raft PeerContacts, which the placement
// driver reads through placement.DriverConfig.ContactAges): a leader hears
// from both followers every heartbeat; once one is cut off (its answers and
// the leader's requests delayed 5s), its contact ages while the other's
// stays fresh. A follower has no view.
func TestPeerContacts(t *testing.T) {
	c, delays, reps := startPausableLeaderCluster(t)
	put(t, reps[0], "k", "v")
	ages := func() map[string]time.Duration { return contactAges(reps[0]) }
	b, cc := c.nodes[1], c.nodes[2]
	if a := ages(); len(a) != 2 || a[b.id] > time.Second || a[cc.id] > time.Second {
		t.Fatalf("healthy followers' contact ages %v", a)
	}
	if pc := reps[1].Raft().PeerContacts(); pc != nil {
		t.Fatalf("a follower's PeerContacts %v, want nil", pc)
	}
	delays.set(c.nodes[0].addr, cc.addr, 5*time.Second)
	delays.set(cc.addr, c.nodes[0].addr, 5*time.Second)
	time.Sleep(1500 * time.Millisecond)
	if a := ages(); a[cc.id] < time.Second || a[b.id] > time.Second {
		t.Fatalf("contact ages %v 1.5s after %s was cut off", a, cc.id)
	}
}

// TestPeerContactsNonvoter: a leader's PeerContacts covers its non-voters
// too. Every node is in the meta group, most as non-voters beyond the
// first few, and the placement driver's only fast signal that a node was
// cut off is the contact of the groups its own node leads
// (placement.DriverConfig.ContactAges): a non-voter left out said nothing,
// so in a larger cluster a node that voted in no group led there could be
// chosen as a target in the first second of its cut. It failed so before
// the non-voters were in the view: "timed out after 5s waiting for every
// follower heard from: contact ages map[n2:12.070782ms n3:46.166763ms]: want
// n4, the non-voter, listed".
func TestPeerContactsNonvoter(t *testing.T) {
	delays := &linkDelays{d: map[[2]string]time.Duration{}}
	c := startReadCluster(t, 4, nil, &TransportKnobs{Delay: delays.delay})
	clearDelaysAtCleanup(t, c, delays)
	servers := c.servers()
	servers[3].Suffrage = raft.Nonvoter
	var reps []*Replica
	for _, n := range c.nodes {
		r, err := n.host.OpenReplica(fsm.Range{ID: 1, Epoch: 1}, servers)
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, r)
	}
	c.transferLeader(reps, 0)
	readWaitFor(t, 10*time.Second, "node 0 ready", func() error { _, err := linearizable(reps[0], time.Second); return err })
	put(t, reps[0], "k", "v")
	ages := func() map[string]time.Duration { return contactAges(reps[0]) }
	nv := c.nodes[3]
	readWaitFor(t, 5*time.Second, "every follower heard from", func() error {
		a := ages()
		if _, ok := a[nv.id]; !ok {
			return fmt.Errorf("contact ages %v: want %s, the non-voter, listed", a, nv.id)
		}
		for id, age := range a {
			if age > time.Second {
				return fmt.Errorf("%s last answered %v ago", id, age)
			}
		}
		return nil
	})
	delays.set(c.nodes[0].addr, nv.addr, 5*time.Second)
	delays.set(nv.addr, c.nodes[0].addr, 5*time.Second)
	time.Sleep(1500 * time.Millisecond)
	if a := ages(); a[nv.id] < time.Second || a[c.nodes[1].id] > time.Second || a[c.nodes[2].id] > time.Second {
		t.Fatalf("contact ages %v 1.5s after the non-voter %s was cut off", a, nv.id)
	}
}

// contactAges is r's PeerContacts as ages, by server id.
func contactAges(r *Replica) map[string]time.Duration {
	out := map[string]time.Duration{}
	for id, at := range r.Raft().PeerContacts() {
		out[string(id)] = time.Since(at)
	}
	return out
}
