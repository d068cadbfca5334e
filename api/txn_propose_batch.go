package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/shard"
)

// Prepares for a shard led by another node share their node-to-node calls
// (group commit, with shardBatcher as resolves and forgets): while one call
// to the shard's leader is in flight, the prepares queued behind it go out
// together in the next. Only the call is shared: the leader proposes each
// command on its own, side by side (raft appends them together anyway), and
// answers each on its own, so the state machine sees exactly what single
// calls gave it and no replica needs a newer binary to apply them. A batch
// that fails as a whole for a reason single calls would not share (a node
// of an older binary does not serve the path; leadership came to this node)
// is sent again one command at a time, each routed on its own; that is safe
// because a prepare is idempotent (a transaction's own intents never
// conflict with it). One that found no leader, or ran out of time, answers
// every command with that error, and the coordinators send them again. A
// shared call answers up to txnProposeBatchAnswerBytes of keys and values;
// the commands past that are sent again on their own.
//
// On a two-shard benchmark the other shard's prepare was one node-to-node
// call per transaction (HTTP on both sides: about a tenth of the servers'
// CPU); under load one call now carries several.

const pathTxnProposeBatch = "/internal/v1/txn/propose-batch"

type txnProposeBatchRequest struct {
	Items []txnProposeRequest `json:"items"`
}

type txnProposeBatchResponse struct {
	Items []txnProposeBatchAnswer `json:"items"`
}

// txnProposeBatchAnswer is one command's answer: its result, the error that
// ended it, or "send alone".
type txnProposeBatchAnswer struct {
	Result *txnWireResult `json:"result,omitempty"`
	// Error, Code, Status: the error as a single call would have answered
	// it (errorStatus), decoded back into its type by cluster.Decode.
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
	Status int    `json:"status,omitempty"`
	// SendAlone: the command applied, but its answer did not fit in the
	// call's (txnProposeBatchAnswerBytes); send it again on its own.
	SendAlone bool `json:"send_alone,omitempty"`
}

type proposeItem struct {
	ctx  context.Context // the waiter's: an item whose waiter left is not sent
	key  []byte
	cmd  *fsm.Command
	enc  []byte // fsm.EncodeCommand(cmd)
	res  *fsm.Result
	err  error
	done chan error // buffered: the drainer never blocks on it
}

func proposeWeight(it *proposeItem) int { return len(it.enc) }

// txnProposeShared is txnPropose for a command whose node-to-node call may
// carry others for the same shard (prepares): proposed here when this node
// leads the key's shard, else queued for the shard's next call.
func (s *Server) txnProposeShared(ctx context.Context, key []byte, cmd *fsm.Command) (*fsm.Result, error) {
	rng, err := s.lookup(key)
	if err != nil {
		return s.txnPropose(ctx, key, cmd)
	}
	if rep, ok := s.cfg.Backend.Replica(rng.ID); ok && rep.IsLeader() && !s.batchEntriesOn() {
		return s.txnPropose(ctx, key, cmd)
	}
	enc, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	it := &proposeItem{ctx: ctx, key: key, cmd: cmd, enc: enc, done: make(chan error, 1)}
	s.txnprep.submit(ctx, s, rng.ID, it, s.proposeBatch, proposeWeight)
	if err := awaitItem(ctx, it.done); err != nil {
		return nil, err
	}
	return it.res, nil
}

// txnProposeBatchTimeout bounds one shared call, and then the single calls
// of a batch whose shared call failed. The prepares queued behind a call
// wait for it, so a call to a leader that stopped answering (paused, cut
// off) must not hold them for a whole write timeout: past this bound its
// prepares answer an unknown outcome and their coordinators send them again,
// routed to whoever leads by then (a prepare is idempotent). It is longer
// than RouteWait (3 s), the time the router waits for an election. A call
// is also bounded by the latest deadline of its prepares' coordinators.
const txnProposeBatchTimeout = 4 * time.Second

// txnProposeBatchAnswerBytes bounds the keys and values of one shared
// call's answer: a prepare answers the values of the keys it locked, which
// its command does not show (128 prepares of two 1 MiB values each would be
// 256 MiB). Past it the leader answers "send alone" for the rest, and those
// are sent again one at a time (the prepare applied already; again, it
// finds its own intents and answers the same).
const txnProposeBatchAnswerBytes = 4 << 20

// txnProposeSinglesMax bounds the prepares sent alone in the background
// (after a shared call answered them "send alone") at one time, node-wide.
const txnProposeSinglesMax = 128

// proposeBatch answers every item of one batch: items whose waiter left
// first are dropped; the rest go in one call when there are several, else
// (or when that call failed as a whole, or answered some "send alone") one
// command at a time.
func (s *Server) proposeBatch(ctx context.Context, batch []*proposeItem) {
	live := batch[:0:0]
	var latest time.Time
	for _, it := range batch {
		if err := it.ctx.Err(); err != nil {
			it.done <- err
			continue
		}
		live = append(live, it)
		d, ok := it.ctx.Deadline()
		if !ok {
			d = time.Now().Add(txnProposeBatchTimeout)
		}
		if d.After(latest) {
			latest = d
		}
	}
	if len(live) > 1 && s.batchEntriesOn() {
		// This node may lead the shard (its own coordinators' prepares
		// queue here then, at level 3): one entry for them all.
		if live = s.proposeHere(ctx, live); len(live) == 0 {
			return
		}
	}
	if len(live) == 0 {
		return
	}
	if len(live) > 1 {
		if bound := time.Now().Add(txnProposeBatchTimeout); latest.After(bound) {
			latest = bound
		}
		cctx, cancel := context.WithDeadline(ctx, latest)
		err := s.proposeBatchCall(cctx, live)
		spent := cctx.Err() != nil
		cancel()
		if err != nil && (spent || nothingDone(err) || errors.Is(err, shard.ErrUnavailable)) {
			// The call used its time up, or the router found no leader
			// that would take it within RouteWait: single calls would wait
			// as long. The coordinators send again. (The rest, such as
			// errLeadHere or a node without the batch path, go singly.)
			for _, it := range live {
				it.done <- err
			}
			return
		}
		if err == nil {
			alone := live[:0:0]
			for _, it := range live {
				// Sent again on its own: an answer that did not fit, and a
				// command the leader did nothing with (it lost leadership
				// meanwhile, say), which a single call routes again.
				if errors.Is(it.err, errSendAlone) || nothingDone(it.err) {
					alone = append(alone, it)
					continue
				}
				it.done <- it.err
			}
			if len(alone) == 0 {
				return
			}
			// Their single calls do not hold the shard's queue: what
			// queued behind this batch goes out in the next shared call
			// meanwhile, instead of waiting for answers of a megabyte or
			// a re-routed leader as well as for this call.
			// At most txnProposeSinglesMax of them run so at once; past
			// that the drainer sends them itself, as before.
			n := int64(len(alone))
			if s.txnSingles.Add(n) <= txnProposeSinglesMax && s.txnbg.spawn(txnProposeBatchTimeout, func(ctx context.Context) {
				defer s.txnSingles.Add(-n)
				s.proposeSingly(ctx, alone)
			}) {
				return
			}
			s.txnSingles.Add(-n)
			live = alone
		}
	}
	s.proposeSingly(ctx, live)
}

// proposeHere proposes, in one entry per shard, the items whose shard this
// node leads, answers them, and returns the others (and any whose entry was
// not proposed) for the shared call or single calls.
func (s *Server) proposeHere(ctx context.Context, live []*proposeItem) []*proposeItem {
	groups, others := s.localPrepareGroups(len(live), func(i int) []byte { return live[i].key },
		func(i int) fsm.Op { return live[i].cmd.Op })
	if len(groups) == 0 {
		return live
	}
	pctx, cancel := context.WithTimeout(ctx, txnProposeBatchTimeout)
	defer cancel()
	notProposed := s.proposeGroups(pctx, groups, func(i int) *fsm.Command { return live[i].cmd },
		func(i int, res *fsm.Result, err error) {
			it := live[i]
			it.res, it.err = res, err
			it.done <- err
		})
	rest := make([]*proposeItem, 0, len(others)+len(notProposed))
	for _, i := range append(others, notProposed...) {
		rest = append(rest, live[i])
	}
	return rest
}

// proposeSingly sends each item on its own call (routed on its own), all at
// once, bounded by txnProposeBatchTimeout.
func (s *Server) proposeSingly(ctx context.Context, live []*proposeItem) {
	sctx, cancel := context.WithTimeout(ctx, txnProposeBatchTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, it := range live {
		if err := it.ctx.Err(); err != nil {
			it.done <- err // its coordinator left while the shared call ran
			continue
		}
		one := func() {
			ictx, stop := context.WithCancel(sctx)
			defer stop()
			defer context.AfterFunc(it.ctx, stop)()
			it.res, it.err = s.txnPropose(ictx, it.key, it.cmd)
			it.done <- it.err
		}
		if len(live) == 1 { // a lone prepare (an idle queue): no goroutine
			one()
			continue
		}
		wg.Go(one)
	}
	wg.Wait()
}

// errLeadHere: the shard's leadership came to this node while its batch
// waited; its commands are proposed here one by one. It must not be an
// error the router routes again: the router would find this node again.
var errLeadHere = errors.New("api: this node leads the shard now")

// errSendAlone: the leader did not fit this command's answer in the shared
// call's (txnProposeBatchAnswerBytes).
var errSendAlone = errors.New("api: txn command answer too large for a shared call")

// proposeBatchCall sends the batch to its shard's leader in one call and
// fills in each item's answer. An error means no item was answered.
func (s *Server) proposeBatchCall(ctx context.Context, batch []*proposeItem) error {
	return s.route(ctx, routeReq[Replica]{
		rng:      func() (fsm.Range, error) { return s.lookup(batch[0].key) },
		leader:   true,
		fallback: true,
		local:    func(Replica, fsm.Range) error { return errLeadHere },
		remote: func(addr string, _ fsm.Range) error {
			q := txnProposeBatchRequest{Items: make([]txnProposeRequest, len(batch))}
			for i, it := range batch {
				q.Items[i] = txnProposeRequest{Key: it.key, Cmd: it.enc, Hops: 1}
			}
			out, err := s.callTxnProposeBatch(ctx, addr, &q)
			if err != nil {
				return err
			}
			if len(out.Items) != len(batch) {
				return fmt.Errorf("api: txn command batch on node %s: %d answers for %d commands", addr, len(out.Items), len(batch))
			}
			for i, a := range out.Items {
				it := batch[i]
				switch {
				case a.SendAlone:
					it.res, it.err = nil, errSendAlone
				case a.Result == nil:
					it.res, it.err = nil, fmt.Errorf("txn command on node %s: %w", addr, a.err())
				default:
					it.res, it.err = a.Result.result()
				}
			}
			return nil
		},
	})
}

// callTxnProposeBatch makes one pathTxnProposeBatch call to addr, in
// binary; a node of an older binary (no binary path: 404) gets it as JSON.
func (s *Server) callTxnProposeBatch(ctx context.Context, addr string, q *txnProposeBatchRequest) (*txnProposeBatchResponse, error) {
	return callBinary(ctx, s, addr, pathTxnProposeBatchBin, pathTxnProposeBatch, q, encodeProposeBatchRequest(q),
		func(b []byte) (*txnProposeBatchResponse, error) {
			items, err := decodeBatchAnswers(b)
			return &txnProposeBatchResponse{Items: items}, err
		})
}

// internalTxnProposeBatch serves pathTxnProposeBatch (JSON) and
// pathTxnProposeBatchBin (binary, answered in binary): each command is
// proposed as internalTxnPropose would propose it alone (routed onward when
// this node does not lead its shard), all at once, and answered on its own.
func (s *Server) internalTxnProposeBatch(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	bin := r.URL.Path == pathTxnProposeBatchBin
	var req txnProposeBatchRequest
	if bin {
		req, err = decodeProposeBatchRequest(body)
		if err != nil {
			return invalidf("internal txn propose batch: %v", err)
		}
	} else if err := unmarshalStrict(body, &req); err != nil {
		return err
	}
	if n := len(req.Items); n == 0 || n > txnResolveBatchMax {
		return invalidf("internal txn propose batch: %d commands (1..%d)", n, txnResolveBatchMax)
	}
	cmds := make([]*fsm.Command, len(req.Items))
	for i, q := range req.Items {
		cmd, err := q.command()
		if err != nil {
			return fmt.Errorf("command %d of a batch: %w", i, err)
		}
		cmds[i] = cmd
	}
	ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
	defer cancel()
	out := txnProposeBatchResponse{Items: make([]txnProposeBatchAnswer, len(cmds))}
	answer := func(i int, res *fsm.Result, err error) {
		var wr *txnWireResult
		if err == nil {
			wr, err = toWire(res)
		}
		if err != nil {
			out.Items[i] = batchAnswerError(err)
			return
		}
		out.Items[i].Result = wr
	}
	var wg sync.WaitGroup
	single := func(i int) {
		wg.Go(func() {
			res, err := s.txnProposeHops(ctx, req.Items[i].Key, cmds[i], req.Items[i].Hops)
			answer(i, res, err)
		})
	}
	// At level 3 the prepares for a shard this node leads go in one entry
	// (txn_prepare_entries.go); the rest, and any whose entry was not
	// proposed, one entry each, routed on.
	if len(cmds) == 1 || !s.batchEntriesOn() {
		for i := range cmds {
			single(i)
		}
	} else {
		groups, others := s.localPrepareGroups(len(cmds), func(i int) []byte { return req.Items[i].Key },
			func(i int) fsm.Op { return cmds[i].Op })
		for _, i := range others {
			single(i)
		}
		for _, i := range s.proposeGroups(ctx, groups, func(i int) *fsm.Command { return cmds[i] }, answer) {
			single(i)
		}
	}
	wg.Wait()
	capAnswers(out.Items, txnProposeBatchAnswerBytes)
	if bin {
		writeWire(w, encodeBatchAnswers(out.Items))
		return nil
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// capAnswers replaces the results past limit bytes (keys, values, encoded
// intents and records; the first result always stays) with "send alone".
// Errors are small and stay as they are.
func capAnswers(items []txnProposeBatchAnswer, limit int) {
	size := 0
	for i := range items {
		if items[i].Result == nil {
			continue
		}
		if size += items[i].Result.bytes(); size > limit && i > 0 {
			items[i] = txnProposeBatchAnswer{SendAlone: true}
		}
	}
}

// bytes is about what r's keys, values and encoded intents and records add
// to an answer (nil: nothing).
func (r *txnWireResult) bytes() int {
	if r == nil {
		return 0
	}
	n := len(r.Blocker) + len(r.Record) + len(r.OneShard)
	for _, rd := range r.Reads {
		n += len(rd.Key) + len(rd.Value)
	}
	for _, wr := range r.Written {
		n += len(wr.Key) + len(wr.Value)
	}
	return n
}

// batchAnswerError is err as one command's answer in a shared call: its
// message, and the status and code a single call would have answered.
func batchAnswerError(err error) txnProposeBatchAnswer {
	status, code, _ := errorStatus(err)
	return txnProposeBatchAnswer{Error: err.Error(), Code: code, Status: status}
}

// err decodes an error answer back into its type (cluster.Decode), so the
// caller tells "nothing was done" from an unknown outcome.
func (a txnProposeBatchAnswer) err() error {
	return cluster.Decode(a.Status, cluster.ErrorDetail{Code: a.Code, Message: a.Error})
}
