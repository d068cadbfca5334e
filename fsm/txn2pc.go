package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/bbolt"

	"github.com/cairndb/cairn/internal/wire"
	"github.com/cairndb/cairn/txn"
)

// Multi-shard transactions: the participant side of the two-phase commit
// (txn/DESIGN.md "Several shards"). Three commands, each one raft entry:
//
//   - OpTxnPrepare places the transaction's intents on this shard's keys,
//     all or none (txn.PrepareDecision), and reads the keys under them; the
//     anchor's prepare also carries EvBegin and creates the record Pending in
//     the same entry (a record already final refuses the prepare);
//   - OpTxnRecord applies one txn.Event (commit, abort, heartbeat, push,
//     forget) to the record with txn.NextRecord: each is a conditional write,
//     ordered by the anchor shard's log; with ResolveHere, the event that
//     makes the record final also resolves its intents on this shard's keys;
//     an aborted record, or a committed one once forgotten, is dropped a
//     dedup window later (pruneTxn);
//   - OpTxnResolve resolves the transaction's intents on keys of this shard
//     from its final record (txn.ResolveIntent: apply the committed write,
//     drop the intent) and leaves a tombstone so a late prepare is refused.
//
// Intents live in bucket txn-intents keyed by key (a list per key), records
// in txn-records keyed by transaction id, tombstones in txn-tombstones keyed
// by id. A split moves intents with their keys, records with their anchor,
// and copies tombstones to both halves. Single-key commands and one-shard
// transactions that meet a conflicting intent are refused with
// *IntentError: the API meets it (reads the record, resolves or pushes) and
// tries again.

// IntentError refuses a command that met another transaction's conflicting
// intent (txn.Conflict). Not stored in the dedup window: the retry after the
// meeting executes the command.
type IntentError struct {
	Key    []byte
	Intent txn.Intent
}

func (e *IntentError) Error() string {
	return fmt.Sprintf("key %q holds an intent of transaction %s", e.Key, e.Intent.TxnID)
}

// TxnCommand is the Value of OpTxnPrepare, OpTxnRecord and OpTxnResolve.
type TxnCommand struct {
	ID       string
	Anchor   []byte
	Priority uint64
	// Keys: prepare — the intents to place; resolve — the keys whose
	// intents of ID to resolve.
	Keys []txn.KeyIntent
	// Fences: prepare — the (lock, key) of fenced writes of either branch
	// on this shard; the answer carries each one's accepted token, so the
	// coordinator can refuse a stale fence before committing.
	Fences []txn.Write
	// Event: record — the event; prepare — EvBegin on the anchor's shard.
	Event *txn.Event
	// Record: resolve — the final record.
	Record *txn.Record
	// Unlocked: prepare — keys read without an intent. Only the test knob
	// that skips read intents (api.TxnKnobs.SkipReadIntents) sets it.
	Unlocked [][]byte
	// PreparedIndex: resolve — a committed write takes the index of the
	// prepare entry that laid its intent (txn.Intent.PreparedSeq) as its
	// mod_index (and create_index when it creates the key), not the resolve
	// entry's: the coordinator told its client that index before resolving
	// (txn/DESIGN.md "Replying at the commit point"). Resolve entries
	// without it (written before it existed) keep the resolve entry's index,
	// so replaying an old log gives the state it gave then.
	PreparedIndex bool
	// ResolveHere: record — if this event makes the record final, the same
	// entry resolves the transaction's intents on the keys of its
	// participants that this shard owns (the anchor's own keys, usually),
	// as an OpTxnResolve with PreparedIndex would: one raft entry fewer
	// per transaction. Old entries without it leave them to a resolve.
	ResolveHere bool
	// CheckOneShard: record with EvDecide, and prepare with EvBegin (older
	// coordinators) — first look the event's request
	// id up in this shard's dedup table: if a one-shard execution of it
	// (OpTxn) is there, the transaction already ran once, before a split
	// spread its keys over several shards (the split copies the dedup
	// table to both halves). The prepare then lays no intent, writes the
	// record Aborted (so intents the other participants' prepares lay are
	// resolved as aborted by anyone who meets them), and answers the stored
	// result (TxnCmdResult.OneShard): a retry answers the recorded outcome,
	// never a second application (I7). Entries without it (written before
	// it existed) do not look, so replaying an old log gives the state it
	// gave then. Record with EvAbort: the abort applies as always, and the
	// answer carries the stored result too (a retry whose prepare met the
	// tombstone of an earlier attempt aborts without reaching the decide).
	CheckOneShard bool
	// Batch: resolve — more resolutions (each an ID, its Keys, its final
	// Record, PreparedIndex) applied in the same entry after this one's:
	// the resolutions of many transactions on one shard cost one raft
	// entry. Every key of every one must be in the range, or nothing is
	// applied (WrongShardError). Record — more EvForget events (each an ID
	// and its Event) applied after this one's: the forgets of many
	// transactions anchored on one shard cost one raft entry. Every anchor
	// must be in the range, or nothing is applied.
	Batch []*TxnCommand
	// Request, States, Tokens: record with EvDecide (the anchor decides,
	// txn/DESIGN.md "The anchor decides") — the request to evaluate, the
	// state of every key of the other participants as their prepares read
	// it under their intents, and the token each of those participants
	// accepted for a fenced key (txn.Write{Key, Fence{Lock, Token}}). Keys
	// are the anchor participant's keys, which the decide reads, checks for
	// other transactions' intents and writes directly.
	Request *txn.Request
	States  []TxnRead
	Tokens  []txn.Write
	// Riders: prepare and record (command level 2) — other transactions'
	// background work on this shard carried by this entry (txn/DESIGN.md
	// "Riders"): resolutions (an ID, its Keys, its final Record,
	// PreparedIndex) and forgets (an ID and its EvForget Event). Each is
	// applied on its own, before this command, exactly as its own entry
	// would apply it; one whose keys or anchor this shard does not own, or
	// that is not a resolution or a forget, is skipped and its position
	// answered in TxnCmdResult.RidersRefused. The riders apply whenever the
	// command decodes and its own Keys, Unlocked and Batch are in the range,
	// whatever its outcome after that (a conflict, an anchor elsewhere);
	// otherwise none applies and the answer has no count.
	Riders []*TxnCommand
}

// TxnCmdResult is the outcome of a 2PC command.
type TxnCmdResult struct {
	Vote    txn.Vote    // prepare (0 when a begin was refused)
	Blocker *txn.Intent // prepare: the conflicting intent (VoteConflict)
	Reads   []TxnRead   // prepare: every key's state under the intents (VoteYes)
	Tokens  []uint64    // prepare: accepted token per TxnCommand.Fences entry (0: none)
	Verdict txn.Verdict // record; prepare with begin
	Record  *txn.Record // record: after the event
	Written []TxnOpResult
	// Resolved: record with ResolveHere — the keys whose intents of the
	// transaction this entry resolved (Written: what it wrote).
	Resolved [][]byte
	// OneShard: prepare with CheckOneShard — the stored result of the
	// one-shard execution of the event's request id (a TxnResult, or the
	// StaleTokenError that refused it). The prepare laid no intent and
	// aborted the record (Verdict, Record). Decide with CheckOneShard: the
	// same.
	OneShard *Result
	// Stale: decide — a write of the branch taken had a stale fence: the
	// decide wrote the record Aborted and nothing else (I11).
	Stale *StaleTokenError
	// Riders: how many of TxnCommand.Riders this entry looked at (all of
	// them: a sender that counts fewer, a replica that knows no riders,
	// sends them again); RidersRefused: the positions of those it skipped.
	Riders        int
	RidersRefused []int
}

// EncodeStoredResult and DecodeStoredResult carry a TxnCmdResult.OneShard
// between nodes, in the dedup table's encoding.
func EncodeStoredResult(r *Result) []byte { return encodeResult(r) }

// DecodeStoredResult decodes EncodeStoredResult's bytes.
func DecodeStoredResult(b []byte) (*Result, error) { return decodeResult(b) }

// oneShardResult returns the stored result of a one-shard transaction
// (OpTxn) executed with request id rid on this shard (or on the range it
// was split from), nil when there is none.
func (c *applyCtx) oneShardResult(rid string) (*Result, error) {
	if rid == "" {
		return nil, nil
	}
	r, err := c.lookupDedup(rid)
	if r == nil || err != nil {
		return nil, err
	}
	var se *StaleTokenError
	if r.Txn == nil && !errors.As(r.Err, &se) {
		return nil, nil // another kind of command used this request id
	}
	return r, nil
}

// TxnRead is one key as a prepare read it (KV nil: absent).
type TxnRead struct {
	Key []byte
	KV  *KV
	// Seq: the index of the prepare entry that laid the transaction's
	// intent on Key (txn.Intent.PreparedSeq: the first prepare's, for a
	// retried one); 0 for a key read without an intent. A committed write
	// of Key takes it as its mod_index when resolved with PreparedIndex.
	Seq uint64
}

var (
	bucketIntents    = []byte("txn-intents")    // key -> repeated txn.EncodeIntent
	bucketRecords    = []byte("txn-records")    // txn id -> txn.EncodeRecord
	bucketTombstones = []byte("txn-tombstones") // txn id -> final state byte
	// bucketTxnGC orders prunable records and tombstones by the proposer
	// time they became so (an aborted record: final; a committed one:
	// forgotten; a tombstone: written): 8-byte time, 'r' or 't', txn id ->
	// empty. They are dropped after the dedup window, as dedup entries are
	// (pruneTxn).
	bucketTxnGC = []byte("txn-gc")
)

// intents returns the intents stored on key.
func loadIntents(b *bbolt.Bucket, key []byte) ([]txn.Intent, error) {
	v := b.Get(key)
	if v == nil {
		return nil, nil
	}
	var out []txn.Intent
	err := walkFields(v, func(field, wt, _ uint64, p []byte) error {
		if field != 1 {
			return nil
		}
		in, err := txn.DecodeIntent(p)
		if err != nil {
			return err
		}
		out = append(out, *in)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: intents of %q: %v", errCorrupt, key, err)
	}
	return out, nil
}

func storeIntents(b *bbolt.Bucket, key []byte, ins []txn.Intent) error {
	if len(ins) == 0 {
		return b.Delete(key)
	}
	var v []byte
	for i := range ins {
		v = wire.AppendBytesAlways(v, 1, txn.EncodeIntent(&ins[i]))
	}
	return b.Put(key, v)
}

// conflictOn returns the first intent on key that an access by txn `by`
// ("" outside transactions) conflicts with.
func (c *applyCtx) conflictOn(by string, a txn.Access, key []byte) (*IntentError, error) {
	ins, err := loadIntents(c.b.intents, key)
	if err != nil {
		return nil, err
	}
	for _, in := range ins {
		if txn.Conflict(by, a, in) {
			return &IntentError{Key: cloneBytes(key), Intent: in}, nil
		}
	}
	return nil, nil
}

// blockedByIntent checks a single-key command against intents: a write (an
// expiry too: a transaction that read the key must still see it at its
// commit) conflicts with any intent of another transaction, a fenced read
// with write intents.
func (c *applyCtx) blockedByIntent(cmd *Command, index uint64) (*Result, error) {
	a := txn.AccessWrite
	switch cmd.Op {
	case OpPut, OpDelete, OpExpire:
	case OpFencedGet:
		a = txn.AccessRead
	default:
		return nil, nil
	}
	ie, err := c.conflictOn("", a, cmd.Key)
	if ie == nil || err != nil {
		return nil, err
	}
	return &Result{Index: index, Err: ie}, nil
}

func (c *applyCtx) loadRecord(id string) (*txn.Record, error) {
	v := c.b.records.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	r, err := txn.DecodeRecord(v)
	if err != nil {
		return nil, fmt.Errorf("%w: txn record %q: %v", errCorrupt, id, err)
	}
	return r, nil
}

// recordEvent applies ev to the record ID (a conditional write, I8).
func (c *applyCtx) recordEvent(ev txn.Event, now int64) (*txn.Record, txn.Effects, error) {
	rec, err := c.loadRecord(ev.ID)
	if err != nil {
		return nil, txn.Effects{}, err
	}
	return c.recordEventOn(rec, ev, now)
}

// recordEventOn is recordEvent on rec, the record ID as this entry has
// already loaded it (nil: none) and not changed since.
func (c *applyCtx) recordEventOn(rec *txn.Record, ev txn.Event, now int64) (*txn.Record, txn.Effects, error) {
	next, eff := txn.NextRecord(rec, ev)
	if eff.Changed && next != nil {
		if err := c.b.records.Put([]byte(ev.ID), txn.EncodeRecord(next)); err != nil {
			return nil, eff, err
		}
		if prunable(next) && (rec == nil || !prunable(rec)) {
			if err := c.b.txnGC.Put(txnGCKey(now, 'r', ev.ID), []byte{}); err != nil {
				return nil, eff, err
			}
		}
	}
	return next, eff, nil
}

// prunable reports whether a record may be dropped after the dedup window:
// an aborted one (a missing record reads as aborted), or a committed one
// once forgotten (txn.EvForget: every participant is resolved). A committed
// record that is not forgotten is kept: a push on one of its intents left
// on another shard would find no record and abort a committed transaction
// (I8, txn/DESIGN.md "Forgetting a committed record").
func prunable(r *txn.Record) bool {
	return r.State == txn.Aborted || (r.State == txn.Committed && r.Forgotten)
}

func txnGCKey(t int64, kind byte, id string) []byte {
	return append(append(timeKey(t), kind), id...)
}

// pruneTxn drops up to maxPrunePerCommand records and tombstones queued
// before cutoff (the command's time minus the dedup window: never the local
// clock, I3): an aborted record is queued when it becomes final, a committed
// one when it is forgotten (prunable), a tombstone when it is written. A
// retry with the same request id after that runs as a new transaction, as a
// single write's retry after its dedup entry is pruned does; a late prepare
// meets no tombstone, and its intent, whose record is gone, is aborted by the
// first reader that pushes it (every intent of a forgotten transaction was
// resolved, so that intent is a duplicate and aborting it loses nothing).
// A queued record that is not prunable now (committed and not forgotten:
// queued by a binary that predates EvForget) is kept and only its queue
// entry dropped; its forget queues it again.
func (c *applyCtx) pruneTxn(now int64) error {
	if now <= 0 {
		return nil
	}
	limit := timeKey(now - c.window)
	var victims [][]byte
	cur := c.b.txnGC.Cursor()
	for k, _ := cur.First(); k != nil && len(victims) < maxPrunePerCommand; k, _ = cur.Next() {
		if len(k) < 9 || string(k[:8]) >= string(limit) {
			break
		}
		victims = append(victims, cloneBytes(k))
	}
	for _, k := range victims {
		id := k[9:]
		b := c.b.records
		if k[8] == 't' {
			b = c.b.tombstones
		} else {
			rec, err := c.loadRecord(string(id))
			if err != nil {
				return err
			}
			if rec != nil && !prunable(rec) {
				b = nil
			}
		}
		if b != nil {
			if err := b.Delete(id); err != nil {
				return err
			}
		}
		if err := c.b.txnGC.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (c *applyCtx) decodeTxnCommand(cmd *Command, index uint64) (*TxnCommand, *Result) {
	tc, err := DecodeTxnCommand(cmd.Value)
	if err != nil {
		return nil, &Result{Index: index, Err: err}
	}
	wrong := func(k []byte) *Result {
		return &Result{Index: index, Err: &WrongShardError{Key: cloneBytes(k), Range: cloneRange(c.rng)}}
	}
	if k := c.outside(tc.Keys); k != nil {
		return nil, wrong(k)
	}
	for _, k := range tc.Unlocked {
		if !c.rng.Contains(k) {
			return nil, wrong(k)
		}
	}
	for _, b := range tc.Batch {
		if k := c.outside(b.Keys); k != nil {
			return nil, wrong(k)
		}
	}
	return tc, nil
}

// outside returns the first of keys this shard's range does not hold, nil
// when it holds them all.
func (c *applyCtx) outside(keys []txn.KeyIntent) []byte {
	for _, k := range keys {
		if !c.rng.Contains(k.Key) {
			return k.Key
		}
	}
	return nil
}

// applyRiders applies the riders tc carries (TxnCommand.Riders), each on
// its own, and returns the positions of those it skipped: a rider this
// shard does not wholly own, or that is neither a resolution from a final
// record nor a forget.
func (c *applyCtx) applyRiders(tc *TxnCommand, index uint64, now int64) (refused []int, err error) {
	for i, r := range tc.Riders {
		switch {
		case r.Event != nil && r.Event.Kind == txn.EvForget && r.Event.ID == r.ID && len(r.Keys) == 0 && r.Record == nil:
			if !c.rng.Contains(r.Event.Anchor) {
				refused = append(refused, i)
				continue
			}
			if _, _, err := c.recordEvent(*r.Event, now); err != nil {
				return nil, err
			}
		case r.Event == nil && r.Record != nil && r.Record.State.Final() && r.Record.ID == r.ID && len(r.Keys) > 0:
			if c.outside(r.Keys) != nil {
				refused = append(refused, i)
				continue
			}
			if _, err := c.resolveIntents(r.ID, r.Keys, r.Record, index, r.PreparedIndex, now); err != nil {
				return nil, err
			}
		default:
			refused = append(refused, i)
		}
	}
	return refused, nil
}

// answerRiders stamps a 2PC answer with what applyRiders did.
func answerRiders(tc *TxnCommand, refused []int, out *Result) {
	if len(tc.Riders) > 0 && out != nil && out.TwoPC != nil {
		out.TwoPC.Riders, out.TwoPC.RidersRefused = len(tc.Riders), refused
	}
}

// withRiders decodes a prepare or record command, applies its riders, then
// body, and answers what both did.
func (c *applyCtx) withRiders(cmd *Command, index uint64, body func(*TxnCommand, *Command, uint64) (*Result, error)) (*Result, error) {
	tc, bad := c.decodeTxnCommand(cmd, index)
	if bad != nil {
		return bad, nil
	}
	refused, err := c.applyRiders(tc, index, cmd.Time)
	if err != nil {
		return nil, err
	}
	out, err := body(tc, cmd, index)
	answerRiders(tc, refused, out)
	return out, err
}

// txnPrepare applies an OpTxnPrepare: its riders, then the prepare.
func (c *applyCtx) txnPrepare(cmd *Command, index uint64) (*Result, error) {
	return c.withRiders(cmd, index, c.prepare)
}

func (c *applyCtx) prepare(tc *TxnCommand, cmd *Command, index uint64) (*Result, error) {
	res := &TxnCmdResult{}
	if tc.Event != nil {
		if !c.rng.Contains(tc.Event.Anchor) {
			return &Result{Index: index, Err: &WrongShardError{Key: cloneBytes(tc.Event.Anchor), Range: cloneRange(c.rng)}}, nil
		}
		if tc.CheckOneShard && tc.Event.Kind == txn.EvBegin {
			one, err := c.oneShardResult(tc.Event.RequestID)
			if err != nil {
				return nil, err
			}
			if one != nil {
				ev := *tc.Event
				ev.Kind, ev.Cause = txn.EvAbort, txn.CauseCoordinator
				rec, eff, err := c.recordEvent(ev, cmd.Time)
				if err != nil {
					return nil, err
				}
				res.Verdict, res.Record, res.OneShard = eff.Verdict, rec, one
				return &Result{Index: index, TwoPC: res}, nil // no intents
			}
		}
		rec, eff, err := c.recordEvent(*tc.Event, cmd.Time)
		if err != nil {
			return nil, err
		}
		res.Verdict, res.Record = eff.Verdict, rec
		if eff.Verdict != txn.VerdictOK || rec == nil || rec.State != txn.Pending {
			return &Result{Index: index, TwoPC: res}, nil // the record moved on: no intents
		}
	}
	var loadErr error
	existing := func(key []byte) []txn.Intent {
		ins, err := loadIntents(c.b.intents, key)
		if err != nil && loadErr == nil {
			loadErr = err
		}
		return ins
	}
	prevented := c.b.tombstones.Get([]byte(tc.ID)) != nil
	vote, blocker := txn.PrepareDecision(tc.ID, tc.Keys, existing, prevented)
	if loadErr != nil {
		return nil, loadErr
	}
	res.Vote, res.Blocker = vote, blocker
	if vote != txn.VoteYes {
		return &Result{Index: index, TwoPC: res}, nil
	}
	for _, k := range tc.Keys {
		ins := existing(k.Key)
		mine := -1
		for i := range ins {
			if ins[i].TxnID == tc.ID {
				mine = i
			}
		}
		seq := index
		if mine >= 0 { // a retried prepare
			ins[mine].Access = max(ins[mine].Access, k.Access)
			seq = ins[mine].PreparedSeq
		} else {
			ins = append(ins, txn.Intent{TxnID: tc.ID, Key: k.Key, Access: k.Access, Anchor: tc.Anchor,
				Priority: tc.Priority, PreparedAt: cmd.Time, PreparedSeq: index})
		}
		if err := storeIntents(c.b.intents, k.Key, ins); err != nil {
			return nil, err
		}
		kv, err := c.load(k.Key)
		if err != nil {
			return nil, err
		}
		res.Reads = append(res.Reads, TxnRead{Key: k.Key, KV: kv, Seq: seq})
	}
	if loadErr != nil {
		return nil, loadErr
	}
	for _, k := range tc.Unlocked {
		kv, err := c.load(k)
		if err != nil {
			return nil, err
		}
		res.Reads = append(res.Reads, TxnRead{Key: k, KV: kv})
	}
	for _, f := range tc.Fences {
		var tok uint64
		if f.Fence != nil {
			fk := append(append(append([]byte(nil), f.Fence.Lock...), 0), f.Key...)
			if v := c.b.fence.Get(fk); len(v) == 8 {
				tok = be64(v)
			}
		}
		res.Tokens = append(res.Tokens, tok)
	}
	return &Result{Index: index, TwoPC: res}, nil
}

// txnRecord applies an OpTxnRecord: its riders, then one event on the
// record.
func (c *applyCtx) txnRecord(cmd *Command, index uint64) (*Result, error) {
	return c.withRiders(cmd, index, c.record)
}

func (c *applyCtx) record(tc *TxnCommand, cmd *Command, index uint64) (*Result, error) {
	if tc.Event == nil {
		return &Result{Index: index, Err: fmt.Errorf("%w: txn record command without an event", ErrInvalidCommand)}, nil
	}
	if !c.rng.Contains(tc.Event.Anchor) || !bytes.Equal(tc.Event.Anchor, cmd.Key) {
		return &Result{Index: index, Err: &WrongShardError{Key: cloneBytes(tc.Event.Anchor), Range: cloneRange(c.rng)}}, nil
	}
	if tc.Event.Kind == txn.EvDecide {
		return c.txnDecide(tc, cmd, index)
	}
	for _, b := range tc.Batch { // forgets only (api/txn_batch.go): all or nothing
		if b.Event == nil || b.Event.Kind != txn.EvForget || tc.Event.Kind != txn.EvForget {
			return &Result{Index: index, Err: fmt.Errorf("%w: a record batch holds forgets only", ErrInvalidCommand)}, nil
		}
		if !c.rng.Contains(b.Event.Anchor) {
			return &Result{Index: index, Err: &WrongShardError{Key: cloneBytes(b.Event.Anchor), Range: cloneRange(c.rng)}}, nil
		}
	}
	rec, eff, err := c.recordEvent(*tc.Event, cmd.Time)
	if err != nil {
		return nil, err
	}
	for _, b := range tc.Batch {
		if _, _, err := c.recordEvent(*b.Event, cmd.Time); err != nil {
			return nil, err
		}
	}
	res := &TxnCmdResult{Verdict: eff.Verdict, Record: rec}
	if tc.CheckOneShard && tc.Event.Kind == txn.EvAbort {
		// The coordinator gives up (a prepare of a retry met the tombstone
		// an earlier attempt's resolution left, say): if the request id
		// ran as a one-shard transaction here, that is the answer (I7).
		// Only the answer changes, not the state.
		if res.OneShard, err = c.oneShardResult(tc.Event.RequestID); err != nil {
			return nil, err
		}
	}
	if tc.ResolveHere && eff.Changed && rec != nil && rec.State.Final() {
		// Final states never change, so this entry is the one that made
		// it final: resolve the intents on this shard's keys now.
		var keys []txn.KeyIntent
		for _, p := range rec.Participants {
			for _, k := range p.Keys {
				if c.rng.Contains(k.Key) {
					keys = append(keys, k)
				}
			}
		}
		if len(keys) > 0 {
			r, err := c.resolveIntents(tc.ID, keys, rec, index, true, cmd.Time)
			if err != nil {
				return nil, err
			}
			res.Written = r.Written
			for _, k := range keys {
				res.Resolved = append(res.Resolved, k.Key)
			}
		}
	}
	if err := c.pruneTxn(cmd.Time); err != nil {
		return nil, err
	}
	return &Result{Index: index, TwoPC: res}, nil
}

// txnDecide applies a decide (OpTxnRecord with EvDecide): the anchor
// decides (txn/DESIGN.md "The anchor decides"). In one apply, in this
// order: the one-shard replay of the request id (CheckOneShard: the record
// is aborted and the stored result answered, as the begin-prepare did); the
// record (final: its verdict, nothing applied; Staging: refused, stale); an
// intent of another transaction on an anchor key (conflict: nothing
// written, the blocker answered); the compares over the anchor's keys as
// this apply reads them and the other participants' States; the fences of
// the branch's writes (the anchor's against this shard, the others' against
// Tokens; a stale one aborts the record); then the record Committed (the
// commit point), the anchor's writes applied directly at this entry's index,
// and this transaction's intents on the other keys this shard owns resolved.
// Deterministic (I3): it reads only the entry and the stored state.
func (c *applyCtx) txnDecide(tc *TxnCommand, cmd *Command, index uint64) (*Result, error) {
	ev := *tc.Event
	res := &TxnCmdResult{}
	done := func() (*Result, error) {
		if err := c.pruneTxn(cmd.Time); err != nil {
			return nil, err
		}
		return &Result{Index: index, TwoPC: res}, nil
	}
	abort := func() error {
		a := ev
		a.Kind, a.Cause = txn.EvAbort, txn.CauseCoordinator
		rec, eff, err := c.recordEvent(a, cmd.Time)
		res.Verdict, res.Record = eff.Verdict, rec
		if err == nil && eff.Changed && rec != nil && rec.State.Final() {
			err = c.leaveTombstone(tc.ID, rec.State, cmd.Time)
		}
		return err
	}
	if tc.CheckOneShard {
		one, err := c.oneShardResult(ev.RequestID)
		if err != nil {
			return nil, err
		}
		if one != nil {
			res.OneShard = one
			if err := abort(); err != nil {
				return nil, err
			}
			return done()
		}
	}
	rec, err := c.loadRecord(ev.ID)
	if err != nil {
		return nil, err
	}
	if rec != nil && rec.State != txn.Pending {
		// Final (a retry, or a push that got there first) or Staging (not
		// this path's): the transition answers, and changes nothing.
		_, eff := txn.NextRecord(rec, ev)
		res.Verdict, res.Record = eff.Verdict, rec
		if rec.State.Final() && tc.Request != nil && c.decided != nil {
			// A decide whose answer was lost: its results (committed) or
			// its stale fence (aborted), if this replica has them.
			c.decided.get(tc, res)
		}
		return done()
	}
	if tc.Request == nil {
		return &Result{Index: index, Err: fmt.Errorf("%w: decide without its request", ErrInvalidCommand)}, nil
	}
	mine := map[string]bool{}   // anchor keys
	holds := map[string]bool{}  // anchor keys holding an intent of this transaction (dropped at commit)
	seen := map[string]*KV{}    // anchor keys as this apply reads them
	for _, k := range tc.Keys { // in command order: the blocker is deterministic (I3)
		ins, err := loadIntents(c.b.intents, k.Key)
		if err != nil {
			return nil, err
		}
		for _, in := range ins {
			if in.TxnID == tc.ID {
				holds[string(k.Key)] = true
			} else if txn.Conflict(tc.ID, k.Access, in) {
				res.Vote, res.Blocker, res.Record = txn.VoteConflict, &in, rec
				return done()
			}
		}
		kv, err := c.load(k.Key)
		if err != nil {
			return nil, err
		}
		mine[string(k.Key)], seen[string(k.Key)] = true, kv
	}
	others := map[string]*KV{}
	for _, st := range tc.States {
		others[string(st.Key)] = st.KV
	}
	var missing []byte
	out := txn.Execute(tc.Request, func(key []byte) txn.KeyState {
		if kv, ok := seen[string(key)]; ok {
			return keyState(kv)
		}
		kv, ok := others[string(key)]
		if !ok && missing == nil {
			missing = key
		}
		return keyState(kv)
	})
	if missing != nil {
		return &Result{Index: index, Err: fmt.Errorf("%w: decide without the state of key %q", ErrInvalidCommand, missing)}, nil
	}
	tokens := map[string]uint64{}
	for _, t := range tc.Tokens {
		if t.Fence != nil {
			tokens[t.Fence.Lock+"\x00"+string(t.Key)] = t.Fence.Token
		}
	}
	for _, w := range out.Writes { // every fence before any write (I11)
		if w.Fence == nil {
			continue
		}
		var stale *StaleTokenError
		if mine[string(w.Key)] {
			_, stale, err = c.checkFence(&Command{Key: w.Key, Fence: &Fence{Lock: w.Fence.Lock, Token: w.Fence.Token}})
			if err != nil {
				return nil, err
			}
		} else if acc := tokens[w.Fence.Lock+"\x00"+string(w.Key)]; acc > w.Fence.Token {
			stale = &StaleTokenError{Key: cloneBytes(w.Key), Lock: w.Fence.Lock, Token: w.Fence.Token, Accepted: acc}
		}
		if stale != nil {
			res.Stale = stale
			if err := abort(); err != nil {
				return nil, err
			}
			if c.decided != nil && res.Record != nil && res.Record.State == txn.Aborted {
				c.decided.put(tc, res) // a repeat of this decide answers the stale fence again
			}
			return done()
		}
	}
	ev.WriteSet, ev.Succeeded = out.Writes, out.Succeeded
	next, eff, err := c.recordEventOn(rec, ev, cmd.Time) // nothing since loadRecord wrote the record
	if err != nil {
		return nil, err
	}
	res.Verdict, res.Record = eff.Verdict, next
	if !eff.Changed || next == nil || next.State != txn.Committed {
		return done()
	}
	// The commit point: the anchor's writes apply now, at this index. The
	// anchor's shard keeps the tombstone a resolution would leave, so a late
	// prepare of this transaction on one of these keys (a retry after a
	// split moved the key, whose new shard copied the tombstones) is refused
	// rather than applying the write twice.
	if err := c.leaveTombstone(tc.ID, next.State, cmd.Time); err != nil {
		return nil, err
	}
	for _, k := range tc.Keys {
		res.Reads = append(res.Reads, TxnRead{Key: k.Key, KV: seen[string(k.Key)]})
		res.Resolved = append(res.Resolved, k.Key)
		if holds[string(k.Key)] {
			// An intent of this transaction on an anchor key (a prepare an
			// older coordinator sent here): the direct write replaces it.
			ins, err := loadIntents(c.b.intents, k.Key)
			if err != nil {
				return nil, err
			}
			ins = slices.DeleteFunc(ins, func(in txn.Intent) bool { return in.TxnID == tc.ID })
			if err := storeIntents(c.b.intents, k.Key, ins); err != nil {
				return nil, err
			}
		}
	}
	for _, o := range tc.Request.Branch(out.Succeeded) {
		if !o.Kind.IsWrite() || !mine[string(o.Key)] {
			continue
		}
		wc := &Command{Key: o.Key, Value: o.Value, TTL: o.TTL}
		if o.Fence != nil {
			wc.Fence = &Fence{Lock: o.Fence.Lock, Token: o.Fence.Token}
		}
		r := TxnOpResult{Kind: o.Kind, Key: o.Key}
		var wr *Result
		if o.Kind == txn.OpDelete {
			wc.Op = OpDelete
			wr, err = c.del(wc, index)
		} else {
			wc.Op = OpPut
			wr, err = c.putOver(wc, index, seen[string(o.Key)])
		}
		if err != nil {
			return nil, err
		}
		if wr.Err != nil { // cannot happen: fences were checked above, no condition
			return nil, fmt.Errorf("fsm: decide write %q refused after its checks: %w", o.Key, wr.Err)
		}
		r.KV, r.Deleted = wr.KV, wr.Deleted
		res.Written = append(res.Written, r)
	}
	// Intents of this transaction on other keys this shard owns (a
	// participant whose keys a split left here): resolved as ResolveHere
	// does, tombstone included.
	var rest []txn.KeyIntent
	for _, p := range next.Participants {
		for _, k := range p.Keys {
			if c.rng.Contains(k.Key) && !mine[string(k.Key)] {
				rest = append(rest, k)
			}
		}
	}
	if len(rest) > 0 {
		r, err := c.resolveIntents(tc.ID, rest, next, index, true, cmd.Time)
		if err != nil {
			return nil, err
		}
		res.Written = append(res.Written, r.Written...)
		for _, k := range rest {
			res.Resolved = append(res.Resolved, k.Key)
		}
	}
	if c.decided != nil {
		c.decided.put(tc, res)
	}
	return done()
}

// txnResolve applies an OpTxnResolve: the final record decides each intent
// of the transaction on the listed keys; the tombstone refuses its later
// prepares here.
func (c *applyCtx) txnResolve(cmd *Command, index uint64) (*Result, error) {
	tc, bad := c.decodeTxnCommand(cmd, index)
	if bad != nil {
		return bad, nil
	}
	for _, one := range append([]*TxnCommand{tc}, tc.Batch...) {
		if rec := one.Record; rec == nil || !rec.State.Final() || rec.ID != one.ID {
			return &Result{Index: index, Err: fmt.Errorf("%w: resolve needs the final record", ErrInvalidCommand)}, nil
		}
	}
	res, err := c.resolveIntents(tc.ID, tc.Keys, tc.Record, index, tc.PreparedIndex, cmd.Time)
	if err != nil {
		return nil, err
	}
	for _, b := range tc.Batch {
		r, err := c.resolveIntents(b.ID, b.Keys, b.Record, index, b.PreparedIndex, cmd.Time)
		if err != nil {
			return nil, err
		}
		res.Written = append(res.Written, r.Written...)
	}
	if err := c.pruneTxn(cmd.Time); err != nil {
		return nil, err
	}
	return &Result{Index: index, TwoPC: res}, nil
}

// leaveTombstone records on this shard that transaction id ended in state
// (once; queued for pruning after the dedup window), so a later prepare of
// it here is refused (VotePrevented) instead of laying an intent that would
// be resolved, and a committed write applied, a second time. Every entry
// that makes a record final or resolves from it leaves one: a resolve, a
// record event with ResolveHere, and the decide.
func (c *applyCtx) leaveTombstone(id string, state txn.State, now int64) error {
	if c.b.tombstones.Get([]byte(id)) != nil {
		return nil
	}
	if err := c.b.tombstones.Put([]byte(id), []byte{byte(state)}); err != nil {
		return err
	}
	return c.b.txnGC.Put(txnGCKey(now, 't', id), []byte{})
}

// resolveIntents resolves transaction id's intents on keys (of this shard)
// from its final record rec, and leaves its tombstone (OpTxnResolve, and a
// record event with ResolveHere). prepIdx: a committed write takes its
// intent's prepare index as mod_index, else the entry's index.
func (c *applyCtx) resolveIntents(id string, keys []txn.KeyIntent, rec *txn.Record, index uint64, prepIdx bool, now int64) (*TxnCmdResult, error) {
	if err := c.leaveTombstone(id, rec.State, now); err != nil {
		return nil, err
	}
	res := &TxnCmdResult{}
	for _, k := range keys {
		ins, err := loadIntents(c.b.intents, k.Key)
		if err != nil {
			return nil, err
		}
		keep := ins[:0]
		var apply *txn.Write
		windex := index // the written key's mod_index
		for _, in := range ins {
			if in.TxnID != id {
				keep = append(keep, in)
				continue
			}
			r := txn.ResolveIntent(in, rec)
			if r.Keep {
				keep = append(keep, in)
			}
			if r.Apply != nil {
				apply = r.Apply
				if prepIdx && in.PreparedSeq != 0 {
					// The intent excluded every other write of the key
					// from PreparedSeq to here, so the key's history of
					// mod_index stays increasing (txn/DESIGN.md).
					windex = in.PreparedSeq
				}
			}
		}
		if err := storeIntents(c.b.intents, k.Key, keep); err != nil {
			return nil, err
		}
		if apply == nil {
			continue
		}
		wc := &Command{Key: apply.Key, Value: apply.Value, TTL: apply.TTL}
		if apply.Fence != nil {
			wc.Fence = &Fence{Lock: apply.Fence.Lock, Token: apply.Fence.Token}
		}
		op := TxnOpResult{Kind: txn.OpPut, Key: apply.Key}
		var r *Result
		if apply.Delete {
			wc.Op, op.Kind = OpDelete, txn.OpDelete
			r, err = c.del(wc, windex)
		} else {
			wc.Op = OpPut
			r, err = c.put(wc, windex)
		}
		if err != nil {
			return nil, err
		}
		op.KV, op.Deleted = r.KV, r.Deleted
		res.Written = append(res.Written, op)
	}
	return res, nil
}

func be64(b []byte) uint64 {
	var v uint64
	for _, x := range b[:8] {
		v = v<<8 | uint64(x)
	}
	return v
}

// TxnRecord returns the record of transaction id if this shard holds it,
// with the applied index it reflects.
func (f *FSM) TxnRecord(id string) (*txn.Record, uint64, error) {
	var rec *txn.Record
	var applied uint64
	err := f.view(func(tx *bbolt.Tx) error {
		applied = be64(tx.Bucket(bucketMeta).Get(metaApplied))
		b := tx.Bucket(bucketRecords)
		if b == nil {
			return nil
		}
		if v := b.Get([]byte(id)); v != nil {
			var err error
			rec, err = txn.DecodeRecord(v)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("fsm: txn record: %w", err)
	}
	return rec, applied, nil
}

// TxnIntents returns the intents stored on the shard's keys among keys
// (GET /v1/txn/{id} shows a transaction's intents per shard).
func (f *FSM) TxnIntents(keys [][]byte) ([]txn.Intent, error) {
	var out []txn.Intent
	err := f.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketIntents)
		if b == nil {
			return nil
		}
		for _, k := range keys {
			ins, err := loadIntents(b, k)
			if err != nil {
				return err
			}
			out = append(out, ins...)
		}
		return nil
	})
	return out, err
}

// CountIntents returns how many keys of the shard hold intents (tests: S14
// checks that every intent disappears).
func (f *FSM) CountIntents() (int, error) {
	n := 0
	err := f.view(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketIntents); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	return n, err
}

// readIntentCheck: a single-key read outside transactions conflicts with a
// write intent on the key.
func readIntentCheck(tx *bbolt.Tx, key []byte) (*IntentError, error) {
	b := tx.Bucket(bucketIntents)
	if b == nil {
		return nil, nil
	}
	ins, err := loadIntents(b, key)
	if err != nil {
		return nil, err
	}
	for _, in := range ins {
		if txn.Conflict("", txn.AccessRead, in) {
			return &IntentError{Key: cloneBytes(key), Intent: in}, nil
		}
	}
	return nil, nil
}

// exportTxnBucket writes a split child's records (those whose anchor it
// now owns) and every tombstone (either half may receive a late prepare).
func (c *applyCtx) exportTxnBucket(name []byte, idx int, child Range, emit func(int, []byte, []byte) error) error {
	if bytes.Equal(name, bucketTombstones) {
		return c.b.tombstones.ForEach(func(k, v []byte) error { return emit(idx, k, v) })
	}
	if bytes.Equal(name, bucketTxnGC) { // both halves: dropping what a half lacks is a no-op
		return c.b.txnGC.ForEach(func(k, v []byte) error { return emit(idx, k, v) })
	}
	return c.b.records.ForEach(func(k, v []byte) error {
		r, err := txn.DecodeRecord(v)
		if err != nil {
			return fmt.Errorf("%w: txn record %q: %v", errCorrupt, k, err)
		}
		if child.Contains(r.Anchor) {
			return emit(idx, k, v)
		}
		return nil
	})
}

// dropTxnRecordsFrom deletes the records whose anchor moved to a split's
// child (anchor >= from).
func (c *applyCtx) dropTxnRecordsFrom(from []byte) error {
	var gone [][]byte
	err := c.b.records.ForEach(func(k, v []byte) error {
		r, err := txn.DecodeRecord(v)
		if err != nil {
			return fmt.Errorf("%w: txn record %q: %v", errCorrupt, k, err)
		}
		if bytes.Compare(r.Anchor, from) >= 0 {
			gone = append(gone, cloneBytes(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range gone {
		if err := c.b.records.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// scanIntentCheck: the first write intent on a key in [start, end) (empty
// end: no bound), which a scan outside transactions conflicts with.
func scanIntentCheck(tx *bbolt.Tx, start, end []byte) (*IntentError, error) {
	b := tx.Bucket(bucketIntents)
	if b == nil {
		return nil, nil
	}
	c := b.Cursor()
	for k, _ := c.Seek(start); k != nil && (len(end) == 0 || bytes.Compare(k, end) < 0); k, _ = c.Next() {
		if ie, err := readIntentCheck(tx, k); ie != nil || err != nil {
			return ie, err
		}
	}
	return nil, nil
}

// TxnSweepRecords is one pass of the leader's record sweeper over at most
// visit records of this shard (0: all) and at most limit picked (0: no
// bound), in id order after `after` (nil: from the first). It picks the
// records not final whose last heartbeat is before expiredBefore (the
// sweeper pushes them: a push aborts an expired Pending record) and the
// committed records never forgotten whose last heartbeat is before
// forgetBefore (the sweeper resolves their intents on every participant,
// then forgets them: a record whose coordinator died before forgetting it
// is dropped after all; txn/DESIGN.md "Forgetting a committed record"),
// and returns them in id order. next is where the following pass resumes:
// the last id looked at when a bound stopped it, nil when it reached the
// end. A shard keeps every record a dedup window after it ends (ten
// minutes of transactions), so a pass bounded by visit costs the same
// however many there are; a full scan on every pass grew with the
// transaction rate.
func (f *FSM) TxnSweepRecords(after []byte, expiredBefore, forgetBefore int64, visit, limit int) (recs []*txn.Record, next []byte, err error) {
	return f.scanRecords(after, visit, limit, func(r txn.RecordSummary) bool {
		if !r.State.Final() {
			return r.Heartbeat < expiredBefore
		}
		return r.State == txn.Committed && !r.Forgotten && r.Heartbeat < forgetBefore
	})
}

// scanRecords decodes the records after `after` (nil: from the first) that
// pick selects from a peek at each (most records are final and kept for
// the dedup window: only the picked are decoded). It stops before the
// visit+1-th record looked at or the limit+1-th pick (0: no bound); next
// is then the last id looked at, and nil when the scan reached the end.
func (f *FSM) scanRecords(after []byte, visit, limit int, pick func(txn.RecordSummary) bool) (recs []*txn.Record, next []byte, err error) {
	err = f.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		var last []byte
		visited := 0
		for k, v := seekAfter(c, after); k != nil; k, v = c.Next() {
			if (limit > 0 && len(recs) >= limit) || (visit > 0 && visited >= visit) {
				next = cloneBytes(last)
				return nil
			}
			visited++
			last = k
			sum, err := txn.PeekRecord(v)
			if err != nil {
				return fmt.Errorf("%w: txn record %q: %v", errCorrupt, k, err)
			}
			if !pick(sum) {
				continue
			}
			r, err := txn.DecodeRecord(v)
			if err != nil {
				return fmt.Errorf("%w: txn record %q: %v", errCorrupt, k, err)
			}
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("fsm: txn records: %w", err)
	}
	return recs, next, nil
}

// seekAfter positions c on the first key after `after` (nil: the first
// key), where a resumed scan goes on.
func seekAfter(c *bbolt.Cursor, after []byte) (k, v []byte) {
	if after == nil {
		return c.First()
	}
	if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
		return c.Next()
	}
	return k, v
}

// TxnOldIntents returns up to limit intents of this shard laid before
// `before` (their PreparedAt, the proposer's time of the prepare): the
// leader's sweeper pushes their records and resolves those whose record is
// final (a coordinator that stopped after its reply, before resolving).
func (f *FSM) TxnOldIntents(before int64, limit int) ([]txn.Intent, error) {
	out, _, err := f.TxnOldIntentsAfter(nil, before, limit)
	return out, err
}

// TxnOldIntentsAfter is TxnOldIntents over the keys after `after` (nil:
// from the first), so a sweep resumes where the last one stopped and
// intents it cannot end now (their anchor is down) do not starve the keys
// behind them. It takes every old intent of a key it looks at (a key holds
// few), so it may return a few more than limit. next is where the following
// call resumes: the last key looked at when the limit stopped the scan, nil
// when it reached the end.
func (f *FSM) TxnOldIntentsAfter(after []byte, before int64, limit int) (out []txn.Intent, next []byte, err error) {
	err = f.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketIntents)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		var last []byte
		for k, _ := seekAfter(c, after); k != nil; k, _ = c.Next() {
			if len(out) >= limit {
				next = cloneBytes(last)
				return nil
			}
			ins, err := loadIntents(b, k)
			if err != nil {
				return err
			}
			for _, in := range ins {
				if in.PreparedAt < before {
					out = append(out, in)
				}
			}
			last = k
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("fsm: txn intents: %w", err)
	}
	return out, next, nil
}
