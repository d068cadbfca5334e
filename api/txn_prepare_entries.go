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

// proposePrepares proposes the prepares cmds, all for keys of rep's shard
// (range rng), in as few OpTxnBatch entries as the entry bounds allow (one
// alone as an entry of its own), and returns each one's result, or its
// error: errNotProposed wrapped when nothing was appended.
func (s *Server) proposePrepares(ctx context.Context, rep Replica, rng fsm.Range, cmds []*fsm.Command) ([]*fsm.Result, []error) {
	res, errs := make([]*fsm.Result, len(cmds)), make([]error, len(cmds))
	now := s.cfg.Clock.Now().UnixNano()
	encs := make([][]byte, len(cmds))
	for i, cmd := range cmds {
		c := *cmd
		c.Epoch, c.Time = rng.Epoch, now
		encs[i], errs[i] = fsm.EncodeCommand(&c)
	}
	var chunks [][]int
	for lo := 0; lo < len(cmds); {
		hi, size := lo, 0
		for hi < len(cmds) && hi-lo < fsm.MaxTxnBatchItems && (hi == lo || size+len(encs[hi])+16 <= fsm.MaxTxnBatchSize) {
			size += len(encs[hi]) + 16
			hi++
		}
		chunk := make([]int, 0, hi-lo)
		for i := lo; i < hi; i++ {
			if errs[i] == nil {
				chunk = append(chunk, i)
			}
		}
		lo = hi
		if len(chunk) > 0 {
			chunks = append(chunks, chunk)
		}
	}
	run := func(chunk []int) {
		if len(chunk) == 1 {
			i := chunk[0]
			res[i], errs[i] = rep.Propose(ctx, &fsm.Command{Op: cmds[i].Op, Key: cmds[i].Key, Value: cmds[i].Value,
				Epoch: rng.Epoch, Time: now})
			if errs[i] != nil && proposedNothing(errs[i]) {
				errs[i] = fmt.Errorf("%w: %w", errNotProposed, errs[i])
			}
			return
		}
		items := make([][]byte, len(chunk))
		for j, i := range chunk {
			items[j] = encs[i]
		}
		out, err := rep.Propose(ctx, &fsm.Command{Op: fsm.OpTxnBatch, Value: fsm.EncodeTxnBatch(items), Time: now})
		switch {
		case err != nil && proposedNothing(err):
			err = fmt.Errorf("%w: %w", errNotProposed, err)
		case err == nil && out.Err != nil:
			err = fmt.Errorf("prepares entry: %w", out.Err)
		case err == nil && len(out.Items) != len(chunk):
			err = fmt.Errorf("prepares entry: %d results for %d prepares: %w", len(out.Items), len(chunk), shard.ErrOutcomeUnknown)
		}
		if s.txnm != nil && err == nil {
			s.txnm.batch.WithLabelValues("prepare_entry").Observe(float64(len(chunk)))
		}
		for j, i := range chunk {
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

// proposedNothing reports whether a local proposal failed before anything
// was appended to the log.
func proposedNothing(err error) bool {
	var nl *shard.NotLeaderError
	return errors.As(err, &nl) || errors.Is(err, shard.ErrUnavailable) || errors.Is(err, shard.ErrTransferring)
}
