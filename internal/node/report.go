package node

import (
	"context"
	"time"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/fsm"
)

// Meta returns the node's meta replica for the API.
func (n *Node) Meta() api.MetaBackend { return n.meta }

// reportLoop sends the meta group the descriptor of every shard this node
// leads whose id and epoch the range map does not show yet: after a split or
// a membership change the shard's own log is ahead of the map, and this is
// how the map catches up (invariant I6: it changes only through the meta
// group's log).
func (n *Node) reportLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if stale := n.staleDescriptors(); len(stale) > 0 {
			if err := n.api.ReportRanges(ctx, stale); err != nil {
				n.log.Debug("report ranges", "err", err)
			}
		}
		cancel()
		// Sent even when this node leads nothing: the placement driver
		// treats a node that has not reported for a while as possibly dead
		// and never places anything on it (placement.DriverConfig.ReportTimeout).
		ctx, cancel = context.WithTimeout(context.Background(), time.Second)
		if err := n.api.SendHeartbeat(ctx, n.heartbeat(500*time.Millisecond)); err != nil {
			n.log.Debug("heartbeat", "err", err)
		}
		cancel()
	}
}

func (n *Node) staleDescriptors() []fsm.Range {
	st, _ := n.meta.State()
	if !st.Formed() {
		return nil
	}
	known := make(map[uint64]uint64, len(st.Ranges))
	for _, r := range st.Ranges {
		known[r.ID] = r.Epoch
	}
	var out []fsm.Range
	for _, rep := range n.host.Replicas() {
		if !rep.IsLeader() {
			continue
		}
		r := rep.Range()
		if epoch, ok := known[r.ID]; !ok || epoch < r.Epoch {
			out = append(out, r)
		}
	}
	return out
}

// heartbeat collects the statistics of the shards this node leads.
func (n *Node) heartbeat(interval time.Duration) []api.RangeHeartbeat {
	if n.lastWritten == nil {
		n.lastWritten = map[uint64]uint64{}
	}
	var hb []api.RangeHeartbeat
	for _, rep := range n.host.Replicas() {
		if !rep.IsLeader() {
			continue
		}
		w := rep.WrittenBytes()
		rate := float64(w-n.lastWritten[rep.ID()]) / interval.Seconds()
		if w < n.lastWritten[rep.ID()] {
			rate = 0
		}
		n.lastWritten[rep.ID()] = w
		hb = append(hb, api.RangeHeartbeat{ID: rep.ID(), Leader: n.cfg.ID, SizeBytes: rep.FSM().SizeBytes(), WriteBytes: rate,
			AppliedIndex: rep.FSM().Applied()})
	}
	return hb
}
