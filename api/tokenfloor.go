package api

import (
	"context"
	"net/http"

	"github.com/cairndb/cairn/shard"
)

// TokenReplica is what the token-floor routes need of a shard's leader
// replica beyond Replica's reads: its fencing-token ceiling and a way to
// raise its token base. *shard.Replica implements it.
//
// Concurrency: both methods may be called at any time from any number of
// request goroutines, concurrently with each other, with Replica's methods
// and with the replica applying its log.
//
//   - TokenCeiling writes nothing: a number above every token the shard has
//     handed out as of its applied index (after LinearizableRead, above
//     every grant acknowledged before the read).
//   - RaiseTokenBase proposes an fsm.OpRaiseBase, leader only, with
//     Propose's errors (Replica): *shard.NotLeaderError and
//     shard.ErrUnavailable mean nothing was written, shard.ErrOutcomeUnknown
//     that it may have been. Bases only grow, so raising again to the same
//     floor changes nothing and a retry is harmless.
type TokenReplica interface {
	TokenCeiling() uint64
	RaiseTokenBase(ctx context.Context, floor uint64) error
}

var _ TokenReplica = (*shard.Replica)(nil)

// The token floor (invariant I9 across a restore into a new cluster,
// lock/DESIGN.md): a backup records, per shard, a ceiling above every
// fencing token the shard has handed out; a restore raises every shard's
// token base to the highest of them before it writes a key, so the new
// cluster's tokens start above the old one's.
//
//	GET  /v1/cluster/shards/{id}/token-ceiling       {"shard":1,"token_ceiling":N}
//	POST /v1/cluster/shards/{id}/token-floor {"floor":N}  {"shard":1,"token_base":B}

// tokenCeiling answers on the shard's leader after a linearizable read, so
// the ceiling covers every grant acknowledged before the call.
func (s *Server) tokenCeiling(w http.ResponseWriter, r *http.Request) error {
	return s.onLeader(w, r, nil, func(rep ShardReplica) error {
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		index, err := rep.LinearizableRead(ctx)
		if err != nil {
			return err
		}
		setHeaders(w, rep.ID(), index, r.Header.Get(hdrSession))
		writeJSON(w, http.StatusOK, map[string]any{"shard": rep.ID(), "token_ceiling": rep.TokenCeiling()})
		return nil
	})
}

type tokenFloorRequest struct {
	Floor *uint64 `json:"floor"`
}

// raiseTokenFloor commits an OpRaiseBase on the shard: every later token of
// the shard is above floor. Raising to a floor at or below the base changes
// nothing, so a retry is harmless.
func (s *Server) raiseTokenFloor(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var req tokenFloorRequest
	if err := unmarshalStrict(body, &req); err != nil {
		return err
	}
	if req.Floor == nil {
		return invalidf(`"floor" is required`)
	}
	return s.onLeader(w, r, body, func(rep ShardReplica) error {
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		if err := rep.RaiseTokenBase(ctx, *req.Floor); err != nil {
			return err
		}
		setHeaders(w, rep.ID(), rep.FSM().Applied(), r.Header.Get(hdrSession))
		writeJSON(w, http.StatusOK, map[string]any{"shard": rep.ID(), "token_base": rep.FSM().TokenBase()})
		return nil
	})
}
