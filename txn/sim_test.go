package txn

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cairndb/cairn/test/txncheck"
)

// The protocol, executed: shards are in-memory maps changed only by atomic
// "raft commands" built from this package's pure functions (PrepareDecision,
// NextRecord, ResolveIntent, Probe); coordinators run Plan; recovery agents
// meet intents and push, probe and recover as txn/DESIGN.md says. A random
// scheduler interleaves every command, answers are lost, coordinators crash
// at any step and the clock jumps. Then everything left is cleaned up by
// recovery alone, and the test checks Invariant I8: every transaction is
// applied on all its keys or on none, agreeing with its record, no intent
// is left, and a client told "committed" (or "aborted") was told the truth.
// Scenario S14 at the level of the pure core.

type simShard struct {
	data       map[string][]string // key -> ids of the transactions whose write was applied, in order
	intents    map[string][]Intent
	records    map[string]*Record
	tombstones map[string]bool
}

// simKnobs break the protocol on purpose: the negative controls of the
// simulation's checks.
type simKnobs struct {
	noResolveTombstone   bool // resolution leaves no tombstone: a late prepare re-places an intent
	noProbeTombstone     bool // a recovery's probe that finds an intent missing does not prevent it
	noReadLocks          bool // a prepare neither places nor checks read intents (compared keys go unlocked)
	decideIgnoresIntents bool // the anchor's decide writes its keys over other transactions' intents
}

type simWorld struct {
	knobs   simKnobs
	t       *testing.T
	rng     *rand.Rand
	shards  []*simShard
	now     int64
	queue   []func()
	coords  []*simCoord
	timeout time.Duration
	lossPct int
	steps   int64 // commands run: the history's clock
	stats   map[string]int
}

func (w *simWorld) shardOf(key []byte) uint64 { return uint64(key[1]-'0') % uint64(len(w.shards)) }

func (w *simWorld) lookup(key []byte) (uint64, uint64, error) { return w.shardOf(key), 1, nil }

func (w *simWorld) send(f func()) { w.queue = append(w.queue, f) }

// step runs one queued command chosen at random.
func (w *simWorld) step() bool {
	if len(w.queue) == 0 {
		return false
	}
	i := w.rng.IntN(len(w.queue))
	f := w.queue[i]
	w.queue = slices.Delete(w.queue, i, i+1)
	w.now += int64(w.rng.IntN(3)) * int64(time.Second)
	w.steps++
	f()
	return true
}

// lost reports whether an answer is lost (the command may have applied).
func (w *simWorld) lost() bool { return w.rng.IntN(100) < w.lossPct }

// recordEvent applies ev to the record at anchor: one raft command on the
// anchor's shard.
func (w *simWorld) recordEvent(anchor []byte, ev Event) (*Record, Effects) {
	sh := w.shards[w.shardOf(anchor)]
	next, eff := NextRecord(sh.records[ev.ID], ev)
	if eff.Changed {
		sh.records[ev.ID] = next
	}
	return next, eff
}

// resolve is the resolve command on a shard: every intent of id there.
func (w *simWorld) resolve(shard uint64, id string, rec *Record) {
	sh := w.shards[shard]
	if rec != nil && rec.State.Final() && !w.knobs.noResolveTombstone {
		// The tombstone refuses a prepare that arrives after the
		// resolution (a retry, or a duplicate still in flight): without it
		// a committed write would be applied twice (this test found that).
		sh.tombstones[id] = true
	}
	for k, ins := range sh.intents {
		for i := 0; i < len(ins); i++ {
			if ins[i].TxnID != id {
				continue
			}
			r := ResolveIntent(ins[i], rec)
			if r.Keep {
				continue
			}
			if r.Apply != nil {
				sh.data[k] = append(sh.data[k], id)
			}
			ins = slices.Delete(ins, i, i+1)
			i--
		}
		sh.intents[k] = ins
	}
}

type simCoord struct {
	w       *simWorld
	id      string
	req     *Request
	rt      Routing
	st      CoordState
	outcome *Outcome
	prio    uint64
	reads   map[string]KeyState
	lists   map[string][]string // the keys' data as the prepares read it under intents
	began   int64               // w.steps at invocation and at the reply: the history's times
	ended   int64
	replied Result
	crashAt int // crash after this many Plan calls (-1: never)
	plans   int
	lastHB  int64
	start   int64
}

func (c *simCoord) crashed() bool { return c.crashAt >= 0 && c.plans > c.crashAt }

func (c *simCoord) part(shard uint64) *PartState {
	for i := range c.st.Parts {
		if c.st.Parts[i].Shard == shard {
			return &c.st.Parts[i]
		}
	}
	return nil
}

func recStatus(r *Record) RecStatus {
	if r == nil {
		return RecNone
	}
	return map[State]RecStatus{Pending: RecPending, Staging: RecStaging, Committed: RecCommitted, Aborted: RecAborted}[r.State]
}

func verdictStatus(v Verdict, ok RecStatus) RecStatus {
	switch v {
	case VerdictCommitted:
		return RecCommitted
	case VerdictAborted:
		return RecAborted
	case VerdictOK:
		return ok
	}
	return RecUnknown
}

// run calls Plan and sends its actions.
func (c *simCoord) run() {
	if c.crashed() {
		return
	}
	c.plans++
	if c.crashed() {
		return
	}
	c.st.Deadline = c.w.now-c.start > int64(120*time.Second)
	c.st.Heartbeat = c.w.now-c.lastHB > int64(c.w.timeout/3)
	for _, a := range Plan(&c.st) {
		c.act(a)
	}
}

func (c *simCoord) act(a Action) {
	w := c.w
	switch a.Kind {
	case ActPrepare:
		p := c.part(a.Shard)
		p.Status, p.Attempts = PartSent, p.Attempts+1
		begin := a.Begin
		if begin {
			c.st.Record = RecSent
		}
		w.send(func() { c.prepare(a.Shard, begin) })
	case ActStage:
		c.st.Record = RecSent
		w.send(func() { c.recordWrite(Event{Kind: EvStage}, RecStaging) })
	case ActCommit:
		c.st.Record = RecSent
		w.send(func() { c.recordWrite(Event{Kind: EvCommit}, RecCommitted) })
	case ActAbort:
		c.st.Record = RecSent
		w.send(func() { c.recordWrite(Event{Kind: EvAbort, Cause: a.Cause}, RecAborted) })
	case ActDecide:
		p := c.part(a.Shard)
		p.Status, p.Attempts = PartSent, p.Attempts+1
		c.st.Record = RecSent
		w.send(c.decide)
	case ActBegin:
		c.lastHB = w.now
		c.st.Record = RecSent
		w.send(func() { c.recordWrite(Event{Kind: EvBegin}, RecPending) })
	case ActHeartbeat:
		c.lastHB = w.now
		w.send(func() { c.w.recordEvent(c.rt.Anchor, Event{Kind: EvHeartbeat, ID: c.id, Now: c.w.now}) })
	case ActEvaluate:
		out := Execute(c.req, func(k []byte) KeyState { return c.reads[string(k)] })
		c.outcome = &out
		c.st.Evaluated = true
		c.run()
	case ActPush:
		p := c.part(a.Shard)
		b := *p.Blocker
		p.Status = PartSent
		w.send(func() {
			w.meet(b, c.prio, c.id)
			w.send(func() {
				if !c.crashed() {
					p.Status = PartUnknown // prepare again
					c.run()
				}
			})
		})
	case ActReadRecord:
		c.st.Record = RecSent
		w.send(func() {
			r := w.shards[w.shardOf(c.rt.Anchor)].records[c.id]
			if !c.crashed() && !w.lost() {
				c.st.Record = recStatus(r)
				c.run()
			} else if !c.crashed() {
				c.st.Record = RecUnknown
				c.run()
			}
		})
	case ActResolve:
		p := c.part(a.Shard)
		p.Resolving = true
		w.send(func() {
			w.resolve(a.Shard, c.id, w.shards[w.shardOf(c.rt.Anchor)].records[c.id])
			if c.crashed() {
				return
			}
			p.Resolving = false
			if !w.lost() {
				p.Status = PartResolved
			}
			c.run()
		})
	case ActReply:
		if c.replied == 0 {
			c.replied, c.ended = a.Result, w.steps
		}
		c.st.Replied = true
	case ActDone, ActWaitAnswers:
	case ActReroute:
		w.t.Fatalf("no splits in the simulation, yet %v", a)
	}
}

// prepare is the participant's raft command: the anchor's also begins the
// record (refusing the prepare if the record is already final).
func (c *simCoord) prepare(shard uint64, begin bool) {
	w := c.w
	sh := w.shards[shard]
	part := c.rt.Participant(shard)
	var recSt RecStatus = RecPending
	refused := false
	if begin {
		r, eff := w.recordEvent(c.rt.Anchor, Event{Kind: EvBegin, ID: c.id, Now: w.now, Anchor: c.rt.Anchor,
			Participants: c.rt.Participants, Priority: c.prio, RequestID: c.req.RequestID})
		recSt = verdictStatus(eff.Verdict, recStatus(r))
		refused = recSt != RecPending
	}
	var vote Vote
	var blocker *Intent
	locked := part.Keys
	if w.knobs.noReadLocks {
		locked = slices.DeleteFunc(slices.Clone(locked), func(k KeyIntent) bool { return k.Access == AccessRead })
	}
	if !refused {
		vote, blocker = PrepareDecision(c.id, locked, func(k []byte) []Intent { return sh.intents[string(k)] }, sh.tombstones[c.id])
		if vote == VoteYes {
			for _, k := range locked {
				if slices.ContainsFunc(sh.intents[string(k.Key)], func(in Intent) bool { return in.TxnID == c.id }) {
					continue // a retried prepare
				}
				in := Intent{TxnID: c.id, Key: k.Key, Access: k.Access, Anchor: c.rt.Anchor, Priority: c.prio, PreparedAt: w.now}
				if c.st.Fast && k.Access == AccessWrite {
					for _, wr := range Writes(c.req.Success) {
						if string(wr.Key) == string(k.Key) {
							in.Write = &wr
						}
					}
				}
				sh.intents[string(k.Key)] = append(sh.intents[string(k.Key)], in)
			}
		}
	}
	// Reads under the intents: the state of the data (version = writes applied).
	reads := map[string]KeyState{}
	lists := map[string][]string{}
	for _, k := range part.Keys {
		n := len(sh.data[string(k.Key)])
		reads[string(k.Key)] = KeyState{Exists: n > 0, Version: uint64(n), ModIndex: uint64(n)}
		lists[string(k.Key)] = slices.Clone(sh.data[string(k.Key)])
	}
	if c.crashed() {
		return
	}
	p := c.part(shard)
	if w.lost() {
		p.Status = PartUnknown
		if begin {
			c.st.Record = RecUnknown
		}
		c.run()
		return
	}
	if begin {
		c.st.Record = recSt
		if refused {
			p.Status = PartUnknown
			c.run()
			return
		}
	}
	switch vote {
	case VoteYes:
		p.Status = PartYes
		for k, s := range reads {
			c.reads[k] = s
			c.lists[k] = lists[k]
		}
	case VoteConflict:
		p.Status, p.Blocker = PartConflict, blocker
	case VotePrevented:
		p.Status = PartPrevented
	}
	c.run()
}

// decide is the anchor's one raft command on the compare path (fsm's
// decide apply): a final record answers itself and applies nothing; an
// intent of another transaction on an anchor key refuses it (conflict);
// else the compares are evaluated over the anchor's keys as they are now and
// the other participants' states read under their intents, the record is
// written Committed with the branch's write set (EvDecide: the commit
// point) and the anchor's writes are applied directly, without intents.
func (c *simCoord) decide() {
	w := c.w
	shard := c.rt.AnchorShard
	sh := w.shards[shard]
	part := c.rt.Participant(shard)
	rec := sh.records[c.id]
	status := recStatus(rec)
	var blocker *Intent
	var out *Outcome
	lists := map[string][]string{}
	if rec == nil || rec.State == Pending {
		for _, k := range part.Keys {
			for _, in := range sh.intents[string(k.Key)] {
				if blocker == nil && !w.knobs.decideIgnoresIntents && Conflict(c.id, k.Access, in) {
					blocker = &in
				}
			}
		}
	}
	if (rec == nil || rec.State == Pending) && blocker == nil {
		reads := map[string]KeyState{}
		for k, st := range c.reads {
			reads[k] = st
		}
		for _, k := range part.Keys {
			n := len(sh.data[string(k.Key)])
			reads[string(k.Key)] = KeyState{Exists: n > 0, Version: uint64(n), ModIndex: uint64(n)}
			lists[string(k.Key)] = slices.Clone(sh.data[string(k.Key)])
		}
		o := Execute(c.req, func(k []byte) KeyState { return reads[string(k)] })
		r, eff := w.recordEvent(c.rt.Anchor, Event{Kind: EvDecide, ID: c.id, Now: w.now, Anchor: c.rt.Anchor,
			Participants: c.rt.Participants, Priority: c.prio, RequestID: c.req.RequestID, WriteSet: o.Writes, Succeeded: o.Succeeded})
		status = verdictStatus(eff.Verdict, recStatus(r))
		if eff.Changed && r.State == Committed {
			w.stats["decided"]++
			if rec != nil {
				w.stats["decided-after-begin"]++
			}
			out = &o
			for _, wr := range o.Writes {
				if w.shardOf(wr.Key) == shard {
					sh.data[string(wr.Key)] = append(sh.data[string(wr.Key)], c.id)
				}
			}
		}
	}
	if c.crashed() {
		return
	}
	p := c.part(shard)
	if w.lost() {
		p.Status, c.st.Record = PartUnknown, RecUnknown
		c.run()
		return
	}
	c.st.Record = status
	switch {
	case blocker != nil:
		p.Status, p.Blocker = PartConflict, blocker
	case status == RecCommitted || status == RecAborted:
		p.Status = PartResolved
		if out != nil {
			c.outcome = out
			for k, l := range lists {
				c.lists[k] = l
			}
		}
	default:
		p.Status = PartUnknown
	}
	c.run()
}

// recordWrite sends a coordinator event to the record; ok is the status a
// VerdictOK means.
func (c *simCoord) recordWrite(ev Event, ok RecStatus) {
	w := c.w
	ev.ID, ev.Now, ev.Anchor, ev.Participants, ev.Priority, ev.RequestID =
		c.id, w.now, c.rt.Anchor, c.rt.Participants, c.prio, c.req.RequestID
	switch {
	case c.st.Fast:
		ev.WriteSet, ev.Succeeded = Writes(c.req.Success), true
	case c.outcome != nil:
		ev.WriteSet, ev.Succeeded = c.outcome.Writes, c.outcome.Succeeded
	}
	r, eff := w.recordEvent(c.rt.Anchor, ev)
	if c.crashed() {
		return
	}
	if w.lost() {
		c.st.Record = RecUnknown
	} else {
		c.st.Record = verdictStatus(eff.Verdict, ok)
		if eff.Verdict == VerdictOK {
			c.st.Record = recStatus(r)
		}
	}
	c.run()
}

// meet is a request meeting intent in: read the record, resolve if final,
// else push; a Staging record that timed out is recovered: probe every
// participant (each a raft command), then EvRecover with the epoch read.
func (w *simWorld) meet(in Intent, prio uint64, by string) {
	anchorShard := w.shardOf(in.Anchor)
	rec := w.shards[anchorShard].records[in.TxnID]
	if rec != nil && rec.State.Final() {
		w.resolve(w.shardOf(in.Key), in.TxnID, rec)
		return
	}
	r, eff := w.recordEvent(in.Anchor, Event{Kind: EvPush, ID: in.TxnID, Now: w.now, Timeout: w.timeout,
		PusherPriority: prio, PusherID: by, PreparedAt: in.PreparedAt, Priority: in.Priority, Anchor: in.Anchor})
	switch eff.Verdict {
	case VerdictAborted, VerdictCommitted:
		w.send(func() { w.resolve(w.shardOf(in.Key), in.TxnID, r) })
	case VerdictNeedRecovery:
		w.recover(r)
	}
}

// sweep pushes a record found by the sweeper, as a reader would.
func (w *simWorld) sweep(rec *Record) {
	r, eff := w.recordEvent(rec.Anchor, Event{Kind: EvPush, ID: rec.ID, Now: w.now, Timeout: w.timeout})
	switch eff.Verdict {
	case VerdictAborted, VerdictCommitted:
		for _, p := range r.Participants {
			w.resolve(p.Shard, r.ID, r)
		}
	case VerdictNeedRecovery:
		w.recover(r)
	}
}

func (w *simWorld) recover(rec *Record) {
	epoch, id := rec.Epoch, rec.ID
	all, left := true, len(rec.Participants)
	for _, p := range rec.Participants {
		p := p
		w.send(func() {
			sh := w.shards[p.Shard]
			res := Probe(p.Keys, func(k []byte) bool {
				return slices.ContainsFunc(sh.intents[string(k)], func(in Intent) bool { return in.TxnID == id })
			})
			if res == ProbePrevented {
				if !w.knobs.noProbeTombstone {
					sh.tombstones[id] = true
				}
				all = false
			}
			if left--; left == 0 {
				w.send(func() {
					r, eff := w.recordEvent(rec.Anchor, Event{Kind: EvRecover, ID: id, Now: w.now, Epoch: epoch, AllPrepared: all})
					if eff.Verdict == VerdictCommitted || eff.Verdict == VerdictAborted {
						for _, p := range r.Participants {
							w.resolve(p.Shard, id, r)
						}
					}
				})
			}
		})
	}
}

func simSeed(t *testing.T) uint64 {
	if s := os.Getenv("TXN_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TXN_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// TestProtocolSimulation: see the comment at the top of this file.
// Invariant I8, Scenario S14 (coordinators die at every step: after some
// prepares, after the record write, while resolving).
func TestProtocolSimulation(t *testing.T) {
	seed := simSeed(t)
	t.Logf("seed %d (replay with TXN_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0xa0761d6478bd642f))
	stats := map[string]int{}
	for run := range 300 {
		if err := simRun(t, rng, simKnobs{}, stats); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
	t.Logf("outcomes over all runs: %v", stats)
	if stats["committed"] == 0 || stats["aborted"] == 0 || stats["recovered-commit"] == 0 || stats["unanswered"] == 0 ||
		stats["decided"] == 0 || stats["decided-after-begin"] == 0 {
		t.Fatalf("the simulation did not reach every kind of outcome: %v", stats)
	}
}

// TestProtocolSimulationNegativeControls: with a tombstone knocked out, the
// same simulation finds a violation (a committed write applied twice; a
// client told committed while the record aborted).
func TestProtocolSimulationNegativeControls(t *testing.T) {
	seed := simSeed(t)
	t.Logf("seed %d (replay with TXN_SEED=%d)", seed, seed)
	for _, k := range []simKnobs{{noResolveTombstone: true}, {noProbeTombstone: true}, {noReadLocks: true}, {decideIgnoresIntents: true}} {
		rng := rand.New(rand.NewPCG(seed, seed^0xa0761d6478bd642f))
		var err error
		for run := 0; run < 2000 && err == nil; run++ {
			err = simRun(t, rng, k, map[string]int{})
		}
		if err == nil {
			t.Fatalf("knobs %+v: no violation found in 2000 runs", k)
		}
		t.Logf("knobs %+v: %v", k, err)
	}
}

func simRun(t *testing.T, rng *rand.Rand, knobs simKnobs, stats map[string]int) error {
	w := &simWorld{knobs: knobs, t: t, rng: rng, timeout: 20 * time.Second, lossPct: rng.IntN(25), stats: stats}
	for range 3 {
		w.shards = append(w.shards, &simShard{data: map[string][]string{}, intents: map[string][]Intent{},
			records: map[string]*Record{}, tombstones: map[string]bool{}})
	}
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	for i := range 4 + rng.IntN(8) {
		id := fmt.Sprintf("t%d", i)
		req := &Request{RequestID: id}
		ks := slices.Clone(keys)
		rng.Shuffle(len(ks), func(a, b int) { ks[a], ks[b] = ks[b], ks[a] })
		n := 2 + rng.IntN(3)
		for _, k := range ks[:n] {
			req.Success = append(req.Success, put(k, id))
		}
		fast := rng.IntN(2) == 0
		if !fast {
			// The compare path: a version compare on another key, true or
			// false, with a failure branch writing one key of its own.
			req.Compare = []Compare{cmpv(ks[n], TargetVersion, []CmpOp{CmpGe, CmpLt}[rng.IntN(2)], "1")}
			req.Failure = []Op{put(ks[n+1], id)}
		}
		rt, err := Route(req, w.lookup)
		if err != nil {
			t.Fatal(err)
		}
		if rt.SingleShard() {
			continue
		}
		c := &simCoord{w: w, id: id, req: req, rt: rt, prio: 1 + rng.Uint64N(3), reads: map[string]KeyState{}, lists: map[string][]string{}, crashAt: -1}
		if rng.IntN(3) == 0 {
			c.crashAt = rng.IntN(12)
		}
		c.st = CoordState{Fast: fast, AnchorShard: rt.AnchorShard, MaxAttempts: 4}
		for _, s := range rt.Shards() {
			c.st.Parts = append(c.st.Parts, PartState{Shard: s})
		}
		w.coords = append(w.coords, c)
		start := c
		w.send(func() { start.start, start.lastHB, start.began = w.now, w.now, w.steps; start.run() })
	}
	// Recovery agents: now and then a request meets a random intent.
	for steps := 0; steps < 20000; steps++ {
		if rng.IntN(8) == 0 {
			sh := w.shards[rng.IntN(len(w.shards))]
			for _, ins := range sh.intents {
				if len(ins) > 0 {
					in := ins[rng.IntN(len(ins))]
					w.send(func() { w.meet(in, 0, "") })
					break
				}
			}
		}
		if !w.step() {
			break
		}
	}
	// Everyone is gone: recovery alone cleans up, the clock far ahead.
	for round := 0; round < 50; round++ {
		w.now += int64(time.Hour)
		left := false
		for _, sh := range w.shards {
			for _, ins := range sh.intents {
				for _, in := range ins {
					left = true
					w.send(func() { w.meet(in, 0, "") })
				}
			}
			// The record sweeper: a record whose transaction left no intent
			// (every prepare refused, then the coordinator died) is found by
			// its anchor shard's leader, not by a reader.
			for _, r := range sh.records {
				if !r.State.Final() {
					left = true
					w.send(func() { w.sweep(r) })
				}
			}
		}
		for n := 0; w.step(); n++ {
			if n > 100000 {
				return fmt.Errorf("the cleanup does not end")
			}
		}
		if !left {
			break
		}
	}
	if err := simCheck(w, stats); err != nil {
		return err
	}
	// The data are lists (each key's applied transaction ids, in order), so
	// the clients' view is a list-append history: strict serializability
	// of what the compare path read under its intents and what everyone
	// wrote.
	if r := txncheck.CheckListAppend(simHistory(w), txncheck.Options{Realtime: true}); !r.Valid() {
		return fmt.Errorf("history: %s", r)
	}
	return nil
}

// simHistory is the clients' history: a committed transaction read the
// lists of all its keys (before appending) and appended its id to the keys
// of the branch taken; an aborted or unanswered one may have
// appended to the keys of either branch.
func simHistory(w *simWorld) []txncheck.Txn {
	num := func(id string) int { n, _ := strconv.Atoi(id[1:]); return n }
	var h []txncheck.Txn
	for _, c := range w.coords {
		t := txncheck.Txn{ID: num(c.id), Start: c.began, End: c.ended}
		var writes []Write
		switch c.replied {
		case ResultCommitted:
			t.Status = okStatus
			writes = Writes(c.req.Success)
			if !c.st.Fast {
				// The record's write set: the decide's answer may have been
				// lost (then the coordinator learned committed by reading
				// the record, without the anchor's reads).
				writes = w.shards[w.shardOf(c.rt.Anchor)].records[c.id].WriteSet
			}
			// Both paths read every key they lock as their prepare applies
			// (the gets of a transaction): one consistent state across
			// shards, before their own appends.
			keys := make([]string, 0, len(c.lists))
			for k := range c.lists {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				list := make([]int, len(c.lists[k]))
				for i, id := range c.lists[k] {
					list[i] = num(id)
				}
				t.Ops = append(t.Ops, txncheck.Mop{Kind: txncheck.Read, Key: k, List: list})
			}
		case ResultAborted:
			t.Status = txncheck.Aborted
			writes = append(Writes(c.req.Success), Writes(c.req.Failure)...)
		default:
			t.Status = txncheck.Unknown
			writes = append(Writes(c.req.Success), Writes(c.req.Failure)...)
		}
		for _, wr := range writes {
			t.Ops = append(t.Ops, txncheck.Mop{Kind: txncheck.Append, Key: string(wr.Key), Value: t.ID})
		}
		h = append(h, t)
	}
	return h
}

// okStatus is txncheck.OK, named apart from this package's states.
const okStatus = txncheck.OK

func simCheck(w *simWorld, stats map[string]int) error {
	for si, sh := range w.shards {
		for k, ins := range sh.intents {
			if len(ins) > 0 {
				return fmt.Errorf("shard %d key %s keeps intents %+v", si, k, ins)
			}
		}
	}
	applied := map[string]map[string]int{} // txn -> key -> times applied
	for _, sh := range w.shards {
		for k, ids := range sh.data {
			for _, id := range ids {
				if applied[id] == nil {
					applied[id] = map[string]int{}
				}
				applied[id][k]++
			}
		}
	}
	for _, c := range w.coords {
		rec := w.shards[w.shardOf(c.rt.Anchor)].records[c.id]
		got := applied[c.id]
		state := "none"
		if rec != nil {
			state = rec.State.String()
		}
		switch {
		case rec != nil && rec.State == Committed:
			if len(got) != len(rec.WriteSet) {
				return fmt.Errorf("%s committed with writes %v, applied on %v", c.id, rec.WriteSet, got)
			}
			for _, wr := range rec.WriteSet {
				if got[string(wr.Key)] != 1 {
					return fmt.Errorf("%s committed, key %s applied %d times", c.id, wr.Key, got[string(wr.Key)])
				}
			}
		case rec == nil || rec.State == Aborted:
			if len(got) != 0 {
				return fmt.Errorf("%s %s, yet applied on %v", c.id, state, got)
			}
		default:
			return fmt.Errorf("%s left %s after recovery", c.id, state)
		}
		switch c.replied {
		case ResultCommitted:
			if state != "committed" {
				return fmt.Errorf("%s answered committed, record %s", c.id, state)
			}
			stats["committed"]++
		case ResultAborted:
			if state != "aborted" {
				return fmt.Errorf("%s answered aborted, record %s", c.id, state)
			}
			stats["aborted"]++
		case ResultUnknown:
			stats["unknown"]++
		default:
			if !c.crashed() {
				return fmt.Errorf("%s: its coordinator never answered (Plan stuck at %+v)", c.id, c.st)
			}
			stats["unanswered"]++
			if state == "committed" {
				stats["recovered-commit"]++
			}
		}
	}
	return nil
}
