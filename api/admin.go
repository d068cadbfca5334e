package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cairndb/cairn/shard"
	"net/http"
	"time"

	"github.com/cairndb/cairn/fsm"
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

// internal routes: node-to-node calls, not part of the public API.
const (
	pathAllocRangeID = "/internal/v1/meta/alloc-range-id"
	pathReportRanges = "/internal/v1/meta/report-ranges"
)

type splitRequest struct {
	Key *string `json:"key"`
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

// splitShard: POST /v1/cluster/shards/{id}/split {"key":"m"}. It runs on
// the shard's leader: a new range id from the meta group, the OpSplit through
// the shard's log, then both halves reported to the meta group.
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
	return s.onLeader(w, r, body, func(rep *shard.Replica) error {
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		before := rep.Range()
		childID, err := s.AllocRangeID(ctx)
		if err != nil {
			return err
		}
		res, err := rep.Split(ctx, key, childID)
		if err != nil {
			return err
		}
		if res.Err != nil {
			return res.Err
		}
		parent := rep.Range()
		child := fsm.Range{ID: childID, Start: parent.End, End: before.End, Epoch: parent.Epoch, Replicas: parent.Replicas}
		if err := s.ReportRanges(ctx, []fsm.Range{parent, child}); err != nil {
			s.log.Warn("report split to meta; heartbeats will", "shard", rep.ID(), "err", err)
		}
		setHeaders(w, rep.ID(), res.Index, r.Header.Get(hdrSession))
		writeJSON(w, http.StatusOK, map[string]any{"parent": toRangeJSON(parent), "child": toRangeJSON(child)})
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
	var out struct {
		ID uint64 `json:"id"`
	}
	if err := s.callMetaLeader(ctx, pathAllocRangeID, nil, &out); err != nil {
		return 0, err
	}
	return out.ID, nil
}

// ReportRanges sends shard leaders' descriptors to the meta leader.
func (s *Server) ReportRanges(ctx context.Context, ranges []fsm.Range) error {
	m := s.be.Meta()
	if m.IsLeader() {
		return m.ReportRanges(ctx, ranges)
	}
	return s.callMetaLeader(ctx, pathReportRanges, ranges, nil)
}

func (s *Server) callMetaLeader(ctx context.Context, path string, in, out any) error {
	leader := s.be.Meta().Leader()
	addr, ok := s.be.NodeHTTPAddr(leader)
	if leader == "" || !ok {
		return fmt.Errorf("meta group has no known leader: %w", errNoRoute)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytesReader(b))
	if err != nil {
		return err
	}
	req.Header.Set(hdrHops, "1")
	resp, err := s.peers.Do(req)
	if err != nil {
		return fmt.Errorf("meta leader %s: %w: %w", leader, errNoRoute, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		return remoteError(resp.StatusCode, eb.Error)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

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
