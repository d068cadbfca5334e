package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/lock"
	"github.com/cairndb/cairn/shard"
)

// The Locks routes of docs/api.md. A lock lives in the shard that owns the
// key equal to its name (lock/DESIGN.md "Where locks live"), so every lock
// request is routed by its name exactly as a key request is, through the
// one routing loop (route.go), to that shard's leader; any node accepts it.

// acquireJSON is the answer of a grant.
type acquireJSON struct {
	Name  string `json:"name"`
	Token uint64 `json:"token"`
	TTL   string `json:"ttl"`
	Owner string `json:"owner"`
}

// lockStatusJSON is one lock's status: GET /v1/locks/{name} and each item of
// GET /v1/locks. Token, Owner and ExpiresIn describe the oldest holder.
type lockStatusJSON struct {
	Name      string       `json:"name"`
	Held      bool         `json:"held"`
	Token     uint64       `json:"token,omitempty"`
	Owner     string       `json:"owner,omitempty"`
	ExpiresIn string       `json:"expires_in,omitempty"`
	Waiters   int          `json:"waiters"`
	Holders   []holderJSON `json:"holders"`
	Index     uint64       `json:"index"`
	Limit     int          `json:"limit"`
	Mode      string       `json:"mode"`
}

type holderJSON struct {
	Token     uint64 `json:"token"`
	Owner     string `json:"owner"`
	Mode      string `json:"mode"`
	ExpiresIn string `json:"expires_in"`
}

type lockListJSON struct {
	Locks []lockStatusJSON `json:"locks"`
	More  bool             `json:"more"`
	Next  string           `json:"next,omitempty"`
}

// lockRoutes are the lock routes served outside the mux (ServeHTTP), like
// the key routes and for the same reason: a name may contain '/', "." or
// "..", which the mux would clean and redirect.
type lockRoutes struct {
	status  http.HandlerFunc
	post    map[lockAction]http.HandlerFunc
	badPost http.HandlerFunc // a POST without a known action
	other   http.HandlerFunc // any other method: 405
}

func (s *Server) newLockRoutes() lockRoutes {
	return lockRoutes{
		status: s.wrap("GET "+lockPrefix, "lock_status", s.lockStatus),
		post: map[lockAction]http.HandlerFunc{
			actionAcquire: s.wrap("POST "+lockPrefix, "lock_acquire", s.lockAcquire),
			actionRenew:   s.wrap("POST "+lockPrefix, "lock_renew", s.lockRenew),
			actionRelease: s.wrap("POST "+lockPrefix, "lock_release", s.lockRelease),
		},
		badPost: s.wrap("POST "+lockPrefix, "unknown", func(w http.ResponseWriter, r *http.Request) error {
			_, _, err := lockPath(r)
			if err == nil {
				err = invalidf("POST %s{name} needs an action: /acquire, /renew or /release", lockPrefix)
			}
			return err
		}),
		other: s.wrap(lockPrefix, "unknown", s.notFound),
	}
}

// serveLock dispatches a request under /v1/locks/.
func (s *Server) serveLock(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.locks.status(w, r)
	case http.MethodPost:
		p := r.URL.EscapedPath()
		for i := len(p) - 1; i >= len(lockPrefix); i-- {
			if p[i] == '/' {
				if h, ok := s.locks.post[lockAction(p[i+1:])]; ok {
					h(w, r)
					return
				}
				break
			}
		}
		s.locks.badPost(w, r)
	default:
		s.locks.other(w, r)
	}
}

// newWaiterID names an acquire that came without a request_id: the node's
// id and 64 random bits, unique enough for a queue of 256.
func (s *Server) newWaiterID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return s.node + "-" + hex.EncodeToString(b[:])
}

// withRequestID returns the acquire body with request_id set, so that a
// forwarded waiting acquire waits under the id this node knows and can
// cancel.
func withRequestID(body []byte, id string) []byte {
	m := map[string]json.RawMessage{}
	if len(body) > 0 {
		_ = json.Unmarshal(body, &m) // parseAcquire accepted it: an object
	}
	m["request_id"], _ = json.Marshal(id)
	b, _ := json.Marshal(m)
	return b
}

// lockOutcome is what a lock command did on the shard leader of this node.
type lockOutcome struct {
	res   *fsm.LockResult
	index uint64
	rng   fsm.Range
	rep   Replica
}

// proposeLock routes cmd to the leader of its lock's shard through the
// routing loop: proposed on this node's replica when it leads, else remote
// runs with the address of the node picked (a forward of the client's
// request, or an internal call). served is false when remote ran and
// succeeded: then the answer is the other node's, and out is empty.
func (s *Server) proposeLock(ctx context.Context, cmd lock.Command, remote func(addr string) error) (lockOutcome, bool, error) {
	var out lockOutcome
	served := false
	name := []byte(cmd.LockName())
	err := s.route(ctx, routeReq[Replica]{
		rng:    func() (fsm.Range, error) { return s.lookup(name) },
		leader: true,
		remote: func(addr string, _ fsm.Range) error { return remote(addr) },
		local: func(rep Replica, rg fsm.Range) error {
			pctx, cancel := context.WithTimeout(ctx, writeTimeout)
			defer cancel()
			res, idx, err := rep.Lock(pctx, cmd, rg.Epoch)
			if err != nil {
				return err
			}
			out, served = lockOutcome{res: res, index: idx, rng: rg, rep: rep}, true
			return nil
		},
	})
	return out, served, err
}

// lockAcquire: POST /v1/locks/{name}/acquire. A grant answers at once; a
// refusal with wait 0 is lock_held. With a wait, the acquire is queued on
// the leader (the queue is replicated) and this request waits until an
// applied entry grants it — on this node's replica, which keeps applying
// the group's log even if leadership moves — or until its wait or the
// request ends, when it proposes CancelWait. If the cancel finds the waiter
// granted already, Apply releases that grant (its requester never learned
// the token) and the answer is lock_held.
func (s *Server) lockAcquire(w http.ResponseWriter, r *http.Request) error {
	name, _, err := lockPath(r)
	if err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	cmd, err := parseAcquire(name, body)
	if err != nil {
		return err
	}
	// Every acquire carries a request id, so that one whose outcome is
	// unknown here can be undone (CancelWait releases a grant made for it).
	// A waiting acquire forwarded to another node waits there under the id
	// this node knows and can cancel.
	generated := cmd.WaiterID == ""
	if generated {
		cmd.WaiterID = s.newWaiterID()
		if cmd.Wait > 0 {
			body = withRequestID(body, cmd.WaiterID)
		}
	}
	start := time.Now()
	// The whole request, forwarding included, is bounded by its wait plus
	// a write's time; the wait itself by the wait (lock.MaxWait at most).
	ctx, cancel := context.WithTimeout(r.Context(), cmd.Wait+writeTimeout)
	defer cancel()
	defer context.AfterFunc(s.waits, cancel)() // the node is shutting down (EndWaits)
	out, served, err := s.proposeLock(ctx, cmd, func(addr string) error {
		return s.forward(w, r.WithContext(ctx), body, addr)
	})
	if err != nil && (cmd.Wait > 0 || generated) && errors.Is(err, shard.ErrOutcomeUnknown) {
		// The acquire may have been applied (queued or granted), and the
		// client will never learn its token: leave no waiter and no grant
		// behind. A client that named the acquire itself (request_id) and
		// did not wait may retry with that id instead, and learn the outcome.
		if _, cerr := s.cancelLockWait(context.WithoutCancel(r.Context()), name, cmd.WaiterID); cerr == nil {
			return fmt.Errorf("lock %q: the acquire's outcome was unknown (%v); it was cancelled, nothing is held: %w",
				name, err, shard.ErrUnavailable)
		}
	}
	if err != nil || !served {
		return err
	}
	res := out.res.Result
	setHeaders(w, out.rng.ID, out.index, r.Header.Get(hdrSession))
	if res.Err != nil {
		return res.Err
	}
	switch res.Status {
	case lock.StatusGranted:
		writeJSON(w, http.StatusOK, acquireJSON{Name: name, Token: res.Token, TTL: res.TTL.String(), Owner: cmd.Owner})
		return nil
	case lock.StatusQueued:
	default:
		return fmt.Errorf("lock %q: acquire applied with status %d", name, res.Status)
	}
	s.metrics.lockWaiting.Inc()
	defer s.metrics.lockWaiting.Dec()
	wctx, wcancel := context.WithDeadline(ctx, start.Add(cmd.Wait))
	defer wcancel()
	h, idx, werr := out.rep.WaitLockGrant(wctx, name, cmd.WaiterID)
	for hops := 0; werr != nil && hops < 4; hops++ {
		// The lock's range split while this request waited: the record
		// and its queue moved to the child, whose replicas start on the
		// parent's nodes. Wait there, in the same place in the queue.
		rep, rg, ok := s.followSplit(wctx, out.rng, name, werr)
		if !ok {
			break
		}
		out.rep, out.rng = rep, rg
		h, idx, werr = rep.WaitLockGrant(wctx, name, cmd.WaiterID)
	}
	s.metrics.lockWait.WithLabelValues(map[bool]string{true: "granted", false: "not_granted"}[werr == nil]).
		Observe(time.Since(start).Seconds())
	if werr == nil {
		setHeaders(w, out.rng.ID, idx, r.Header.Get(hdrSession))
		writeJSON(w, http.StatusOK, acquireJSON{Name: name, Token: h.Token, TTL: h.TTL.String(), Owner: h.Owner})
		return nil
	}
	// The wait ended without a grant seen here: the wait ran out, the
	// client went away, or the waiter left the queue. Cancel it on the
	// leader, even when the client is gone.
	outcome, cerr := s.cancelLockWait(context.WithoutCancel(r.Context()), name, cmd.WaiterID)
	if cerr != nil {
		// The waiter may still be queued, and a later release may grant
		// it: the acquire's outcome is unknown, never "nothing happened"
		// (a 503 would tell the client so). A retry with the same
		// request_id learns the token if it was granted.
		return fmt.Errorf("lock %q: the wait ended but cancelling it failed (%v); the acquire may still be "+
			"granted, retry with request_id %q: %w", name, cerr, cmd.WaiterID, shard.ErrOutcomeUnknown)
	}
	if s.waits.Err() != nil {
		return fmt.Errorf("lock %q: node %s is shutting down; the wait was cancelled, nothing is held: %w",
			name, s.node, shard.ErrUnavailable)
	}
	held := &lock.Error{Code: lock.CodeLockHeld, Msg: fmt.Sprintf("lock %q: not granted within the wait of %s", name, cmd.Wait)}
	if outcome == "released" {
		held.Msg += " (granted as the wait ended, and released again)"
	}
	if rec, _, err := out.rep.FSM().LockRecord([]byte(name)); err == nil && rec.Held() {
		held.Owner, held.Token = rec.Holders[0].Owner, rec.Holders[0].Token
	}
	return held
}

// followSplit finds where a lock waited on in range from went when waiting
// there ended in werr: when werr says the name left from's range (a split),
// this node's replica of the range that holds it now, once the node's range
// map shows it and the replica runs (within the wait and a few seconds).
func (s *Server) followSplit(ctx context.Context, from fsm.Range, name string, werr error) (ShardReplica, fsm.Range, bool) {
	var ws *fsm.WrongShardError
	if !errors.As(werr, &ws) {
		return nil, fsm.Range{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for {
		if rg, err := s.lookup([]byte(name)); err == nil && rg.ID != from.ID {
			if rep, ok := s.be.Replica(rg.ID); ok { // the child's replica starts a moment after the map shows it
				return rep, rg, true
			}
		}
		select {
		case <-ctx.Done():
			return nil, fsm.Range{}, false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cancelLockWait proposes CancelWait for waiterID on the lock's leader and
// says what it did: "cancelled", "released" or "none". A refusal that is
// retryable (a leadership transfer, no leader yet, a stale route) is tried
// again, on whichever node leads by then, until writeTimeout: a waiter
// left queued could be granted to a request that is over.
func (s *Server) cancelLockWait(ctx context.Context, name, waiterID string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	backoff := 20 * time.Millisecond
	for {
		outcome, err := s.cancelLockWaitOnce(ctx, name, waiterID)
		if err == nil {
			return outcome, nil
		}
		// CancelWait is idempotent by waiter id, so an attempt whose
		// outcome is unknown is tried again too.
		if _, _, retryable := errorStatus(err); !retryable && !errors.Is(err, shard.ErrOutcomeUnknown) {
			return "", err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", err
		case <-t.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// cancelLockWaitOnce is one attempt of cancelLockWait.
func (s *Server) cancelLockWaitOnce(ctx context.Context, name, waiterID string) (string, error) {
	var remote cluster.CancelWaitResult
	out, served, err := s.proposeLock(ctx, lock.CancelWait{Name: name, WaiterID: waiterID}, func(addr string) error {
		var err error
		remote, err = s.peers.CancelLockWait(ctx, addr, cluster.CancelWaitRequest{Name: name, WaiterID: waiterID})
		return err
	})
	switch {
	case err != nil:
		return "", err
	case !served:
		return remote.Outcome, nil
	case out.res.Result.Err != nil:
		return "", out.res.Result.Err
	case out.res.Result.Status == lock.StatusReleased:
		return "released", nil
	case out.res.Result.Status == lock.StatusCancelled:
		return "cancelled", nil
	}
	return "none", nil
}

// internalCancelWait serves cluster.PathLockCancelWait.
func (s *Server) internalCancelWait(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var req cluster.CancelWaitRequest
	if err := unmarshalStrict(body, &req); err != nil {
		return err
	}
	if err := validateLockName(req.Name); err != nil {
		return err
	}
	if req.WaiterID == "" || len(req.WaiterID) > lock.MaxWaiterIDSize {
		return invalidf("waiter_id must be 1..%d bytes", lock.MaxWaiterIDSize)
	}
	outcome, err := s.cancelLockWait(r.Context(), req.Name, req.WaiterID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, cluster.CancelWaitResult{Outcome: outcome})
	return nil
}

// lockRenew: POST /v1/locks/{name}/renew {"token":N}.
func (s *Server) lockRenew(w http.ResponseWriter, r *http.Request) error {
	return s.lockTokenOp(w, r, func(name string, token uint64) lock.Command {
		return lock.Renew{Name: name, Token: token}
	}, func(res lock.Result) any {
		return map[string]any{"ttl": res.TTL.String(), "token": res.Token}
	})
}

// lockRelease: POST /v1/locks/{name}/release {"token":N}.
func (s *Server) lockRelease(w http.ResponseWriter, r *http.Request) error {
	return s.lockTokenOp(w, r, func(name string, token uint64) lock.Command {
		return lock.Release{Name: name, Token: token}
	}, func(lock.Result) any {
		return map[string]any{"released": true}
	})
}

// lockTokenOp runs a renew or release: a token that does not hold the lock
// is lock_lost (410), from Apply.
func (s *Server) lockTokenOp(w http.ResponseWriter, r *http.Request, mk func(string, uint64) lock.Command,
	render func(lock.Result) any) error {
	name, _, err := lockPath(r)
	if err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	token, err := parseToken(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
	defer cancel()
	out, served, err := s.proposeLock(ctx, mk(name, token), func(addr string) error {
		return s.forward(w, r.WithContext(ctx), body, addr)
	})
	if err != nil || !served {
		return err
	}
	setHeaders(w, out.rng.ID, out.index, r.Header.Get(hdrSession))
	if out.res.Result.Err != nil {
		return out.res.Result.Err
	}
	writeJSON(w, http.StatusOK, render(out.res.Result))
	return nil
}

// lockStatus: GET /v1/locks/{name}[?wait_index=N&wait=30s]. Linearizable,
// on the shard leader, whose lease countdowns give expires_in. With
// wait_index it answers once the lock's index (the seq of the last change
// to its holders) passes N, or when the wait ends, with the status then.
func (s *Server) lockStatus(w http.ResponseWriter, r *http.Request) error {
	name, _, err := lockPath(r)
	if err != nil {
		return err
	}
	req, err := parseStatus(r.URL.Query())
	if err != nil {
		return err
	}
	bound := writeTimeout
	if r.URL.Query().Has("wait_index") {
		bound += req.wait
	}
	ctx, cancel := context.WithTimeout(r.Context(), bound)
	defer cancel()
	defer context.AfterFunc(s.waits, cancel)() // the node is shutting down (EndWaits)
	start := time.Now()
	var st lockStatusJSON
	var rng fsm.Range
	served := false
	err = s.route(ctx, routeReq[Replica]{
		rng:    func() (fsm.Range, error) { return s.lookup([]byte(name)) },
		leader: true,
		remote: func(addr string, _ fsm.Range) error { return s.forward(w, r.WithContext(ctx), nil, addr) },
		local: func(rep Replica, rg fsm.Range) error {
			if r.URL.Query().Has("wait_index") {
				// Returns at once when the holders changed after wait_index
				// (the replica knows when a free lock's record was dropped);
				// otherwise at the next change or when the wait ends.
				if _, err := rep.LinearizableRead(ctx); err != nil {
					return err
				}
				wctx, wcancel := context.WithDeadline(ctx, start.Add(req.wait))
				werr := rep.WaitLockChange(wctx, name, req.waitIndex)
				wcancel()
				if s.waits.Err() != nil {
					return fmt.Errorf("lock %q: node %s is shutting down: %w", name, s.node, shard.ErrUnavailable)
				}
				if werr != nil && wctx.Err() == nil {
					return werr
				}
			}
			cur, err := s.readLockStatus(ctx, rep, name)
			if err != nil {
				return err
			}
			st, rng, served = cur, rg, true
			return nil
		},
	})
	if err != nil || !served {
		return err
	}
	setHeaders(w, rng.ID, st.Index, r.Header.Get(hdrSession))
	writeJSON(w, http.StatusOK, st)
	return nil
}

// readLockStatus reads name's record at a linearizable point on rep, the
// leader.
func (s *Server) readLockStatus(ctx context.Context, rep Replica, name string) (lockStatusJSON, error) {
	if _, err := rep.LinearizableRead(ctx); err != nil {
		return lockStatusJSON{}, err
	}
	rec, index, err := rep.LockStatus(name)
	if err != nil {
		return lockStatusJSON{}, err
	}
	return s.toLockStatus(rep, name, rec, index), nil
}

// toLockStatus renders a record (nil: free) with its status index: the
// record's ChangeSeq, or for a free lock the seq of what the replica has
// applied, above every change the lock ever had (Replica.LockStatus). A
// listed record has index 0: it is its ChangeSeq.
func (s *Server) toLockStatus(rep Replica, name string, rec *lock.Record, index uint64) lockStatusJSON {
	st := lockStatusJSON{Name: name, Holders: []holderJSON{}, Index: index, Limit: 1, Mode: lock.Exclusive.String()}
	if rec == nil {
		return st
	}
	st.Index = rec.ChangeSeq
	if rec.Limit > 0 {
		st.Limit = rec.Limit
	}
	st.Mode = rec.Mode().String()
	st.Waiters = len(rec.Waiters)
	for i, h := range rec.Holders {
		left, ok := rep.LockRemaining(name, h.Token)
		if !ok {
			left = h.TTL // not counted down here yet: the leader starts it in full (I10)
		}
		hj := holderJSON{Token: h.Token, Owner: h.Owner, Mode: h.Mode.String(), ExpiresIn: left.String()}
		st.Holders = append(st.Holders, hj)
		if i == 0 {
			st.Held, st.Token, st.Owner, st.ExpiresIn = true, h.Token, h.Owner, hj.ExpiresIn
		}
	}
	return st
}
