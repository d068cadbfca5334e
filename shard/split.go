package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/durable"
)

// Splits (see shard/DESIGN.md): a split is an OpSplit in the parent's log. While
// applying it, every replica writes the child group's starting point — a raft
// snapshot at index 1, term 1, holding the child's half and the parent's
// configuration — into a new shard directory, atomically. The child group
// then starts from that snapshot with an empty log, so any replica that
// joins the child later (one that missed the split, a moved replica) cannot
// replay a log onto empty state: the leader's log begins at index 2, and it
// must send a snapshot.

// Split proposes splitting this shard at key into a new range childID,
// decided at epoch (0: the range's epoch now); the apply refuses it if the
// range is no longer at that epoch. key nil means the middle of the range by
// size. Leader only.
func (r *Replica) Split(ctx context.Context, key []byte, childID, epoch uint64) (*fsm.Result, error) {
	if !r.IsLeader() {
		return nil, r.notLeader()
	}
	if key == nil {
		var err error
		if key, err = r.fsm.SplitKey(); err != nil {
			return nil, fmt.Errorf("shard %d: %w", r.id, err)
		}
	}
	cf := r.g.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, fmt.Errorf("shard %d: %w: %w", r.id, ErrUnavailable, err)
	}
	var servers []fsm.Server
	for _, s := range cf.Configuration().Servers {
		servers = append(servers, fsm.Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	if epoch == 0 {
		epoch = r.fsm.Range().Epoch
	}
	cmd := &fsm.Command{Op: fsm.OpSplit, Key: key, Epoch: epoch, ChildID: childID, Servers: servers}
	return r.Propose(ctx, cmd)
}

// prepareChild is the FSM's OnSplit hook: it makes the child's starting
// snapshot durable before the parent drops the child's half. A child
// directory that already exists (an earlier apply of this same split before a
// crash, or an empty replica placement opened) is left alone: its content is
// the same deterministic half, or it will receive a snapshot from the leader.
func (h *Host) prepareChild(child fsm.Range, servers []fsm.Server, export func(io.Writer) error) error {
	dir := h.shardDir(child.ID)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	// The child starts from its snapshot alone: no log of an earlier
	// replica with this id may survive in the WAL.
	if err := h.cfg.Logs.DropGroup(child.ID); err != nil {
		return err
	}
	tmp := dir + ".split-tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(tmp, 2, newRaftLogger(h.log))
	if err != nil {
		return err
	}
	var conf raft.Configuration
	for _, s := range servers {
		suffrage := raft.Nonvoter
		if s.Voter {
			suffrage = raft.Voter
		}
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address), Suffrage: suffrage})
	}
	_, enc := raft.NewInmemTransport("") // EncodePeer only; starts nothing
	sink, err := snaps.Create(1, fsm.ChildAppliedIndex, 1, conf, fsm.ChildAppliedIndex, enc)
	if err != nil {
		return err
	}
	if err := export(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	// The child's genesis range, for a rebuild after a machine crash: a
	// node that restarts before it opened the child knows only its id.
	if err := fsm.WriteGenesis(filepath.Join(tmp, "fsm.db"), child); err != nil {
		return err
	}
	// Under the host lock, so OpenReplica (which creates an empty replica
	// when the range map lists the child first) and this rename exclude
	// each other. If the empty replica won, it receives a snapshot instead.
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := os.Stat(dir); err == nil {
		return os.RemoveAll(tmp)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(dir))
}

// startChild is the FSM's AfterSplit hook: the parent has committed the
// split, so the child group starts (from its snapshot) in the background.
func (h *Host) startChild(child fsm.Range) {
	go func() {
		if _, err := h.OpenReplica(child, nil); err != nil && !errors.Is(err, ErrClosed) {
			h.log.Error("start child range after split", "shard", child.ID, "err", err)
		}
	}()
}
