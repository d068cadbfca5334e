package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cairndb/cairn/fsm"
)

const (
	defaultScanLimit = 1000
	maxScanLimit     = 10000
)

type scanResponse struct {
	KVs  []kvJSON `json:"kvs"`
	More bool     `json:"more"`
	Next string   `json:"next,omitempty"`
}

type scanRequest struct {
	start, end []byte // [start, end); empty end = +infinity
	limit      int
	keysOnly   bool
	read       readOptions
}

func parseScan(q url.Values) (scanRequest, error) {
	var req scanRequest
	var err error
	if req.read, err = parseReadOptions(q); err != nil {
		return req, err
	}
	if p := q.Get("prefix"); p != "" {
		// start continues a prefix scan from its "next", which always
		// lies inside the prefix: every key in [p, prefixEnd(p)) starts
		// with p. A start outside would widen or empty the scan.
		start := q.Get("start")
		if q.Get("end") != "" {
			return req, invalidf("prefix cannot be combined with end")
		}
		if start != "" && !strings.HasPrefix(start, p) {
			return req, invalidf("start %q does not begin with prefix %q: with a prefix, start continues the scan from a page's next", start, p)
		}
		req.start, req.end = []byte(p), prefixEnd([]byte(p))
		if start != "" {
			req.start = []byte(start)
		}
	} else {
		req.start, req.end = []byte(q.Get("start")), []byte(q.Get("end"))
	}
	if len(req.end) > 0 && bytes.Compare(req.start, req.end) >= 0 {
		return req, invalidf("start must sort before end")
	}
	req.limit = defaultScanLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) || n == 0 {
			return req, invalidf("bad limit %q", s)
		}
		req.limit = int(min(n, maxScanLimit)) // an out-of-range number is capped too
	}
	req.keysOnly = isTrue(q.Get("keys_only"))
	return req, nil
}

// prefixEnd is the first key after every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // all 0xff: to the end of the keyspace
}

// scan returns keys in byte order across shards. It walks a cursor from
// start: each step looks up the range holding the cursor, reads that range's
// part at the requested consistency, and moves the cursor to the range's
// end. Each part is consistent on its own; the whole is not one snapshot.
func (s *Server) scan(w http.ResponseWriter, r *http.Request) error {
	sess, err := parseSession(r.Header.Get(hdrSession))
	if err != nil {
		return err
	}
	setHeaders(w, 0, 0, sess.String())
	req, err := parseScan(r.URL.Query())
	if err != nil {
		return err
	}
	if !s.be.Ready() {
		return errNotReady
	}
	out := scanResponse{KVs: []kvJSON{}}
	var lastShard, lastIndex uint64
	cursor := req.start
	for len(req.end) == 0 || bytes.Compare(cursor, req.end) < 0 {
		if len(out.KVs) >= req.limit {
			out.More, out.Next = true, string(cursor)
			break
		}
		part := req
		part.start, part.limit = cursor, req.limit-len(out.KVs)
		res, rng, idx, err := s.scanPart(r, part, sess)
		if err != nil {
			return err
		}
		sess.observe(rng.ID, idx)
		lastShard, lastIndex = rng.ID, idx
		out.KVs = append(out.KVs, res.KVs...)
		if res.More && len(res.KVs) > 0 {
			out.More = true
			out.Next = out.KVs[len(out.KVs)-1].Key + "\x00"
			break
		}
		if len(rng.End) == 0 {
			break // the last range: nothing after it
		}
		cursor = rng.End
	}
	setHeaders(w, lastShard, lastIndex, sess.String())
	writeJSON(w, http.StatusOK, out)
	return nil
}

// scanPart reads from part.start to the end of the range holding it (or
// part.end if sooner), from a local replica or from another node. A local
// replica whose own range no longer covers the part (the map lags a split)
// makes it look the range up again.
func (s *Server) scanPart(r *http.Request, part scanRequest, sess session) (*scanResponse, fsm.Range, uint64, error) {
	ctx := r.Context()
	var res *scanResponse
	var rng fsm.Range
	var idx uint64
	within := func(rg fsm.Range) scanRequest {
		p := part
		p.end = minEnd(part.end, rg.End)
		return p
	}
	// A write intent of a multi-shard transaction in the window: meet it
	// (fsm/txn2pc.go) and scan again.
	err := s.meetIntents(ctx, func() error {
		return s.route(ctx, routeReq[Replica]{
			rng:    func() (fsm.Range, error) { return s.lookup(part.start) },
			leader: part.read.consistency == "linearizable",
			remote: func(addr string, rg fsm.Range) error {
				out, i, err := s.remoteScan(ctx, r, addr, within(rg))
				if err == nil {
					res, rng, idx = out, rg, i
				}
				return err
			},
			local: func(rep Replica, rg fsm.Range) error {
				p := within(rg)
				i, err := s.admit(ctx, rep, rg, p.read, sess)
				if err != nil {
					return err
				}
				// The part answers for all of [p.start, p.end) — the caller moves
				// its cursor to rng.End — only if the range stored with the keys
				// read still covers it. A split that committed after the lookup
				// moved some of it to the child: look the range up again
				// (invariants I2, I5).
				kvs, more, held, err := rep.FSM().ScanRange(p.start, p.end, p.limit, p.keysOnly)
				if err == nil && !covers(held, p.start, p.end) {
					err = fmt.Errorf("scan [%q, %q): %w", p.start, p.end, errStaleRangeMap)
				}
				if err != nil {
					return err
				}
				out := &scanResponse{KVs: make([]kvJSON, 0, len(kvs)), More: more}
				for _, kv := range kvs {
					out.KVs = append(out.KVs, toKVJSON(kv, p.keysOnly))
				}
				res, rng, idx = out, rg, i
				return nil
			},
		})
	})
	if err != nil {
		return nil, rng, 0, err
	}
	return res, rng, idx, nil
}

// covers reports whether rng holds all of [start, end) (empty end = +inf).
func covers(rng fsm.Range, start, end []byte) bool {
	if !rng.Contains(start) {
		return false
	}
	if len(rng.End) == 0 {
		return true
	}
	return len(end) > 0 && bytes.Compare(end, rng.End) <= 0
}

// admit waits until a local read at the requested consistency is allowed and
// returns the index it reflects.
func (s *Server) admit(ctx context.Context, rep Replica, rng fsm.Range, o readOptions, sess session) (uint64, error) {
	switch o.consistency {
	case "session":
		return rep.SessionRead(ctx, sess[rng.ID], s.cfg.SessionWait)
	case "stale":
		return rep.StaleRead(o.maxStaleness)
	}
	return rep.LinearizableRead(ctx)
}

func (s *Server) remoteScan(ctx context.Context, r *http.Request, addr string, part scanRequest) (*scanResponse, uint64, error) {
	q := url.Values{}
	q.Set("start", string(part.start))
	if len(part.end) > 0 {
		q.Set("end", string(part.end))
	}
	q.Set("limit", strconv.Itoa(part.limit))
	q.Set("consistency", part.read.consistency)
	q.Set("max_staleness", part.read.maxStaleness.String())
	if part.keysOnly {
		q.Set("keys_only", "1")
	}
	var res scanResponse
	h, err := s.peers.Get(ctx, r, addr, "/v1/kv?"+q.Encode(), &res, hdrSession)
	if err != nil {
		return nil, 0, err
	}
	idx, _ := strconv.ParseUint(h.Get(hdrIndex), 10, 64)
	return &res, idx, nil
}

// minEnd returns the smaller of two exclusive ends, where empty is +infinity.
func minEnd(a, b []byte) []byte {
	switch {
	case len(a) == 0:
		return b
	case len(b) == 0:
		return a
	case bytes.Compare(a, b) <= 0:
		return a
	}
	return b
}
