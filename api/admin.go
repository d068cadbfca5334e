package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/placement"
)

// MetaBackend is what the API needs from this node's meta-group replica.
// AllocRangeID and ReportRanges work on the meta leader only; the API
// forwards them there.
type MetaBackend interface {
	IsLeader() bool
	Leader() string // node id, "" when unknown
	AllocRangeID(ctx context.Context) (uint64, error)
	ReportRanges(ctx context.Context, ranges []fsm.Range) error
}

// internal routes: node-to-node calls, not part of the public API
// (internal/cluster makes them).
const (
	pathAllocRangeID = cluster.PathAllocRangeID
	pathReportRanges = cluster.PathReportRanges
)

type splitRequest struct {
	Key *string `json:"key"`
	// Epoch makes the split conditional: only a range still at this epoch
	// splits (409 condition_failed otherwise); 0 or absent: any epoch. The
	// placement driver sends the epoch its split was decided at.
	Epoch uint64 `json:"epoch"`
}

type rangeJSON struct {
	ID       uint64   `json:"id"`
	Start    string   `json:"start"`
	End      string   `json:"end"`
	Epoch    uint64   `json:"epoch"`
	Replicas []string `json:"replicas"`
}

func toRangeJSON(r fsm.Range) rangeJSON {
	return rangeJSON{ID: r.ID, Start: string(r.Start), End: string(r.End), Epoch: r.Epoch, Replicas: r.Replicas}
}

// splitShard: POST /v1/cluster/shards/{id}/split {"key":"m", "epoch":3}
// (both optional). It runs on
// the shard's leader: placement.SplitShard allocates a range id on the meta
// group, proposes the OpSplit through the shard's log, then reports both
// halves to the meta group.
func (s *Server) splitShard(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var req splitRequest
	if len(body) > 0 {
		if err := unmarshalStrict(body, &req); err != nil {
			return err
		}
	}
	var key []byte
	if req.Key != nil {
		if key = []byte(*req.Key); validateKey(key) != nil {
			return invalidf("bad split key: %v", validateKey(key))
		}
	}
	return s.onLeader(w, r, body, func(rep ShardReplica) error {
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		res, err := placement.SplitShard(ctx, rep, key, req.Epoch, s)
		if err != nil {
			return err
		}
		if res.ReportErr != nil {
			s.log.Warn("report split to meta; heartbeats will", "shard", rep.ID(), "err", res.ReportErr)
		}
		setHeaders(w, rep.ID(), res.Index, r.Header.Get(hdrSession))
		writeJSON(w, http.StatusOK, map[string]any{"parent": toRangeJSON(res.Parent), "child": toRangeJSON(res.Child)})
		return nil
	})
}

func (s *Server) rangeByID(id uint64) (fsm.Range, bool) {
	for _, r := range s.be.Ranges() {
		if r.ID == id {
			return r, true
		}
	}
	return fsm.Range{}, false
}

// AllocRangeID reserves a range id on the meta leader, wherever it is.
func (s *Server) AllocRangeID(ctx context.Context) (uint64, error) {
	m := s.be.Meta()
	if m.IsLeader() {
		return m.AllocRangeID(ctx)
	}
	return s.peers.AllocRangeID(ctx, directory{s})
}

// ReportRanges sends shard leaders' descriptors to the meta leader.
func (s *Server) ReportRanges(ctx context.Context, ranges []fsm.Range) error {
	m := s.be.Meta()
	if m.IsLeader() {
		return m.ReportRanges(ctx, ranges)
	}
	return s.peers.ReportRanges(ctx, directory{s}, ranges)
}

// directory resolves the meta leader and node addresses for the cluster
// client.
type directory struct{ s *Server }

func (d directory) MetaLeader() string                    { return d.s.be.Meta().Leader() }
func (d directory) NodeHTTPAddr(id string) (string, bool) { return d.s.be.NodeHTTPAddr(id) }

func (s *Server) internalAllocRangeID(w http.ResponseWriter, r *http.Request) error {
	if !s.be.Meta().IsLeader() {
		return fmt.Errorf("this node does not lead the meta group: %w", errNoRoute)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	id, err := s.be.Meta().AllocRangeID(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoRoute, err)
	}
	writeJSON(w, http.StatusOK, map[string]uint64{"id": id})
	return nil
}

func (s *Server) internalReportRanges(w http.ResponseWriter, r *http.Request) error {
	if !s.be.Meta().IsLeader() {
		return fmt.Errorf("this node does not lead the meta group: %w", errNoRoute)
	}
	var ranges []fsm.Range
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, &ranges); err != nil {
		return invalidf("bad report: %v", err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.be.Meta().ReportRanges(ctx, ranges); err != nil {
		return fmt.Errorf("%w: %w", errNoRoute, err)
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

var errStaleRangeMap = errors.New("the range map is behind the shard's own range")
