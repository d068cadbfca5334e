package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/cairndb/cairn/fsm"
)

// writeTimeout bounds one write end to end, forwarding included.
const writeTimeout = 10 * time.Second

type kvJSON struct {
	Key         string  `json:"key"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"` // set instead of value when it is not UTF-8
	CreateIndex uint64  `json:"create_index"`
	ModIndex    uint64  `json:"mod_index"`
	Version     uint64  `json:"version"`
	TTL         string  `json:"ttl,omitempty"`
	Lease       string  `json:"lease"`
}

func toKVJSON(kv *fsm.KV, keysOnly bool) kvJSON {
	out := kvJSON{Key: string(kv.Key), CreateIndex: kv.CreateIndex, ModIndex: kv.ModIndex,
		Version: kv.Version, Lease: kv.Lease}
	if kv.TTL > 0 {
		out.TTL = kv.TTL.String()
	}
	if !keysOnly {
		if utf8.Valid(kv.Value) {
			v := string(kv.Value)
			out.Value = &v
		} else {
			out.ValueBase64 = base64.StdEncoding.EncodeToString(kv.Value)
		}
	}
	return out
}

// lookup finds the range owning key.
func (s *Server) lookup(key []byte) (fsm.Range, error) {
	if !s.be.Ready() {
		return fsm.Range{}, errNotReady
	}
	rng, ok := s.be.Lookup(key)
	if !ok {
		// A gap: the map holds a split's parent update but not yet its child.
		return fsm.Range{}, fmt.Errorf("no range holds key %q: %w", key, errStaleRangeMap)
	}
	return rng, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) error {
	sess, err := parseSession(r.Header.Get(hdrSession))
	if err != nil {
		return err
	}
	setHeaders(w, 0, 0, sess.String())
	key, err := keyFromPath(r)
	if err != nil {
		return err
	}
	opts, err := parseReadOptions(r.URL.Query())
	if err != nil {
		return err
	}
	fence, err := parseFenceQuery(r.URL.Query())
	if err != nil {
		return err
	}
	if fence != nil {
		return s.fencedGet(w, r, key, fence, opts)
	}
	var kv *fsm.KV
	var rng fsm.Range
	var index uint64
	served := false // false: forwarded, the answer is written
	// A write intent of a multi-shard transaction on the key: meet it
	// (fsm/txn2pc.go) and read again.
	err = s.meetIntents(r.Context(), func() error {
		return s.route(r.Context(), routeReq[Replica]{
			rng:    func() (fsm.Range, error) { return s.lookup(key) },
			leader: opts.consistency == "linearizable",
			remote: func(addr string, _ fsm.Range) error { return s.forward(w, r, nil, addr) },
			local: func(rep Replica, rg fsm.Range) error {
				idx, err := s.admit(r.Context(), rep, rg, opts, sess)
				if err == nil && !rep.Range().Contains(key) {
					err = fmt.Errorf("key %q: %w", key, errStaleRangeMap)
				}
				if err != nil {
					return err
				}
				// The FSM checks the key against the range stored with the
				// data it reads: a split that committed after the check above
				// answers wrong_shard here, and the key is routed again
				// (invariant I2).
				if kv, err = rep.FSM().Get(key); err != nil {
					return err
				}
				rng, index, served = rg, idx, true
				return nil
			},
		})
	})
	if err != nil || !served {
		return err
	}
	sess.observe(rng.ID, index)
	setHeaders(w, rng.ID, index, sess.String())
	if kv == nil {
		return fmt.Errorf("key %q: %w", key, errNotFound)
	}
	if isTrue(r.URL.Query().Get("raw")) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(kv.Value)
		return nil
	}
	writeJSON(w, http.StatusOK, toKVJSON(kv, false))
	return nil
}

// fencedGet is a GET with ?fence_lock=L&fence_token=T: a read through raft
// (fsm.OpFencedGet) that registers T for L on the key, so every later write
// fenced with a lower token is refused (invariant I11), and that fails with
// stale_token if a higher token is registered already. It is a write as far
// as routing goes: the leader proposes it.
func (s *Server) fencedGet(w http.ResponseWriter, r *http.Request, key []byte, fence *fsm.Fence, opts readOptions) error {
	if r.URL.Query().Has("consistency") && opts.consistency != "linearizable" || r.URL.Query().Has("max_staleness") {
		return invalidf("a fenced read goes through raft: consistency %s and max_staleness do not apply", opts.consistency)
	}
	cmd := &fsm.Command{Op: fsm.OpFencedGet, Key: key, Fence: fence, Time: s.cfg.Clock.Now().UnixNano()}
	res, err := s.proposeWrite(w, r, nil, cmd)
	if err != nil || res == nil {
		return err
	}
	if res.Err != nil {
		return res.Err
	}
	if res.KV == nil {
		return fmt.Errorf("key %q: %w", key, errNotFound)
	}
	if isTrue(r.URL.Query().Get("raw")) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(res.KV.Value)
		return nil
	}
	writeJSON(w, http.StatusOK, toKVJSON(res.KV, false))
	return nil
}

func (s *Server) put(w http.ResponseWriter, r *http.Request) error {
	setHeaders(w, 0, 0, r.Header.Get(hdrSession))
	key, err := keyFromPath(r)
	if err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	cmd, err := parsePut(r, key, body)
	if err != nil {
		return err
	}
	cmd.Time = s.cfg.Clock.Now().UnixNano() // the proposer's time: TTLs count from it
	return s.write(w, r, body, cmd, func(res *fsm.Result) any {
		out := map[string]any{"key": string(key), "mod_index": res.Index}
		if res.KV != nil {
			out["mod_index"] = res.KV.ModIndex
			out["version"] = res.KV.Version
			out["create_index"] = res.KV.CreateIndex
		}
		if res.Prev != nil {
			out["prev"] = toKVJSON(res.Prev, false)
		}
		return out
	})
}

func (s *Server) del(w http.ResponseWriter, r *http.Request) error {
	setHeaders(w, 0, 0, r.Header.Get(hdrSession))
	key, err := keyFromPath(r)
	if err != nil {
		return err
	}
	cmd, err := parseDelete(r, key)
	if err != nil {
		return err
	}
	cmd.Time = s.cfg.Clock.Now().UnixNano() // the proposer's time
	return s.write(w, r, nil, cmd, func(res *fsm.Result) any {
		out := map[string]any{"deleted": res.Deleted}
		if res.Prev != nil {
			out["prev"] = toKVJSON(res.Prev, false)
		}
		return out
	})
}

// write routes cmd to its shard's leader (locally or by forwarding) and
// answers with render(result). A command refused before it entered the log
// (not the leader, the key's range split off) is routed again.
func (s *Server) write(w http.ResponseWriter, r *http.Request, body []byte, cmd *fsm.Command, render func(*fsm.Result) any) error {
	res, err := s.proposeWrite(w, r, body, cmd)
	if err != nil || res == nil {
		return err // res == nil: forwarded, the answer is written
	}
	if res.Err != nil {
		return res.Err
	}
	writeJSON(w, http.StatusOK, render(res))
	return nil
}

// proposeWrite routes cmd to its shard's leader and returns the result
// applied there, with the answer's headers set; nil when the request was
// forwarded and the other node's answer is written already.
func (s *Server) proposeWrite(w http.ResponseWriter, r *http.Request, body []byte, cmd *fsm.Command) (*fsm.Result, error) {
	sess, err := parseSession(r.Header.Get(hdrSession))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
	defer cancel()
	var res *fsm.Result
	var rng fsm.Range
	err = s.meetIntents(ctx, func() error {
		return s.route(ctx, routeReq[Replica]{
			rng:    func() (fsm.Range, error) { return s.lookup(cmd.Key) },
			leader: true,
			remote: func(addr string, _ fsm.Range) error { return s.forward(w, r, body, addr) },
			local: func(rep Replica, rg fsm.Range) error {
				cmd.Epoch = rg.Epoch
				out, err := rep.Propose(ctx, cmd)
				if err != nil {
					return err
				}
				var ws *fsm.WrongShardError
				if errors.As(out.Err, &ws) || isIntent(out.Err) {
					return out.Err // applied as a no-op: the key left this range, or met an intent
				}
				res, rng = out, rg
				return nil
			},
		})
	})
	if err != nil || res == nil {
		return nil, err
	}
	sess.observe(rng.ID, res.Index)
	setHeaders(w, rng.ID, res.Index, sess.String())
	return res, nil
}
