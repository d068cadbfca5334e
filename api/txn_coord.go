package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
	"github.com/cairndb/cairn/txn"
)

// The coordinator of a multi-shard transaction (txn/DESIGN.md "The
// coordinator"): it runs on the node that received POST /v1/txn and executes
// txn.Plan's actions until Plan says done. Every action is a raft command on
// some shard (txnPropose); the record on the anchor's shard is the single
// commit point, so the coordinator may die at any step and the transaction
// still ends one way (readers that meet its intents push the record: an
// expired Pending record is aborted).
//
// Wired here: the compare path for every transaction (prepare on every
// participant but the anchor's; then the anchor decides: one entry on its
// shard evaluates over its own keys and the reads under the others'
// intents and commits, the commit point, txn/DESIGN.md "The anchor
// decides"; reply; resolve; forget). A begin is sent only when the prepares
// outlive a heartbeat interval. The reply goes out as soon as the record is final: the intents
// are resolved in the background (txnBackground), detached from the request
// and bounded by writeTimeout, and a write's answer carries the index of the
// prepare that laid its intent, which resolution writes as its mod_index
// (txn/DESIGN.md "Replying at the commit point"). The parallel-commit fast
// path (Staging, recovery probes) is not used: CoordState.Fast is always
// false, so no record is ever Staging.

// TxnKnobs are test hooks of the coordinator; nil in production.
type TxnKnobs struct {
	// BeforeAction runs before each action; returning an error makes the
	// coordinator stop there (a crash: nothing more is sent, the client
	// hears outcome_unknown). S14 stops coordinators at each step.
	BeforeAction func(id string, a txn.Action) error
	// SkipReadIntents makes prepares lock written keys only: compared and
	// read keys go unlocked (the negative control of the serializability
	// checks: they must then fail).
	SkipReadIntents bool
	// SyncResolve makes the coordinator resolve every intent before it
	// replies, as it did before the reply moved to the commit point (tests
	// compare the two).
	SyncResolve bool
	// LoseDecideAnswer, when it returns true, discards the answer of a
	// decide that reached its shard, as a leader change while committing
	// does: the coordinator learns nothing of its outcome.
	LoseDecideAnswer func(id string) bool
}

// errCoordinatorStopped: a TxnKnobs.BeforeAction stopped the coordinator.
var errCoordinatorStopped = errors.New("txn coordinator stopped by a test knob")

// Coordinator bounds.
const (
	// txnTimeout is the record's heartbeat timeout: an older Pending record
	// may be aborted by a push. It is well above a leader failover (an
	// election timeout of 1.5 s, twice that at worst), since a coordinator's
	// heartbeat cannot land while its anchor has no leader; CockroachDB
	// takes 5 s too (five heartbeat intervals).
	txnTimeout     = 5 * time.Second
	txnMaxAttempts = 40  // prepares per participant (conflicts, unknowns)
	txnMaxSteps    = 400 // Plan rounds
	txnPushPause   = 25 * time.Millisecond
	// txnMaxReroutes bounds the routings a transaction takes after a
	// participant command met wrong_shard; txnRerouteWait bounds how long
	// one waits for this node's range map to show the change.
	txnMaxReroutes = 4
	txnRerouteWait = 3 * time.Second
)

type txnCoord struct {
	s       *Server
	req     *txn.Request
	rt      txn.Routing
	id      string
	prio    uint64
	st      txn.CoordState
	reads   map[string]*fsm.KV
	tokens  map[string]uint64 // lock 0x00 key -> accepted token
	out     *txn.Outcome
	rec     *txn.Record
	reply   txn.Result
	stale   *fsm.StaleTokenError
	writes  map[string]fsm.TxnOpResult
	seqs    map[string]uint64 // key -> index of the prepare entry that laid its intent
	bg      bool              // resolving in the background, after the reply
	detach  bool              // replied at the commit point: resolve in the background
	lastHB  time.Time
	lastErr error // the last failed proposal (for the abort's log)
	// resolved: keys whose intents of this transaction a resolution that
	// succeeded covered (a resolve, or the record entry's ResolveHere);
	// once it holds every key of a committed record, the record is
	// forgotten (forgetIfResolved).
	resolved map[string]bool
	// oneShard: the anchor's decide (or the abort) found that this request
	// id already ran as a one-shard transaction (before a split spread its keys): its
	// stored result, which the client is answered (a replay); the decide
	// aborted the record, and the intents the other prepares laid are
	// resolved as aborted like any aborted transaction's.
	oneShard *fsm.Result
	// lookedUp: a record command that looks the request id up in the
	// dedup table (CheckOneShard: the decide, the coordinator's abort)
	// was answered, so oneShard says whether it ran as a one-shard
	// transaction.
	lookedUp bool
	// decideLost: a decide of this coordinator's had an unknown outcome; if
	// the record turns out committed with no decide answer in hand, the
	// client hears outcome_unknown (txnMulti).
	decideLost bool
	redecided  bool // a decide sent again to learn a lost answer's results was answered
	reroutes   int  // routings taken after wrong_shard (reroute)
	mu         sync.Mutex
}

// newTxnID is the id of a new transaction: derived from the request id when
// there is one (a retry finds the same record), else "t", the proposer's
// time in nanoseconds and 64 random bits, in hex. Time first makes the ids
// of concurrent transactions neighbours, so a shard's records and tombstones
// (keyed by id) grow at their right edge: a batch of decides dirties one or
// two pages of each bucket, where random ids dirtied a page per transaction.
// The id is opaque everywhere else: nothing reads the time back.
func newTxnID(requestID string, now time.Time) string {
	if requestID != "" {
		return txn.IDForRequest(requestID)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	_, _ = rand.Read(b[8:])
	return "t" + hex.EncodeToString(b[:])
}

func newPriority() uint64 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return 1 + uint64(binary.BigEndian.Uint32(b[:]))
}

// txnMulti runs a transaction over several shards and answers the client.
func (s *Server) txnMulti(w http.ResponseWriter, r *http.Request, req *txn.Request, rt txn.Routing) error {
	// The coordinator finishes what it started even if the client goes away;
	// a transaction left half-way (its node died) is ended by a reader that
	// meets its intents, or by the record sweeper (txn_sweep.go).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeTimeout)
	defer cancel()
	s.txnLive.Add(1)
	defer s.txnLive.Add(-1)
	c := &txnCoord{s: s, req: req, rt: rt, id: newTxnID(req.RequestID, s.cfg.Clock.Now()), prio: newPriority(),
		reads: map[string]*fsm.KV{}, tokens: map[string]uint64{}, writes: map[string]fsm.TxnOpResult{},
		seqs: map[string]uint64{}, lastHB: s.cfg.Clock.Now()}
	c.st = txn.CoordState{AnchorShard: rt.AnchorShard, MaxAttempts: txnMaxAttempts}
	for _, p := range rt.Participants {
		c.st.Parts = append(c.st.Parts, txn.PartState{Shard: p.Shard})
	}
	err := c.run(ctx)
	cause := ""
	if c.rec != nil {
		cause = c.rec.Cause.String()
	}
	defer func() { s.txnm.outcome(true, err, cause) }()
	if err != nil {
		return err
	}
	// Everything the reply needs is read before the background resolution
	// may touch c.
	reply, stale, one := c.reply, c.stale, c.oneShard
	if reply == txn.ResultCommitted && c.out == nil && one == nil && c.decideLost {
		// Committed by this coordinator's own decide whose answer was lost
		// (a leader change, a timeout), and deciding again brought no
		// results (the new leader did not keep them: fsm/decided.go): the
		// anchor's reads and writes it applied are gone with the answer. The client hears
		// outcome_unknown, not a committed answer without the results it
		// asked for (TestS13Bank: a whole-bank read answered with no
		// accounts); its retry with the same request id answers the
		// record's outcome as a replay, as documented.
		reply = txn.ResultUnknown
	}
	var answer txnResponseJSON
	if reply == txn.ResultCommitted {
		answer = c.answer()
	}
	if one != nil && reply == txn.ResultAborted {
		answer, err = c.oneShardAnswer(one)
		reply, cause = txn.ResultCommitted, ""
	}
	if c.detach && !c.resolveDetached() {
		s.txnbg.spawn(writeTimeout, func(ctx context.Context) {
			c.bg = true
			if err := c.run(ctx); err != nil {
				s.log.Debug("txn: background resolution stopped", "txn", c.id, "err", err)
			}
		})
	}
	setHeaders(w, 0, 0, r.Header.Get(hdrSession))
	switch reply {
	case txn.ResultCommitted:
		if err != nil {
			return err // the one-shard execution was refused by a stale fence
		}
		writeJSON(w, http.StatusOK, answer)
		return nil
	case txn.ResultAborted:
		if stale != nil {
			err = stale
			return err
		}
		err = fmt.Errorf("transaction %s aborted (%s): %w", c.id, cause, errTxnAborted)
		return err
	}
	err = fmt.Errorf("transaction %s: %w", c.id, errOutcomeUnknownTxn)
	return err
}

// run executes Plan until done, the step bound, or the context's end.
func (c *txnCoord) run(ctx context.Context) error {
	deadline, _ := ctx.Deadline()
	for range txnMaxSteps {
		c.st.Deadline = time.Now().After(deadline.Add(-time.Second)) // the context's own deadline is on the system clock
		c.st.Heartbeat = c.s.cfg.Clock.Now().Sub(c.lastHB) > txnTimeout/3
		acts := txn.Plan(&c.st)
		var prepares, resolves []txn.Action
		rerouted := false
	round:
		for _, a := range acts {
			if c.crashBefore(a) {
				// A crash here: the prepares of this round decided
				// before it are still sent (some shards prepared).
				c.prepareAll(ctx, prepares)
				c.resolveAll(ctx, resolves)
				return fmt.Errorf("%w: %w", errCoordinatorStopped, errOutcomeUnknownTxn)
			}
			switch a.Kind {
			case txn.ActDone:
				if c.reply == 0 {
					c.reply = txn.ResultUnknown
				}
				c.forgetIfResolved(ctx)
				return nil
			case txn.ActWaitAnswers:
				// Actions run synchronously: nothing is in flight.
			case txn.ActReroute:
				if c.reroute(ctx) {
					// The participants changed: plan again over the new
					// routing; nothing of this round was sent.
					rerouted = true
					break round
				}
				// Not re-routed: abort cleanly (issue 13 item 6 allows it);
				// the client retries as a new transaction. Every other
				// participant that met wrong_shard is done too: the map it
				// would wait for did not change.
				for i := range c.st.Parts {
					if p := &c.st.Parts[i]; p.Shard == a.Shard || p.Status == txn.PartWrongShard {
						p.Attempts = txnMaxAttempts
					}
				}
			case txn.ActPrepare:
				prepares = append(prepares, a)
			case txn.ActResolve:
				resolves = append(resolves, a)
			case txn.ActReply:
				c.act(ctx, a)
				if !c.bg && c.replyEarly() {
					// The record is final: answer now, resolve after
					// (txnMulti hands the rest of Plan to txnBackground).
					c.prepareAll(ctx, prepares)
					c.detach = true
					return nil
				}
			default:
				c.act(ctx, a)
			}
		}
		if rerouted {
			continue
		}
		c.prepareAll(ctx, prepares)
		c.resolveAll(ctx, resolves)
		if c.reply == txn.ResultUnknown {
			return nil
		}
	}
	if c.reply == 0 {
		c.reply = txn.ResultUnknown
	}
	return nil
}

func (c *txnCoord) prepareAll(ctx context.Context, acts []txn.Action) {
	if len(acts) == 1 { // a two-shard transaction's one prepare: no goroutine
		c.prepare(ctx, acts[0])
		return
	}
	var wg sync.WaitGroup
	for _, a := range acts {
		wg.Go(func() { c.prepare(ctx, a) })
	}
	wg.Wait()
}

// resolveAll resolves the participants of acts in parallel. Resolution
// outlives the client's deadline: the outcome is decided, and intents left
// behind block other requests.
func (c *txnCoord) resolveAll(ctx context.Context, acts []txn.Action) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	if c.bg {
		// Already detached and bounded; the node's Close ends it.
		rctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	if len(acts) == 1 {
		c.resolve(rctx, acts[0].Shard)
		return
	}
	var wg sync.WaitGroup
	for _, a := range acts {
		wg.Go(func() { c.resolve(rctx, a.Shard) })
	}
	wg.Wait()
}

func (c *txnCoord) part(shard uint64) *txn.PartState {
	for i := range c.st.Parts {
		if c.st.Parts[i].Shard == shard {
			return &c.st.Parts[i]
		}
	}
	return nil
}

func (c *txnCoord) event(kind txn.EventKind) *txn.Event {
	return &txn.Event{Kind: kind, ID: c.id, Now: c.s.cfg.Clock.Now().UnixNano(), Anchor: c.rt.Anchor,
		Participants: c.rt.Participants, Priority: c.prio, RequestID: c.req.RequestID}
}

func fenceKey(lock string, key []byte) string { return lock + "\x00" + string(key) }

// prepare sends one participant's prepare (with EvBegin when a.Begin: Plan no
// longer asks for it, the anchor decides instead).
func (c *txnCoord) prepare(ctx context.Context, a txn.Action) {
	pt := c.rt.Participant(a.Shard)
	tc := &fsm.TxnCommand{ID: c.id, Anchor: c.rt.Anchor, Priority: c.prio, Keys: pt.Keys}
	if k := c.s.cfg.TxnKnobs; k != nil && k.SkipReadIntents {
		tc.Keys = nil
		for _, ki := range pt.Keys {
			if ki.Access == txn.AccessWrite {
				tc.Keys = append(tc.Keys, ki)
			} else {
				tc.Unlocked = append(tc.Unlocked, ki.Key) // read, but not locked
			}
		}
	}
	on := map[string]bool{}
	for _, k := range pt.Keys {
		on[string(k.Key)] = true
	}
	for _, br := range [][]txn.Op{c.req.Success, c.req.Failure} {
		for _, o := range br {
			if o.Fence != nil && on[string(o.Key)] {
				tc.Fences = append(tc.Fences, txn.Write{Key: o.Key, Fence: &txn.Fence{Lock: o.Fence.Lock}})
			}
		}
	}
	if a.Begin {
		tc.Event = c.event(txn.EvBegin)
		// A one-shard execution of this request id (before a split spread
		// its keys) is the outcome to answer: the begin looks for it.
		tc.CheckOneShard = c.req.RequestID != ""
	}
	routeKey := pt.Keys[0].Key
	if a.Begin {
		routeKey = c.rt.Anchor
	}
	hostShard := a.Shard
	if a.Begin {
		hostShard = c.rt.AnchorShard
	}
	v, rd := c.s.withRiders(ctx, hostShard, tc)
	res, err := c.s.txnProposeShared(ctx, routeKey, &fsm.Command{Op: fsm.OpTxnPrepare, Key: routeKey, Value: v})
	rd.settle(ctx, c.s, res, err)
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.part(a.Shard)
	p.Attempts++
	var ws *fsm.WrongShardError
	switch {
	case err != nil:
		c.lastErr = err
		p.Status = txn.PartUnknown
		if a.Begin {
			c.st.Record = txn.RecUnknown
		}
		return
	case errors.As(res.Err, &ws):
		p.Status = txn.PartWrongShard
		return
	case res.Err != nil:
		p.Status = txn.PartUnknown
		return
	}
	t := res.TwoPC
	if a.Begin {
		if t.OneShard != nil {
			c.oneShard = t.OneShard
		}
		c.noteRecord(t.Verdict, t.Record)
		if c.st.Record != txn.RecPending {
			p.Status = txn.PartUnknown // refused: the record moved on
			return
		}
	}
	switch t.Vote {
	case txn.VoteYes:
		p.Status = txn.PartYes
		for _, rd := range t.Reads {
			c.reads[string(rd.Key)] = rd.KV
			if rd.Seq != 0 {
				c.seqs[string(rd.Key)] = rd.Seq
			}
		}
		for i, f := range tc.Fences {
			if i < len(t.Tokens) {
				c.tokens[fenceKey(f.Fence.Lock, f.Key)] = t.Tokens[i]
			}
		}
	case txn.VoteConflict:
		p.Status, p.Blocker = txn.PartConflict, t.Blocker
	case txn.VotePrevented:
		p.Status = txn.PartPrevented
	default:
		p.Status = txn.PartUnknown
	}
}

// noteRecord learns the record's state from a record command's answer.
func (c *txnCoord) noteRecord(v txn.Verdict, rec *txn.Record) {
	if rec != nil {
		c.rec = rec
	}
	switch {
	case v == txn.VerdictCommitted:
		c.st.Record = txn.RecCommitted
	case v == txn.VerdictAborted:
		c.st.Record = txn.RecAborted
	case v == txn.VerdictMissing:
		c.st.Record = txn.RecNone
	case rec == nil:
		c.st.Record = txn.RecUnknown
	case rec.State == txn.Pending:
		c.st.Record = txn.RecPending
	case rec.State == txn.Staging:
		c.st.Record = txn.RecStaging
	case rec.State == txn.Committed:
		c.st.Record = txn.RecCommitted
	case rec.State == txn.Aborted:
		c.st.Record = txn.RecAborted
	}
}

// recordEvent proposes ev on the record and learns its state. A commit or
// abort also resolves the intents on the anchor's shard in the same entry
// (fsm.TxnCommand.ResolveHere): when that covered every key of the anchor's
// participant, it needs no resolve of its own.
func (c *txnCoord) recordEvent(ctx context.Context, ev *txn.Event) {
	cmd := txnRecordCommand(c.id, ev)
	final := ev.Kind == txn.EvCommit || ev.Kind == txn.EvAbort
	if final {
		// An abort also asks for a one-shard execution of the request id
		// (a retry after a split, txn/DESIGN.md): that is the answer then.
		cmd.Value = fsm.EncodeTxnCommand(&fsm.TxnCommand{ID: c.id, Event: ev, ResolveHere: true,
			CheckOneShard: ev.Kind == txn.EvAbort && ev.RequestID != ""})
	}
	res, err := c.s.txnPropose(ctx, c.rt.Anchor, cmd)
	if err != nil || res.Err != nil {
		c.st.Record = txn.RecUnknown
		return
	}
	if final && ev.Kind == txn.EvAbort && ev.RequestID != "" {
		c.lookedUp = true
	}
	if res.TwoPC.OneShard != nil {
		c.oneShard = res.TwoPC.OneShard
	}
	c.noteRecord(res.TwoPC.Verdict, res.TwoPC.Record)
	if len(res.TwoPC.Resolved) == 0 {
		return
	}
	done := map[string]bool{}
	for _, k := range res.TwoPC.Resolved {
		done[string(k)] = true
	}
	for _, w := range res.TwoPC.Written {
		c.writes[string(w.Key)] = w
	}
	c.mu.Lock()
	c.markResolved(res.TwoPC.Resolved...)
	c.mu.Unlock()
	pt := c.rt.Participant(c.rt.AnchorShard)
	for _, k := range pt.Keys {
		if !done[string(k.Key)] {
			return
		}
	}
	if p := c.part(c.rt.AnchorShard); p != nil && p.Status != txn.PartUnsent {
		p.Status = txn.PartResolved
	}
}

func (c *txnCoord) act(ctx context.Context, a txn.Action) {
	switch a.Kind {
	case txn.ActEvaluate:
		out := txn.Execute(c.req, func(k []byte) txn.KeyState { return kvState(c.reads[string(k)]) })
		c.out = &out
		c.st.Evaluated = true
		for _, w := range out.Writes { // a stale fence fails the whole transaction (I11)
			if w.Fence != nil && c.tokens[fenceKey(w.Fence.Lock, w.Key)] > w.Fence.Token {
				c.stale = &fsm.StaleTokenError{Key: w.Key, Lock: w.Fence.Lock, Token: w.Fence.Token,
					Accepted: c.tokens[fenceKey(w.Fence.Lock, w.Key)]}
			}
		}
	case txn.ActCommit:
		if c.stale != nil {
			c.recordEvent(ctx, &txn.Event{Kind: txn.EvAbort, ID: c.id, Anchor: c.rt.Anchor, Cause: txn.CauseCoordinator,
				Now: c.s.cfg.Clock.Now().UnixNano()})
			return
		}
		ev := c.event(txn.EvCommit)
		ev.WriteSet, ev.Succeeded = c.out.Writes, c.out.Succeeded
		c.recordEvent(ctx, ev)
	case txn.ActDecide:
		c.decide(ctx)
	case txn.ActBegin:
		// The prepares outlive a heartbeat interval: the record now exists
		// (Pending), so heartbeats keep the transaction alive; the decide
		// commits from it.
		c.lastHB = c.s.cfg.Clock.Now()
		c.recordEvent(ctx, c.event(txn.EvBegin))
	case txn.ActAbort:
		c.s.log.Debug("txn: coordinator aborts", "txn", c.id, "cause", a.Cause, "parts", fmt.Sprintf("%+v", c.st.Parts),
			"record", c.st.Record, "last_err", c.lastErr)
		ev := c.event(txn.EvAbort)
		ev.Cause = a.Cause
		c.recordEvent(ctx, ev)
	case txn.ActReadRecord, txn.ActHeartbeat:
		// A heartbeat reads the record too: it answers its state, and
		// creates nothing when there is none.
		c.lastHB = c.s.cfg.Clock.Now()
		c.recordEvent(ctx, c.event(txn.EvHeartbeat))
		if c.st.Record == txn.RecNone && a.Kind == txn.ActReadRecord && c.st.Deadline {
			c.reply = txn.ResultUnknown
		}
		if c.decideLost && c.oneShard == nil && !c.redecided && c.part(c.rt.AnchorShard).Attempts < txnMaxAttempts &&
			((c.st.Record == txn.RecCommitted && c.out == nil) ||
				(c.st.Record == txn.RecAborted && c.stale == nil && c.rec != nil && c.rec.Cause == txn.CauseCoordinator)) {
			// Committed or aborted by this coordinator's decide whose
			// answer was lost: the same decide again changes nothing and
			// answers the deciding entry's results, or the stale fence
			// that aborted it, which every replica that applied it keeps
			// a while (fsm/decided.go). Lost again (the leader changed
			// again), the record is read again, and so on.
			c.decide(ctx)
		}
	case txn.ActPush:
		p := c.part(a.Shard)
		if b := p.Blocker; b != nil {
			c.s.pushIntent(ctx, *b, c.prio, c.id)
		}
		p.Status = txn.PartUnknown // prepare again
	case txn.ActReply:
		if a.Result == txn.ResultAborted && c.req.RequestID != "" && c.oneShard == nil && !c.lookedUp {
			// The abort was learned from a begin, a heartbeat or a read
			// of the record, which do not look the request id up: a
			// first send of it may have committed as a one-shard
			// transaction (its answer lost, then a split spread its
			// keys), and "aborted" would invite the caller to run it
			// again as a new one (I7). The coordinator's own abort looks
			// it up (CheckOneShard) and changes nothing on an aborted
			// record; a stored result found is the answer (txnMulti).
			ev := c.event(txn.EvAbort)
			ev.Cause = txn.CauseCoordinator
			c.recordEvent(ctx, ev)
			if !c.lookedUp {
				// Not answered: "aborted" may be wrong, so the client hears
				// an unknown outcome and its retry (the same id) looks
				// again. The record's state learned before stands.
				c.st.Record = txn.RecAborted
				a.Result = txn.ResultUnknown
			}
		}
		c.reply = a.Result
		c.st.Replied = true
		if a.Result == txn.ResultUnknown {
			return
		}
	}
}

// decide sends the anchor's decide (txn/DESIGN.md "The anchor decides"):
// one entry on the anchor's shard evaluates the compares over the anchor's
// keys as it applies and the other participants' states read under their
// intents, checks every fence of the branch taken, and commits, writing the
// anchor's keys directly. Its answer is the record's state; a conflict on
// an anchor key (push, decide again), wrong_shard, or unknown.
func (c *txnCoord) decide(ctx context.Context) {
	pt := c.rt.Participant(c.rt.AnchorShard)
	tc := &fsm.TxnCommand{ID: c.id, Anchor: c.rt.Anchor, Priority: c.prio, Keys: pt.Keys, Request: c.req,
		Event: c.event(txn.EvDecide), CheckOneShard: c.req.RequestID != ""}
	// The decide's Execute reads a state only for a compared key or a get
	// (txn.Execute), and a value only for a value compare: carry exactly
	// that, so a transaction that writes or deletes large values on another
	// shard does not ship them back in its commit entry (which could then
	// exceed the entry and forwarding limits and never commit).
	need := map[string]bool{} // key -> its value is needed
	for _, cm := range c.req.Compare {
		need[string(cm.Key)] = need[string(cm.Key)] || cm.Target == txn.TargetValue
	}
	for _, br := range [][]txn.Op{c.req.Success, c.req.Failure} {
		for _, o := range br {
			if _, ok := need[string(o.Key)]; !ok && o.Kind == txn.OpGet {
				need[string(o.Key)] = false
			}
		}
	}
	for _, p := range c.rt.Participants {
		if p.Shard == c.rt.AnchorShard {
			continue
		}
		for _, k := range p.Keys {
			withValue, ok := need[string(k.Key)]
			if !ok {
				continue
			}
			kv := c.reads[string(k.Key)]
			if kv != nil && !withValue {
				meta := *kv
				meta.Value = nil
				kv = &meta
			}
			tc.States = append(tc.States, fsm.TxnRead{Key: k.Key, KV: kv})
		}
	}
	for fk, tok := range c.tokens {
		lock, key, _ := strings.Cut(fk, "\x00")
		tc.Tokens = append(tc.Tokens, txn.Write{Key: []byte(key), Fence: &txn.Fence{Lock: lock, Token: tok}})
	}
	slices.SortFunc(tc.Tokens, func(a, b txn.Write) int { // a deterministic entry
		return cmp.Or(bytes.Compare(a.Key, b.Key), strings.Compare(a.Fence.Lock, b.Fence.Lock))
	})
	v, rd := c.s.withRiders(ctx, c.rt.AnchorShard, tc)
	res, err := c.s.txnPropose(ctx, c.rt.Anchor, &fsm.Command{Op: fsm.OpTxnRecord, Key: c.rt.Anchor, Value: v})
	if k := c.s.cfg.TxnKnobs; err == nil && k != nil && k.LoseDecideAnswer != nil && k.LoseDecideAnswer(c.id) {
		res, err = nil, fmt.Errorf("decide answer lost by a test knob: %w", shard.ErrOutcomeUnknown)
	}
	rd.settle(ctx, c.s, res, err)
	p := c.part(c.rt.AnchorShard)
	p.Attempts++
	if err == nil && res.Err == nil && c.decideLost {
		c.redecided = true // answered: with the results, or without if its replica has none
	}
	var ws *fsm.WrongShardError
	switch {
	case err != nil:
		c.lastErr, c.decideLost = err, true
		p.Status, c.st.Record = txn.PartUnknown, txn.RecUnknown
		return
	case errors.As(res.Err, &ws):
		p.Status = txn.PartWrongShard
		return
	case res.Err != nil:
		c.lastErr, c.decideLost = res.Err, true
		p.Status, c.st.Record = txn.PartUnknown, txn.RecUnknown
		return
	}
	t := res.TwoPC
	if t.Vote == txn.VoteConflict {
		p.Status, p.Blocker = txn.PartConflict, t.Blocker
		if t.Record != nil && t.Record.State == txn.Pending {
			c.st.Record = txn.RecPending
		}
		return
	}
	c.lookedUp = c.lookedUp || tc.CheckOneShard
	if t.OneShard != nil {
		c.oneShard = t.OneShard
	}
	if t.Stale != nil {
		c.stale = t.Stale
	}
	c.noteRecord(t.Verdict, t.Record)
	if !c.st.Record.Final() {
		p.Status = txn.PartUnknown // refused (a staging record): read it again
		return
	}
	p.Status = txn.PartResolved // the anchor's keys hold no intent of this transaction
	if c.st.Record != txn.RecCommitted || len(t.Reads) == 0 {
		return // aborted, or committed by an earlier decide (its answer lost): a replay, no results
	}
	// This entry committed: the anchor's keys as it read them complete the
	// states, and Execute gives the outcome it applied.
	for _, rd := range t.Reads {
		c.reads[string(rd.Key)] = rd.KV
	}
	out := txn.Execute(c.req, func(k []byte) txn.KeyState { return kvState(c.reads[string(k)]) })
	c.out = &out
	c.st.Evaluated = true
	for _, w := range t.Written {
		c.writes[string(w.Key)] = w
	}
	c.mu.Lock()
	c.markResolved(t.Resolved...)
	c.mu.Unlock()
}

// resolve resolves the participant's intents from the final record, keys
// grouped by the shard that owns them now (a split may have moved some).
func (c *txnCoord) resolve(ctx context.Context, shard uint64) {
	pt := c.rt.Participant(shard)
	c.mu.Lock()
	rec := c.rec
	c.mu.Unlock()
	if rec != nil && rec.State.Final() {
		var err error
		if c.bg {
			// After the reply: nothing waits for the written values.
			err = c.s.resolveBatched(ctx, c.id, pt.Keys, rec)
		} else {
			err = c.s.resolveKeys(ctx, c.id, pt.Keys, rec, func(w fsm.TxnOpResult) {
				c.mu.Lock()
				c.writes[string(w.Key)] = w
				c.mu.Unlock()
			})
		}
		c.resolutionDone(shard, pt.Keys, err)
	} // else nothing to resolve with; a reader or the sweeper resolves later
	c.mu.Lock()
	c.part(shard).Status = txn.PartResolved
	c.mu.Unlock()
}

// resolutionDone notes the outcome of resolving keys on shard: the keys
// whose intents it removed, or the failure (readers that meet the intents
// resolve them).
func (c *txnCoord) resolutionDone(shard uint64, keys []txn.KeyIntent, err error) {
	if err != nil {
		c.s.log.Warn("txn: resolve failed; readers that meet the intents resolve them", "txn", c.id, "shard", shard, "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		c.markResolved(k.Key)
	}
}

// crashBefore reports whether a test's knob (TxnKnobs.BeforeAction) stops
// the coordinator before action a.
func (c *txnCoord) crashBefore(a txn.Action) bool {
	k := c.s.cfg.TxnKnobs
	return k != nil && k.BeforeAction != nil && k.BeforeAction(c.id, a) != nil
}

// markResolved notes keys whose intents a resolution removed (c.mu held by
// the caller when others may run).
func (c *txnCoord) markResolved(keys ...[]byte) {
	if c.resolved == nil {
		c.resolved = map[string]bool{}
	}
	for _, k := range keys {
		c.resolved[string(k)] = true
	}
}

// forgetIfResolved sends EvForget when the record is committed and this
// coordinator's resolutions covered every key of its participants: no
// intent of the transaction is left anywhere, so its anchor may drop the
// record after the dedup window (txn/DESIGN.md "Forgetting a committed
// record"). Otherwise it leaves the record to the sweeper, which resolves
// every participant itself before it forgets.
func (c *txnCoord) forgetIfResolved(ctx context.Context) {
	if rec := c.forgettable(); rec != nil {
		c.s.forgetTxn(ctx, rec)
	}
}

// forgettable is the record when forgetIfResolved would forget it, else
// nil.
func (c *txnCoord) forgettable() *txn.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec
	if rec == nil || rec.State != txn.Committed || rec.Forgotten {
		return nil
	}
	for _, p := range rec.Participants {
		for _, k := range p.Keys {
			if !c.resolved[string(k.Key)] {
				return nil
			}
		}
	}
	return rec
}

// resolveDetached runs the background resolution of the usual case without
// a goroutine of its own, and reports whether it took it: the record is
// final and Plan asks for nothing but resolutions (or is done). Each
// resolution queues on its shard with a continuation (resolveThen), which
// notes the keys it resolved, as resolve does; the last one to finish
// queues the forget the same way when forgetIfResolved would send it. The
// work is what the Plan loop would do in the background (resolve each
// participant once, then forget), minus a goroutine, a timer and two waits
// per transaction. Anything else (a record not final, a heartbeat, a node
// closing) goes to the Plan loop as before.
func (c *txnCoord) resolveDetached() bool {
	c.mu.Lock()
	rec := c.rec
	c.mu.Unlock()
	if rec == nil || !rec.State.Final() || c.s.txnbg.isClosed() {
		return false
	}
	acts := txn.Plan(&c.st)
	if len(acts) == 1 && acts[0].Kind == txn.ActDone {
		acts = nil
	}
	for _, a := range acts {
		if a.Kind != txn.ActResolve {
			return false
		}
	}
	// A test's crash (crashBefore) stops the coordinator before an action
	// exactly as in run: the resolutions decided before it are still sent,
	// and nothing after it (no forget).
	var send []txn.Action
	stopped := false
	for _, a := range acts {
		if stopped = c.crashBefore(a); stopped {
			break
		}
		send = append(send, a)
	}
	done := func() {
		if stopped || c.crashBefore(txn.Action{Kind: txn.ActDone}) {
			return
		}
		if rec := c.forgettable(); rec != nil && !c.s.txnbg.isClosed() {
			c.s.forgetThen(rec, func(err error) { c.s.forgetDone(rec, err) })
		}
	}
	if len(send) == 0 {
		done()
		return true
	}
	var left atomic.Int32
	left.Store(int32(len(send)))
	for _, a := range send {
		keys := c.rt.Participant(a.Shard).Keys
		c.s.resolveThen(c.id, keys, rec, func(err error) {
			c.resolutionDone(a.Shard, keys, err)
			if left.Add(-1) == 0 {
				done()
			}
		})
	}
	return true
}

// forgetTxn proposes EvForget on a committed record whose intents are
// resolved on every participant, batched with other forgets of its anchor's
// shard (txn_batch.go). A failure is harmless: the record stays until the
// sweeper forgets it.
func (s *Server) forgetTxn(ctx context.Context, rec *txn.Record) {
	s.forgetDone(rec, s.forgetBatched(ctx, rec))
}

// forgetDone notes a forget's outcome: a failure leaves the record to the
// sweeper.
func (s *Server) forgetDone(rec *txn.Record, err error) {
	if err != nil {
		s.log.Debug("txn: forget failed; the sweeper forgets the record later", "txn", rec.ID, "err", err)
	}
}

// forgetOne proposes one EvForget, routed by the record's anchor.
func (s *Server) forgetOne(ctx context.Context, rec *txn.Record) error {
	ev := &txn.Event{Kind: txn.EvForget, ID: rec.ID, Anchor: rec.Anchor, Now: s.cfg.Clock.Now().UnixNano()}
	res, err := s.txnPropose(ctx, rec.Anchor, txnRecordCommand(rec.ID, ev))
	if err == nil {
		err = res.Err
	}
	return err
}

// resolveKeys proposes OpTxnResolve for keys, grouped by current owner.
func (s *Server) resolveKeys(ctx context.Context, id string, keys []txn.KeyIntent, rec *txn.Record, written func(fsm.TxnOpResult)) error {
	var lastErr error
	for attempt := 0; attempt < 5 && len(keys) > 0; attempt++ {
		groups := map[uint64][]txn.KeyIntent{}
		var order []uint64
		for _, k := range keys {
			rng, err := s.lookup(k.Key)
			if err != nil {
				return err
			}
			if _, ok := groups[rng.ID]; !ok {
				order = append(order, rng.ID)
			}
			groups[rng.ID] = append(groups[rng.ID], k)
		}
		var left []txn.KeyIntent
		for _, g := range order {
			ks := groups[g]
			res, err := s.txnPropose(ctx, ks[0].Key, &fsm.Command{Op: fsm.OpTxnResolve, Key: ks[0].Key,
				Value: fsm.EncodeTxnCommand(&fsm.TxnCommand{ID: id, Keys: ks, Record: rec.ForKeys(ks), PreparedIndex: true})})
			if err == nil && res.Err != nil {
				err = res.Err
			}
			if err != nil {
				lastErr = err
				left = append(left, ks...)
				continue
			}
			if written != nil {
				for _, w := range res.TwoPC.Written {
					written(w)
				}
			}
		}
		keys = left
		if len(keys) > 0 {
			time.Sleep(txnPushPause)
		}
	}
	if len(keys) > 0 {
		return lastErr
	}
	return nil
}

// pushIntent meets another transaction's intent: push its record (priority
// 0 outside transactions: never aborts a live one); a final record resolves
// the intent's key; a live one pauses the caller a moment.
func (s *Server) pushIntent(ctx context.Context, in txn.Intent, prio uint64, by string) {
	ev := &txn.Event{Kind: txn.EvPush, ID: in.TxnID, Anchor: in.Anchor, Now: s.cfg.Clock.Now().UnixNano(),
		Timeout: txnTimeout, PusherPriority: prio, PusherID: by, PreparedAt: in.PreparedAt, Priority: in.Priority}
	res, err := s.txnPropose(ctx, in.Anchor, txnRecordCommand(in.TxnID, ev))
	if err == nil && res.Err == nil {
		if rec := res.TwoPC.Record; rec != nil && rec.State.Final() {
			s.txnm.intentsMet(true)
			_ = s.resolveKeys(ctx, in.TxnID, []txn.KeyIntent{{Key: in.Key, Access: in.Access}}, rec, nil)
			return
		}
	}
	s.txnm.intentsMet(false)
	select {
	case <-ctx.Done():
	case <-time.After(txnPushPause):
	}
}

// meetIntents runs op until it does not meet an intent, meeting each one
// (pushIntent), for at most the meeting bound: then unavailable.
func (s *Server) meetIntents(ctx context.Context, op func() error) error {
	cfg := txn.DefaultMeetConfig()
	start := time.Now()
	for {
		err := op()
		var ie *fsm.IntentError
		if !errors.As(err, &ie) {
			return err
		}
		if time.Since(start) > cfg.MaxWait || ctx.Err() != nil {
			return fmt.Errorf("%w: %w", err, errIntentWait)
		}
		s.pushIntent(ctx, ie.Intent, 0, "")
	}
}

func kvState(kv *fsm.KV) txn.KeyState {
	if kv == nil {
		return txn.KeyState{}
	}
	return txn.KeyState{Exists: true, Value: kv.Value, CreateIndex: kv.CreateIndex, ModIndex: kv.ModIndex, Version: kv.Version}
}

// replyEarly reports whether the reply may go out before the intents are
// resolved: the record is final and, if committed, every write of the
// branch taken knows the index of the prepare that laid its intent (a
// participant of an older version does not say; then resolution first, and
// the answer carries what it wrote).
func (c *txnCoord) replyEarly() bool {
	if k := c.s.cfg.TxnKnobs; k != nil && k.SyncResolve {
		return false
	}
	switch c.reply {
	case txn.ResultAborted:
		return true
	case txn.ResultCommitted:
	default:
		return false
	}
	if c.rec == nil {
		return false
	}
	if c.out == nil {
		return true // a replay: no results
	}
	for _, o := range c.req.Branch(c.rec.Succeeded) {
		if _, done := c.writes[string(o.Key)]; o.Kind.IsWrite() && c.seqs[string(o.Key)] == 0 && !done {
			return false
		}
	}
	return true
}

// earlyWrite is a write's result as resolution will apply it: the intent
// excluded every other write of the key since its prepare read it, so the
// key then is the key now; the prepare's index is its mod_index (and its
// create_index if it creates the key).
func (c *txnCoord) earlyWrite(o txn.Op) fsm.TxnOpResult {
	r := fsm.TxnOpResult{Kind: o.Kind, Key: o.Key}
	cur := c.reads[string(o.Key)]
	if o.Kind == txn.OpDelete {
		if cur != nil {
			r.Deleted = 1
		}
		return r
	}
	seq := c.seqs[string(o.Key)]
	kv := &fsm.KV{Key: o.Key, CreateIndex: seq, ModIndex: seq, Version: 1, TTL: o.TTL}
	if cur != nil {
		kv.CreateIndex, kv.Version = cur.CreateIndex, cur.Version+1
	}
	r.KV = kv
	return r
}

// answer is the 200 of a committed transaction: its gets as read under the
// intents, its writes as resolution applies them (applied, or about to be).
func (c *txnCoord) answer() txnResponseJSON {
	out := txnResponseJSON{Shards: c.rt.Shards(), ID: c.id, Results: []txnOpResultJSON{}}
	if c.rec != nil {
		out.Succeeded = c.rec.Succeeded
	}
	if c.out == nil {
		out.Replay = true // an earlier attempt with this request id committed
		return out
	}
	for _, o := range c.req.Branch(out.Succeeded) {
		r := fsm.TxnOpResult{Kind: o.Kind, Key: o.Key}
		switch o.Kind {
		case txn.OpGet:
			r.KV = c.reads[string(o.Key)]
		default:
			if w, ok := c.writes[string(o.Key)]; ok {
				r = w
			} else if c.seqs[string(o.Key)] != 0 {
				r = c.earlyWrite(o)
			}
		}
		out.Results = append(out.Results, txnOpResult(r))
	}
	return out
}

// oneShardAnswer is the answer of a retry whose request id already ran as a
// one-shard transaction: that execution's stored result, as a one-shard
// retry gets it from the dedup table, marked as a replay. A stale fence
// that refused it is the error it was.
func (c *txnCoord) oneShardAnswer(r *fsm.Result) (txnResponseJSON, error) {
	if r.Err != nil {
		return txnResponseJSON{}, r.Err
	}
	out := txnResponseJSON{Shards: c.rt.Shards(), ID: c.id, Replay: true, Results: []txnOpResultJSON{}}
	if r.Txn != nil {
		out.Succeeded = r.Txn.Succeeded
		for _, o := range r.Txn.Ops {
			out.Results = append(out.Results, txnOpResult(o))
		}
	}
	return out, nil
}

// txnRecordCommand is the OpTxnRecord command of an event on record id.
func txnRecordCommand(id string, ev *txn.Event) *fsm.Command {
	return &fsm.Command{Op: fsm.OpTxnRecord, Key: ev.Anchor, Value: fsm.EncodeTxnCommand(&fsm.TxnCommand{ID: id, Event: ev})}
}

// txnBackground runs the resolutions that outlive their request (a
// coordinator that replied at the commit point): each is detached from the
// request, bounded by its timeout, and ended by Close, which waits for them
// so a node's shutdown leaks none.
type txnBackground struct {
	mu     sync.Mutex
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// spawn runs f in the background with a context bounded by timeout (0: by
// close only); after close it does nothing (the intents are left to readers
// and the sweeper).
func (b *txnBackground) spawn(timeout time.Duration, f func(ctx context.Context)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	if b.ctx == nil {
		b.ctx, b.cancel = context.WithCancel(context.Background())
	}
	// One context: a second one made over the first would leave the
	// first's cancel unreachable, a child of b.ctx until close.
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(b.ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(b.ctx)
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer cancel()
		f(ctx)
	}()
	return true
}

// isClosed reports whether close was called.
func (b *txnBackground) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// close cancels every background resolution and waits for them to return.
func (b *txnBackground) close() {
	b.mu.Lock()
	b.closed = true
	if b.cancel != nil {
		b.cancel()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// reroute routes the request again after a participant's command met
// wrong_shard (a split moved some of its keys between the routing and the
// command, which applied nothing), and reports whether the coordinator now
// runs on the new routing. It waits, within txnRerouteWait, for this node's
// range map to show the change. Only before any record is written: the
// compare path writes none before the anchor's decide, and the decide that
// met wrong_shard wrote nothing, so the record is written once, with the
// participants it commits. A participant whose shard and keys are unchanged
// keeps what it has (its vote, the states it read); every other one is
// prepared afresh. Intents an earlier prepare laid moved with their keys
// (a split copies them), and a prepare that finds its own intents answers
// the same, so preparing again is safe; the resolution then covers the new
// participants, which hold every key the transaction locked.
func (c *txnCoord) reroute(ctx context.Context) bool {
	if (c.st.Record != txn.RecNone && c.st.Record != txn.RecPending) || c.reroutes >= txnMaxReroutes {
		return false
	}
	for _, p := range c.st.Parts {
		if p.Status == txn.PartSent || p.Resolving {
			return false // actions run synchronously: never, but keep it so
		}
	}
	deadline := time.Now().Add(txnRerouteWait)
	if d, ok := ctx.Deadline(); ok && d.Add(-time.Second).Before(deadline) {
		deadline = d.Add(-time.Second) // as run's own deadline: leave time to abort and resolve
	}
	for {
		rt, err := txn.Route(c.req, c.s.txnLookup)
		if err == nil && !sameRouting(&rt, &c.rt) {
			if rt.SingleShard() {
				return false // the keys came together (nothing merges ranges today)
			}
			c.useRouting(rt)
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(txnPushPause):
		}
	}
}

// useRouting makes rt the transaction's routing (reroute). A participant
// whose shard and keys are unchanged keeps its state; every other one is
// prepared (or, the anchor's, decided) again: unsent, or unknown when one
// of its keys may hold an intent of an earlier prepare (the split moved it
// with the key), so that an abort before the new prepare answers still
// resolves it (txn.PartState.MayHoldIntents, which txn.Plan resolves).
func (c *txnCoord) useRouting(rt txn.Routing) {
	c.mu.Lock()
	defer c.mu.Unlock()
	mayHold := map[string]bool{} // keys an earlier prepare may have locked
	for _, old := range c.rt.Participants {
		if prev := c.part(old.Shard); prev != nil && prev.MayHoldIntents() {
			for _, k := range old.Keys {
				mayHold[string(k.Key)] = true
			}
		}
	}
	parts := make([]txn.PartState, 0, len(rt.Participants))
	for _, p := range rt.Participants {
		ps := txn.PartState{Shard: p.Shard}
		if old, prev := c.rt.Participant(p.Shard), c.part(p.Shard); old != nil && prev != nil &&
			slices.EqualFunc(old.Keys, p.Keys, sameKeyIntent) && prev.Status != txn.PartWrongShard {
			ps = *prev
		} else {
			for _, k := range p.Keys {
				if mayHold[string(k.Key)] {
					ps.Status = txn.PartUnknown
					break
				}
			}
		}
		parts = append(parts, ps)
	}
	c.reroutes++
	c.rt = rt
	c.st.AnchorShard = rt.AnchorShard
	c.st.Parts = parts
	c.s.txnm.reroute()
}

// sameRouting reports whether a and b split the transaction alike: the same
// anchor shard and participants, with the same keys. Epochs are left out: a
// membership change moves one without moving keys, and the commands are not
// checked against the epoch they were routed with.
func sameRouting(a, b *txn.Routing) bool {
	return a.AnchorShard == b.AnchorShard && slices.EqualFunc(a.Participants, b.Participants,
		func(x, y txn.Participant) bool {
			return x.Shard == y.Shard && slices.EqualFunc(x.Keys, y.Keys, sameKeyIntent)
		})
}

func sameKeyIntent(x, y txn.KeyIntent) bool { return x.Access == y.Access && bytes.Equal(x.Key, y.Key) }
