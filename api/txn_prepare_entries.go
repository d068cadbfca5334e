package api

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

// Prepares in one entry (command level 3, txn/DESIGN.md "Prepares in one
// entry"). A shard's leader holding several prepares at once, the commands
// of a shared call from another node or the prepares its own coordinators
// queued for it, proposes them as one fsm.OpTxnBatch entry instead of one
// entry each: raft's cost per entry (a future, a log record, its
// replication and an apply call, on every replica) is paid once. The
// entry applies each prepare exactly as an entry of its own would, so each
// is answered as before. Only while the cluster's command level is 3 or
// more (api.LevelReporter): a level-2 replica does not know the op and would
// diverge.

// batchEntriesLevel is the command level that applies fsm.OpTxnBatch.
const batchEntriesLevel = 3

// batchEntriesOn reports whether the cluster's level lets a leader propose
// prepares in one entry.
func (s *Server) batchEntriesOn() bool {
	l, ok := s.cfg.Backend.(LevelReporter)
	return ok && l.ClusterLevel() >= batchEntriesLevel
}

// leaderHere returns the replica of key's shard when this node leads it,
// and the range it was looked up in.
func (s *Server) leaderHere(key []byte) (Replica, fsm.Range, bool) {
	rng, err := s.lookup(key)
	if err != nil {
		return nil, fsm.Range{}, false
	}
	rep, ok := s.cfg.Backend.Replica(rng.ID)
	if !ok || !rep.IsLeader() {
		return nil, fsm.Range{}, false
	}
	return rep, rng, true
}

// errNotProposed: the entry holding a prepare was refused before anything
// was appended (leadership moved, the shard is closing); the prepare is sent
// again on its own, routed.
var errNotProposed = errors.New("api: prepares entry not proposed")

// prepareGroup is the prepares (by index) for one shard this node leads.
type prepareGroup struct {
	rep Replica
	rng fsm.Range
	idx []int
}

// localPrepareGroups sorts commands 0..n-1 (op(i), routed by key(i)): the
// prepares for shards this node leads, grouped by shard, and the others,
// which the caller sends on their own, routed.
func (s *Server) localPrepareGroups(n int, key func(int) []byte, op func(int) fsm.Op) (groups []*prepareGroup, others []int) {
	byShard := map[uint64]*prepareGroup{}
	for i := range n {
		if op(i) != fsm.OpTxnPrepare {
			others = append(others, i)
			continue
		}
		rep, rng, ok := s.leaderHere(key(i))
		if !ok {
			others = append(others, i)
			continue
		}
		g := byShard[rng.ID]
		if g == nil {
			g = &prepareGroup{rep: rep, rng: rng}
			byShard[rng.ID] = g
			groups = append(groups, g)
		}
		g.idx = append(g.idx, i)
	}
	return groups, others
}

// proposeGroups proposes each group's prepares (cmd(i)) in as few entries
// as it can (proposePrepares), answers each prepare with done(i, res, err),
// and returns those whose entry was refused before anything was appended,
// for the caller to send on their own, routed. One group runs on the
// caller's goroutine.
func (s *Server) proposeGroups(ctx context.Context, groups []*prepareGroup, cmd func(int) *fsm.Command,
	done func(i int, res *fsm.Result, err error)) (notProposed []int) {
	var mu sync.Mutex
	run := func(g *prepareGroup) {
		cmds := make([]*fsm.Command, len(g.idx))
		for j, i := range g.idx {
			cmds[j] = cmd(i)
		}
		res, errs := s.proposePrepares(ctx, g.rep, g.rng, cmds)
		for j, i := range g.idx {
			if errors.Is(errs[j], errNotProposed) {
				mu.Lock()
				notProposed = append(notProposed, i)
				mu.Unlock()
				continue
			}
			done(i, res[j], errs[j])
		}
	}
	if len(groups) == 1 {
		run(groups[0])
		return notProposed
	}
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Go(func() { run(g) })
	}
	wg.Wait()
	return notProposed
}

// proposePrepares proposes the prepares cmds, all for keys of rep's shard
// (range rng), in as few OpTxnBatch entries as the entry bounds allow (a
// lone one as an entry of its own), and returns each one's result, or its
// error: errNotProposed wrapped when nothing was appended.
func (s *Server) proposePrepares(ctx context.Context, rep Replica, rng fsm.Range, cmds []*fsm.Command) ([]*fsm.Result, []error) {
	res, errs := make([]*fsm.Result, len(cmds)), make([]error, len(cmds))
	now := s.cfg.Clock.Now().UnixNano()
	// Entries are cut by a bound on each command's encoding (its key, value
	// and request id, and room for its other fields), so that only the
	// commands of a shared entry are encoded here: a lone one is encoded by
	// Propose.
	var chunks [][]int
	for lo := 0; lo < len(cmds); {
		hi, size := lo, 0
		for hi < len(cmds) && hi-lo < fsm.MaxTxnBatchItems {
			w := encodedBound(cmds[hi])
			if hi > lo && size+w > fsm.MaxTxnBatchSize {
				break
			}
			size += w
			hi++
		}
		chunks = append(chunks, intRange(lo, hi))
		lo = hi
	}
	proposed := func(err error) error {
		if err != nil && proposedNothing(err) {
			return fmt.Errorf("%w: %w", errNotProposed, err)
		}
		return err
	}
	run := func(chunk []int) {
		if len(chunk) == 1 {
			i := chunk[0]
			c := *cmds[i]
			c.Epoch, c.Time = rng.Epoch, now
			res[i], errs[i] = rep.Propose(ctx, &c)
			errs[i] = proposed(errs[i])
			return
		}
		items := make([][]byte, 0, len(chunk))
		sent := chunk[:0:0]
		for _, i := range chunk {
			c := *cmds[i]
			c.Epoch, c.Time = rng.Epoch, now
			b, err := fsm.EncodeCommand(&c)
			if err != nil {
				errs[i] = err
				continue
			}
			items, sent = append(items, b), append(sent, i)
		}
		if len(items) == 0 {
			return
		}
		out, err := rep.Propose(ctx, &fsm.Command{Op: fsm.OpTxnBatch, Value: fsm.EncodeTxnBatch(items), Time: now})
		switch {
		case errors.Is(err, fsm.ErrInvalidCommand):
			// The entry did not encode (past its bound: a command larger
			// than encodedBound allows for); nothing was proposed, and
			// each goes alone.
			err = fmt.Errorf("%w: %w", errNotProposed, err)
		case err != nil:
			err = proposed(err)
		case out.Err != nil:
			err = fmt.Errorf("prepares entry: %w", out.Err)
		case len(out.Items) != len(sent):
			err = fmt.Errorf("prepares entry: %d results for %d prepares: %w", len(out.Items), len(sent), shard.ErrOutcomeUnknown)
		}
		if s.txnm != nil && err == nil {
			s.txnm.batch.WithLabelValues("prepare_entry").Observe(float64(len(sent)))
		}
		for j, i := range sent {
			if err != nil {
				errs[i] = err
				continue
			}
			res[i] = out.Items[j]
		}
	}
	if len(chunks) == 1 { // the usual case: no goroutine
		run(chunks[0])
		return res, errs
	}
	var wg sync.WaitGroup
	for _, chunk := range chunks {
		wg.Go(func() { run(chunk) })
	}
	wg.Wait()
	return res, errs
}

// encodedBound is at least the bytes command c takes in an OpTxnBatch:
// its key, value and request id, and room for its other fields (op,
// epoch, time: varints) and the batch's tag and length.
func encodedBound(c *fsm.Command) int {
	return len(c.Key) + len(c.Value) + len(c.RequestID) + 96
}

func intRange(lo, hi int) []int {
	out := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out
}

// proposedNothing reports whether a local proposal failed before anything
// was appended to the log.
func proposedNothing(err error) bool {
	var nl *shard.NotLeaderError
	return errors.As(err, &nl) || errors.Is(err, shard.ErrUnavailable) || errors.Is(err, shard.ErrTransferring)
}
