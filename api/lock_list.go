package api

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/cairndb/cairn/fsm"
)

// lockList: GET /v1/locks[?prefix=P][&limit=N]. Locks in name order across
// shards, walked like a key scan (scan.go): a cursor moves from range to
// range, each range's part read linearizably on its leader (so expires_in
// is the leader's countdown). Each part is consistent on its own; the
// whole is not one snapshot. start/end (instead of prefix) are what the
// parts sent to other nodes use, and what "next" continues from.
func (s *Server) lockList(w http.ResponseWriter, r *http.Request) error {
	setHeaders(w, 0, 0, r.Header.Get(hdrSession))
	req, err := parseLockList(r.URL.Query())
	if err != nil {
		return err
	}
	if !s.be.Ready() {
		return errNotReady
	}
	out := lockListJSON{Locks: []lockStatusJSON{}}
	var lastShard, lastIndex uint64
	cursor := req.start
	for i := 0; len(req.end) == 0 || bytes.Compare(cursor, req.end) < 0; i++ {
		if len(out.Locks) >= req.limit {
			out.More, out.Next = true, string(cursor)
			break
		}
		if i > 1<<20 {
			return fmt.Errorf("lock list did not end after %d ranges", i) // bounded: ranges are far fewer
		}
		part := req
		part.start, part.limit = cursor, req.limit-len(out.Locks)
		res, rng, idx, err := s.lockListPart(r, part)
		if err != nil {
			return err
		}
		lastShard, lastIndex = rng.ID, idx
		out.Locks = append(out.Locks, res.Locks...)
		if res.More && len(res.Locks) > 0 {
			out.More, out.Next = true, out.Locks[len(out.Locks)-1].Name+"\x00"
			break
		}
		if len(rng.End) == 0 {
			break
		}
		cursor = rng.End
	}
	setHeaders(w, lastShard, lastIndex, r.Header.Get(hdrSession))
	writeJSON(w, http.StatusOK, out)
	return nil
}

// lockListPart lists the locks from part.start to the end of the range
// holding it (or part.end if sooner), on that range's leader.
func (s *Server) lockListPart(r *http.Request, part lockListRequest) (*lockListJSON, fsm.Range, uint64, error) {
	ctx := r.Context()
	var res *lockListJSON
	var rng fsm.Range
	var idx uint64
	within := func(rg fsm.Range) lockListRequest {
		p := part
		p.end = minEnd(part.end, rg.End)
		return p
	}
	err := s.route(ctx, routeReq[Replica]{
		rng:    func() (fsm.Range, error) { return s.lookup(part.start) },
		leader: true,
		remote: func(addr string, rg fsm.Range) error {
			p := within(rg)
			q := url.Values{}
			q.Set("start", string(p.start))
			if len(p.end) > 0 {
				q.Set("end", string(p.end))
			}
			q.Set("limit", strconv.Itoa(p.limit))
			var out lockListJSON
			h, err := s.peers.Get(ctx, r, addr, "/v1/locks?"+q.Encode(), &out, hdrSession)
			if err != nil {
				return err
			}
			i, _ := strconv.ParseUint(h.Get(hdrIndex), 10, 64)
			res, rng, idx = &out, rg, i
			return nil
		},
		local: func(rep Replica, rg fsm.Range) error {
			p := within(rg)
			i, err := rep.LinearizableRead(ctx)
			if err != nil {
				return err
			}
			recs, more, held, _, err := rep.FSM().ScanLocksRange(p.start, p.end, p.limit)
			if err == nil && !covers(held, p.start, p.end) {
				// A split committed after the lookup: look the range up
				// again (invariants I2, I5).
				err = fmt.Errorf("lock list [%q, %q): %w", p.start, p.end, errStaleRangeMap)
			}
			if err != nil {
				return err
			}
			out := &lockListJSON{Locks: make([]lockStatusJSON, 0, len(recs)), More: more}
			for _, rec := range recs {
				out.Locks = append(out.Locks, s.toLockStatus(rep, rec.Name, rec, 0))
			}
			res, rng, idx = out, rg, i
			return nil
		},
	})
	if err != nil {
		return nil, rng, 0, err
	}
	return res, rng, idx, nil
}
