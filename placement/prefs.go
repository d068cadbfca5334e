package placement

import (
	"context"
	"errors"
	"fmt"
)

// Leader preferences: `cairn cluster transfer-leader` records the node it
// placed a range's leadership on, and the scheduler keeps it there (rule 2b
// and the balance rules in scheduler.go) while that node is an eligible
// replica. The driver clears a preference once it is void: its node was
// removed, died, or no longer holds a replica of the range. A later
// transfer-leader replaces it.

// opLeaderPref sets (Node.ID non-empty) or clears a range's preferred leader.
const opLeaderPref = "leader_pref"

func (s *State) setLeaderPref(c *metaCommand) error {
	if c.RangeID == 0 || c.Node == nil {
		return errors.New("meta: leader_pref without range or node")
	}
	if c.Node.ID == "" {
		delete(s.LeaderPrefs, c.RangeID)
		return nil
	}
	if _, ok := s.Range(c.RangeID); !ok {
		return fmt.Errorf("meta: leader_pref for unknown range %d", c.RangeID)
	}
	if s.LeaderPrefs == nil {
		s.LeaderPrefs = map[uint64]string{}
	}
	s.LeaderPrefs[c.RangeID] = c.Node.ID
	return nil
}

// SetLeaderPref records node as the preferred leader of range id ("" clears
// it). Leader only.
func (m *Meta) SetLeaderPref(ctx context.Context, id uint64, node string) error {
	return m.proposeErr(ctx, &metaCommand{V: 1, Op: opLeaderPref, RangeID: id, Node: &NodeInfo{ID: node}})
}

// clearVoidPrefs drops preferences whose node is removed, dead (down for
// DeadAfter) or no longer a replica of the range.
func (d *Driver) clearVoidPrefs(ctx context.Context, view ClusterView, st *State) {
	if len(st.LeaderPrefs) == 0 {
		return
	}
	nodes := make(map[string]NodeView, len(view.Nodes))
	for _, n := range view.Nodes {
		nodes[n.ID] = n
	}
	for id, node := range st.LeaderPrefs {
		rng, ok := st.Range(id)
		n, known := nodes[node]
		dead := !n.Alive && n.DownFor >= d.cfg.Scheduler.withDefaults().DeadAfter
		if ok && known && !n.Removed && !dead && ctlHas(rng.Replicas, node) {
			continue
		}
		if _, busy := st.Ops[id]; ok && busy {
			continue // a move in progress may be bringing the node back
		}
		if err := d.cfg.Meta.SetLeaderPref(ctx, id, ""); err != nil {
			d.cfg.Logger.Warn("clear leader preference", "range", id, "node", node, "err", err)
			continue
		}
		d.cfg.Logger.Info("leader preference cleared", "range", id, "node", node)
	}
}

// abandonTransfer finishes a recorded leadership transfer without stepping
// it when its target is no longer eligible (it stopped answering, is suspect,
// draining or gone: a transfer to an unreachable node would stall the range's
// writes for an election timeout on every attempt), or when an operator has
// since placed the range's leadership elsewhere.
func (d *Driver) abandonTransfer(ctx context.Context, view ClusterView, st *State, op Operation) bool {
	if op.Kind != OpTransferLeader {
		return false
	}
	reason := "target not answering"
	if pref := st.LeaderPrefs[op.RangeID]; pref != "" && pref != op.To {
		reason = "operator placed the leader on " + pref
	} else {
		for _, n := range view.Nodes {
			if n.ID == op.To && n.Alive && !n.Unresponsive && !n.Draining && !n.Removed {
				return false
			}
		}
	}
	if err := d.cfg.Meta.FinishOp(ctx, op.RangeID); err != nil {
		d.cfg.Logger.Warn("abandon placement operation", "op", op.String(), "err", err)
		return false
	}
	d.cfg.Logger.Info("placement operation abandoned", "op", op.String(), "reason", reason)
	d.ops.WithLabelValues(string(op.Kind), "abandoned").Inc()
	return true
}
