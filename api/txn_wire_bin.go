package api

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/internal/wire"
)

// The binary form of the two-phase commit's node-to-node calls. The same
// messages as the JSON of pathTxnPropose and pathTxnProposeBatch
// (txnProposeRequest, txnWireResult, txnProposeBatchAnswer), in the tag/value
// format of internal/wire, served at pathTxnProposeBin and
// pathTxnProposeBatchBin. A command and the records, intents and values of
// an answer are bytes: JSON carried them in base64, and decoding that JSON
// was most of the CPU the calls cost (a resolve batch carries the write set
// of up to 128 transactions). A node of an older binary answers the binary
// paths 404; the caller then sends the same call as JSON (callTxnPropose,
// callTxnProposeBatch).
//
// Fields, by message (a repeated field is its field written once per
// element; unknown fields are skipped, so a newer writer may add some, but
// a request field an older node must not ignore needs a new path):
//
//	request  1 key, 2 cmd, 3 hops
//	batch    1 request (repeated)
//	result   1 index, 2 wrong_shard, 3 invalid, 4 vote, 5 blocker, 6 read (repeated),
//	         7 tokens (uvarints, one bytes field), 8 verdict, 9 record,
//	         10 written (repeated), 11 resolved (repeated), 12 one_shard, 13 stale
//	read     1 key, 2 found, 3 value, 4 create_index, 5 mod_index, 6 version,
//	         7 kind, 8 deleted (zigzag), 9 seq
//	stale    1 key, 2 lock, 3 token, 4 accepted
//	answers  1 answer (repeated)
//	answer   1 result, 2 error, 3 code, 4 status, 5 send_alone

const (
	pathTxnProposeBin      = "/internal/v2/txn/propose"
	pathTxnProposeBatchBin = "/internal/v2/txn/propose-batch"
	contentTypeWire        = "application/x-cairn-wire"
)

func appendProposeRequest(b []byte, q *txnProposeRequest) []byte {
	b = wire.AppendBytes(b, 1, q.Key)
	b = wire.AppendBytes(b, 2, q.Cmd)
	return wire.AppendUint(b, 3, uint64(q.Hops))
}

func encodeProposeRequest(q *txnProposeRequest) []byte {
	return appendProposeRequest(make([]byte, 0, len(q.Key)+len(q.Cmd)+16), q)
}

func encodeProposeBatchRequest(q *txnProposeBatchRequest) []byte {
	n := 0
	for i := range q.Items {
		n += len(q.Items[i].Key) + len(q.Items[i].Cmd) + 24
	}
	b := make([]byte, 0, n)
	for i := range q.Items {
		var mark int
		b, mark = wire.BeginNested(b, 1)
		b = appendProposeRequest(b, &q.Items[i])
		b = wire.EndNested(b, mark)
	}
	return b
}

func decodeProposeRequest(p []byte) (txnProposeRequest, error) {
	var q txnProposeRequest
	err := wire.Walk(p, func(f, wt, v uint64, p []byte) error {
		switch f {
		case 1:
			q.Key = wire.Clone(p)
			return wire.WantType(f, wt, wire.TypeBytes)
		case 2:
			q.Cmd = wire.Clone(p)
			return wire.WantType(f, wt, wire.TypeBytes)
		case 3:
			if v > 1<<16 {
				return fmt.Errorf("%w: hops %d", wire.ErrMalformed, v)
			}
			q.Hops = int(v)
			return wire.WantType(f, wt, wire.TypeVarint)
		}
		return nil
	})
	return q, err
}

func decodeProposeBatchRequest(p []byte) (txnProposeBatchRequest, error) {
	var q txnProposeBatchRequest
	err := wire.Walk(p, func(f, wt, _ uint64, p []byte) error {
		if f != 1 {
			return nil
		}
		if err := wire.WantType(f, wt, wire.TypeBytes); err != nil {
			return err
		}
		if len(q.Items) == txnResolveBatchMax {
			return fmt.Errorf("%w: over %d commands", wire.ErrMalformed, txnResolveBatchMax)
		}
		it, err := decodeProposeRequest(p)
		if err != nil {
			return err
		}
		q.Items = append(q.Items, it)
		return nil
	})
	return q, err
}

func appendWireResult(b []byte, r *txnWireResult) []byte {
	b = wire.AppendUint(b, 1, r.Index)
	b = wire.AppendUint(b, 2, boolUint(r.WrongShard))
	b = wire.AppendBytes(b, 3, []byte(r.Invalid))
	b = wire.AppendUint(b, 4, uint64(r.Vote))
	b = wire.AppendBytes(b, 5, r.Blocker)
	for i := range r.Reads {
		b = appendWireRead(b, 6, &r.Reads[i])
	}
	if len(r.Tokens) > 0 {
		var mark int
		b, mark = wire.BeginNested(b, 7)
		for _, t := range r.Tokens {
			b = binary.AppendUvarint(b, t)
		}
		b = wire.EndNested(b, mark)
	}
	b = wire.AppendUint(b, 8, uint64(r.Verdict))
	b = wire.AppendBytes(b, 9, r.Record)
	for i := range r.Written {
		b = appendWireRead(b, 10, &r.Written[i])
	}
	for _, k := range r.Resolved {
		b = wire.AppendBytesAlways(b, 11, k)
	}
	b = wire.AppendBytes(b, 12, r.OneShard)
	if st := r.Stale; st != nil {
		var mark int
		b, mark = wire.BeginNested(b, 13)
		b = wire.AppendBytes(b, 1, st.Key)
		b = wire.AppendBytes(b, 2, []byte(st.Lock))
		b = wire.AppendUint(b, 3, st.Token)
		b = wire.AppendUint(b, 4, st.Accepted)
		b = wire.EndNested(b, mark)
	}
	b = wire.AppendUint(b, 14, uint64(r.Riders))
	if len(r.RidersRefused) > 0 {
		var mark int
		b, mark = wire.BeginNested(b, 15)
		for _, i := range r.RidersRefused {
			b = binary.AppendUvarint(b, uint64(i))
		}
		b = wire.EndNested(b, mark)
	}
	return b
}

func appendWireRead(b []byte, field uint64, r *txnWireRead) []byte {
	b, mark := wire.BeginNested(b, field)
	b = wire.AppendBytes(b, 1, r.Key)
	b = wire.AppendUint(b, 2, boolUint(r.Found))
	b = wire.AppendBytes(b, 3, r.Value)
	b = wire.AppendUint(b, 4, r.CreateIndex)
	b = wire.AppendUint(b, 5, r.ModIndex)
	b = wire.AppendUint(b, 6, r.Version)
	b = wire.AppendUint(b, 7, uint64(r.Kind))
	b = wire.AppendInt(b, 8, int64(r.Deleted))
	b = wire.AppendUint(b, 9, r.Seq)
	return wire.EndNested(b, mark)
}

func encodeWireResult(r *txnWireResult) []byte {
	return appendWireResult(make([]byte, 0, r.bytes()+64), r)
}

// maxWireRiders bounds the riders an answer may count: far above what a
// coordinator attaches (txnResolveBatchMax), so binaries that attach more
// still read each other's answers.
const maxWireRiders = 1 << 16

func decodeWireResult(p []byte) (*txnWireResult, error) {
	r := &txnWireResult{}
	err := wire.Walk(p, func(f, wt, v uint64, p []byte) error {
		want := uint64(wire.TypeVarint)
		switch f {
		case 1:
			r.Index = v
		case 2:
			r.WrongShard = v != 0
		case 3:
			r.Invalid, want = string(p), wire.TypeBytes
		case 4:
			if v > 255 {
				return fmt.Errorf("%w: field %d: %d is over a byte", wire.ErrMalformed, f, v)
			}
			r.Vote = uint8(v)
		case 5:
			r.Blocker, want = wire.Clone(p), wire.TypeBytes
		case 6, 10:
			want = wire.TypeBytes
			if wt != want {
				break
			}
			rd, err := decodeWireRead(p)
			if err != nil {
				return err
			}
			if f == 6 {
				r.Reads = append(r.Reads, rd)
			} else {
				r.Written = append(r.Written, rd)
			}
		case 7:
			want = wire.TypeBytes
			for len(p) > 0 {
				t, n := binary.Uvarint(p)
				if n <= 0 {
					return fmt.Errorf("%w: tokens", wire.ErrMalformed)
				}
				r.Tokens, p = append(r.Tokens, t), p[n:]
			}
		case 8:
			if v > 255 {
				return fmt.Errorf("%w: field %d: %d is over a byte", wire.ErrMalformed, f, v)
			}
			r.Verdict = uint8(v)
		case 9:
			r.Record, want = wire.Clone(p), wire.TypeBytes
		case 11:
			r.Resolved, want = append(r.Resolved, wire.Clone(p)), wire.TypeBytes
		case 12:
			r.OneShard, want = wire.Clone(p), wire.TypeBytes
		case 13:
			want = wire.TypeBytes
			if wt != want {
				break
			}
			st, err := decodeWireStale(p)
			if err != nil {
				return err
			}
			r.Stale = st
		case 14:
			if v > maxWireRiders {
				return fmt.Errorf("%w: field %d: %d riders", wire.ErrMalformed, f, v)
			}
			r.Riders = int(v)
		case 15:
			want = wire.TypeBytes
			for len(p) > 0 {
				i, n := binary.Uvarint(p)
				if n <= 0 || i >= maxWireRiders {
					return fmt.Errorf("%w: refused riders", wire.ErrMalformed)
				}
				r.RidersRefused, p = append(r.RidersRefused, int(i)), p[n:]
			}
		default:
			return nil
		}
		return wire.WantType(f, wt, want)
	})
	return r, err
}

func decodeWireRead(p []byte) (txnWireRead, error) {
	var r txnWireRead
	err := wire.Walk(p, func(f, wt, v uint64, p []byte) error {
		want := uint64(wire.TypeVarint)
		switch f {
		case 1:
			r.Key, want = wire.Clone(p), wire.TypeBytes
		case 2:
			r.Found = v != 0
		case 3:
			r.Value, want = wire.Clone(p), wire.TypeBytes
		case 4:
			r.CreateIndex = v
		case 5:
			r.ModIndex = v
		case 6:
			r.Version = v
		case 7:
			if v > 255 {
				return fmt.Errorf("%w: field %d: %d is over a byte", wire.ErrMalformed, f, v)
			}
			r.Kind = uint8(v)
		case 8:
			r.Deleted = int(wire.Unzigzag(v))
		case 9:
			r.Seq = v
		default:
			return nil
		}
		return wire.WantType(f, wt, want)
	})
	return r, err
}

func decodeWireStale(p []byte) (*txnWireStale, error) {
	st := &txnWireStale{}
	err := wire.Walk(p, func(f, wt, v uint64, p []byte) error {
		want := uint64(wire.TypeVarint)
		switch f {
		case 1:
			st.Key, want = wire.Clone(p), wire.TypeBytes
		case 2:
			st.Lock, want = string(p), wire.TypeBytes
		case 3:
			st.Token = v
		case 4:
			st.Accepted = v
		default:
			return nil
		}
		return wire.WantType(f, wt, want)
	})
	return st, err
}

func encodeBatchAnswers(items []txnProposeBatchAnswer) []byte {
	n := 0
	for i := range items {
		n += items[i].Result.bytes() + len(items[i].Error) + 64
	}
	b := make([]byte, 0, n)
	for i := range items {
		a := &items[i]
		var outer int
		b, outer = wire.BeginNested(b, 1)
		if a.Result != nil {
			var mark int
			b, mark = wire.BeginNested(b, 1)
			b = appendWireResult(b, a.Result)
			b = wire.EndNested(b, mark)
		}
		b = wire.AppendBytes(b, 2, []byte(a.Error))
		b = wire.AppendBytes(b, 3, []byte(a.Code))
		b = wire.AppendUint(b, 4, uint64(a.Status))
		b = wire.AppendUint(b, 5, boolUint(a.SendAlone))
		b = wire.EndNested(b, outer)
	}
	return b
}

func decodeBatchAnswers(p []byte) ([]txnProposeBatchAnswer, error) {
	var out []txnProposeBatchAnswer
	err := wire.Walk(p, func(f, wt, _ uint64, p []byte) error {
		if f != 1 {
			return nil
		}
		if err := wire.WantType(f, wt, wire.TypeBytes); err != nil {
			return err
		}
		var a txnProposeBatchAnswer
		err := wire.Walk(p, func(f, wt, v uint64, p []byte) error {
			want := uint64(wire.TypeVarint)
			switch f {
			case 1:
				want = wire.TypeBytes
				if wt != want {
					break
				}
				r, err := decodeWireResult(p)
				if err != nil {
					return err
				}
				a.Result = r
			case 2:
				a.Error, want = string(p), wire.TypeBytes
			case 3:
				a.Code, want = string(p), wire.TypeBytes
			case 4:
				if v > 999 {
					return fmt.Errorf("%w: status %d", wire.ErrMalformed, v)
				}
				a.Status = int(v)
			case 5:
				a.SendAlone = v != 0
			default:
				return nil
			}
			return wire.WantType(f, wt, want)
		})
		if err != nil {
			return err
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// callBinary makes one internal call to addr in binary (body at binPath,
// its answer decoded by decode); a node of an older binary, which does not
// serve binPath, gets the same call q as JSON at jsonPath.
func callBinary[T any](ctx context.Context, s *Server, addr, binPath, jsonPath string, q any, body []byte,
	decode func([]byte) (*T, error)) (*T, error) {
	b, err := s.peers.CallBytes(ctx, addr, binPath, contentTypeWire, body)
	if pathNotServed(err) {
		var out T
		if err := s.peers.Call(ctx, addr, http.MethodPost, jsonPath, q, &out); err != nil {
			return nil, err
		}
		return &out, nil
	}
	if err != nil {
		return nil, err
	}
	out, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("txn call to node %s: undecodable answer: %w", addr, err)
	}
	return out, nil
}

// pathNotServed: the node answered a call as a node of a binary older than
// the path does: 404 not_found, no route (Server.notFound). Nothing was
// proposed, so the call may be sent again as JSON.
func pathNotServed(err error) bool {
	var re *cluster.RemoteError
	return errors.As(err, &re) && re.Status == http.StatusNotFound && re.Code == "not_found" &&
		strings.Contains(re.Message, "no route for")
}

func boolUint(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}
