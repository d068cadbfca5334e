package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
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
		return fsm.Range{}, errNotReady
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
	rng, err := s.lookup(key)
	if err != nil {
		return err
	}
	rep, index, err := s.readReplica(w, r, rng, opts, sess)
	if err != nil || rep == nil {
		return err // rep == nil: forwarded, answer written
	}
	if !rep.Range().Contains(key) {
		return &fsm.WrongShardError{Key: key, Range: rep.Range()}
	}
	kv, err := rep.FSM().Get(key)
	if err != nil {
		return err
	}
	sess.observe(rng.ID, index)
	setHeaders(w, rng.ID, index, sess.String())
	if kv == nil {
		return fmt.Errorf("key %q: %w", key, errNotFound)
	}
	if q := r.URL.Query().Get("raw"); q == "1" || q == "true" {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(kv.Value)
		return nil
	}
	writeJSON(w, http.StatusOK, toKVJSON(kv, false))
	return nil
}

// readReplica admits a read at the requested consistency on a local replica
// and returns it with the index the read reflects. When the read must run
// elsewhere it forwards the request and returns a nil replica.
func (s *Server) readReplica(w http.ResponseWriter, r *http.Request, rng fsm.Range, o readOptions, sess session) (*shard.Replica, uint64, error) {
	ctx := r.Context()
	deadline := time.Now().Add(s.cfg.RouteWait)
	for {
		var t target
		var err error
		if o.consistency == "linearizable" {
			t, err = s.leaderTarget(ctx, rng)
		} else {
			t, err = s.replicaTarget(rng)
		}
		if err != nil {
			return nil, 0, err
		}
		if t.rep == nil {
			err = s.forward(w, r, nil, t.addr)
			if s.retryRoute(ctx, deadline, err) {
				continue
			}
			return nil, 0, err
		}
		idx, err := s.admit(ctx, t.rep, rng, o, sess)
		if s.retryRoute(ctx, deadline, err) {
			continue // lost leadership between routing and reading: route again
		}
		return t.rep, idx, err
	}
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
	return s.write(w, r, nil, cmd, func(res *fsm.Result) any {
		out := map[string]any{"deleted": res.Deleted}
		if res.Prev != nil {
			out["prev"] = toKVJSON(res.Prev, false)
		}
		return out
	})
}

// write routes cmd to its shard's leader (locally or by forwarding) and
// answers with render(result).
func (s *Server) write(w http.ResponseWriter, r *http.Request, body []byte, cmd *fsm.Command, render func(*fsm.Result) any) error {
	sess, err := parseSession(r.Header.Get(hdrSession))
	if err != nil {
		return err
	}
	rng, err := s.lookup(cmd.Key)
	if err != nil {
		return err
	}
	cmd.Epoch = rng.Epoch
	ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
	defer cancel()
	deadline := time.Now().Add(s.cfg.RouteWait)
	for {
		t, err := s.leaderTarget(ctx, rng)
		if err != nil {
			return err
		}
		if t.rep == nil {
			err = s.forward(w, r, body, t.addr)
			if s.retryRoute(ctx, deadline, err) {
				continue // the leader we knew is down: nothing was sent
			}
			return err
		}
		res, err := t.rep.Propose(ctx, cmd)
		if s.retryRoute(ctx, deadline, err) {
			continue // refused before it entered the log: safe to route again
		}
		if err != nil {
			return err
		}
		sess.observe(rng.ID, res.Index)
		setHeaders(w, rng.ID, res.Index, sess.String())
		if res.Err != nil {
			return res.Err
		}
		writeJSON(w, http.StatusOK, render(res))
		return nil
	}
}
