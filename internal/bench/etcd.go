package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"
)

// EtcdConfig configures the etcd target, which speaks etcd's v3 JSON gateway
// (grpc-gateway, served on the client URL at /v3/...).
type EtcdConfig struct {
	Endpoints []string // host:port or http://host:port of the members' client URLs
	// Consistency is the read level of Get: "" or "linearizable" (a range
	// with serializable=false, etcd's default) or "stale" (serializable=true,
	// answered by the member from its own state). etcd has no session reads.
	Consistency string
	// HTTP is shared by every connection; nil means NewHTTPClient(64).
	HTTP *http.Client
}

// Etcd drives etcd through its JSON gateway: POST /v3/kv/put and
// /v3/kv/range with base64 keys and values. Connection i talks to endpoint
// i mod n.
type Etcd struct {
	cfg          EtcdConfig
	bases        []string
	serializable bool
}

// NewEtcd returns the etcd gateway target. It does not contact etcd.
func NewEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd target: no endpoints")
	}
	t := &Etcd{cfg: cfg}
	switch cfg.Consistency {
	case "", "linearizable":
	case "stale":
		t.serializable = true
	case "session":
		return nil, errors.New("etcd target: etcd has no session reads; use linearizable or stale (serializable)")
	default:
		return nil, fmt.Errorf("etcd target: unknown consistency %q (linearizable or stale)", cfg.Consistency)
	}
	for _, ep := range cfg.Endpoints {
		ep = strings.TrimRight(strings.TrimSpace(ep), "/")
		if !strings.Contains(ep, "://") {
			ep = "http://" + ep
		}
		t.bases = append(t.bases, ep)
	}
	if t.cfg.HTTP == nil {
		t.cfg.HTTP = NewHTTPClient(64)
	}
	return t, nil
}

func (t *Etcd) Name() string        { return "etcd" }
func (t *Etcd) Endpoints() []string { return t.cfg.Endpoints }

func (t *Etcd) Conn(i int) (Conn, error) {
	base := t.bases[i%len(t.bases)]
	return &etcdConn{http: t.cfg.HTTP, put: base + "/v3/kv/put", rng: base + "/v3/kv/range", serializable: t.serializable}, nil
}

func (t *Etcd) Close() error {
	t.cfg.HTTP.CloseIdleConnections()
	return nil
}

// The gateway's JSON is protobuf's JSON mapping: bytes fields are base64,
// 64-bit integers are strings, and fields with zero values are left out.
type etcdPutRequest struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type etcdRangeRequest struct {
	Key          string `json:"key"`
	Serializable bool   `json:"serializable,omitempty"`
}

type etcdHeader struct {
	Revision string `json:"revision"`
	RaftTerm string `json:"raft_term"`
}

type etcdPutResponse struct {
	Header *etcdHeader `json:"header"`
}

type etcdKV struct {
	Key         string `json:"key"`
	Value       string `json:"value"`
	ModRevision string `json:"mod_revision"`
}

type etcdRangeResponse struct {
	Header *etcdHeader `json:"header"`
	KVs    []etcdKV    `json:"kvs"`
	Count  string      `json:"count"`
}

// etcdError is the gateway's error body: grpc-gateway v1 (etcd 3.4, 3.5)
// sends error, code and message; v2 (etcd 3.6) code and message.
type etcdError struct {
	Error   string `json:"error"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type etcdConn struct {
	http         *http.Client
	put, rng     string
	serializable bool
}

func (c *etcdConn) Put(ctx context.Context, key, value string) error {
	req := etcdPutRequest{Key: b64(key), Value: b64(value)}
	var resp etcdPutResponse
	if err := c.call(ctx, c.put, req, &resp); err != nil {
		return err
	}
	if resp.Header == nil {
		return &OpError{Code: CodeOther, Err: errors.New("etcd put: answer without a header")}
	}
	return nil
}

func (c *etcdConn) Get(ctx context.Context, key string) error {
	req := etcdRangeRequest{Key: b64(key), Serializable: c.serializable}
	var resp etcdRangeResponse
	if err := c.call(ctx, c.rng, req, &resp); err != nil {
		return err
	}
	if len(resp.KVs) == 0 {
		return &OpError{Code: CodeNotFound, Err: fmt.Errorf("key %q not found", key)}
	}
	// Decode the value as a client would (cairn's client decodes it too).
	if _, err := base64.StdEncoding.DecodeString(resp.KVs[0].Value); err != nil {
		return &OpError{Code: CodeOther, Err: fmt.Errorf("etcd range: bad value: %w", err)}
	}
	return nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// call POSTs in as JSON to url and decodes a 200 answer into out.
func (c *etcdConn) call(ctx context.Context, url string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return &OpError{Code: CodeOther, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return &OpError{Code: CodeOther, Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return &OpError{Code: ErrorCode(err), Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return decodeEtcdError(resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return &OpError{Code: CodeOther, Err: fmt.Errorf("etcd: decode answer: %w", err)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
	return nil
}

// decodeEtcdError turns a non-200 answer into an *OpError whose code is the
// gRPC status code's name in snake case ("unavailable", "deadline_exceeded"),
// or one derived from the HTTP status when the body says nothing.
func decodeEtcdError(status int, body []byte) *OpError {
	var e etcdError
	msg := ""
	code := ""
	if json.Unmarshal(body, &e) == nil {
		msg = e.Message
		if msg == "" {
			msg = e.Error
		}
		if e.Code > 0 && e.Code < len(grpcCodeNames) {
			code = grpcCodeNames[e.Code]
		}
	} else {
		msg = string(body)
	}
	if code == "" {
		code = codeForHTTPStatus(status)
	}
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg)
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return &OpError{Code: code, Err: fmt.Errorf("etcd: HTTP %d: %s", status, strings.TrimSpace(msg))}
}

// grpcCodeNames are the gRPC status codes by number (google.golang.org/grpc/codes).
var grpcCodeNames = []string{
	"ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found",
	"already_exists", "permission_denied", "resource_exhausted", "failed_precondition",
	"aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss",
	"unauthenticated",
}

func codeForHTTPStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_argument"
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusTooManyRequests:
		return "resource_exhausted"
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return "unavailable"
	case http.StatusGatewayTimeout:
		return CodeDeadlineExceeded
	}
	return fmt.Sprintf("http_%d", status)
}
