package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cairndb/cairn/client"
)

// CairnConfig configures the cairn target.
type CairnConfig struct {
	Endpoints []string // host:port of any nodes
	// Consistency is the read level of Get: "" or "linearizable", "session"
	// or "stale".
	Consistency string
	// HTTP is shared by every connection; nil means NewHTTPClient(64).
	HTTP *http.Client
	// DisableRouting turns off the client's range cache: requests go to the
	// endpoints given, which forward them to shard leaders.
	DisableRouting bool
}

// Cairn drives cairn through its Go client (package client), one client per
// connection with retries off. Connection i starts at endpoint i mod n, so
// the load spreads over the nodes given, as it does for etcd.
type Cairn struct {
	cfg  CairnConfig
	read []client.ReadOption
}

// NewCairn returns the cairn target. It does not contact the cluster.
func NewCairn(cfg CairnConfig) (*Cairn, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("cairn target: no endpoints")
	}
	t := &Cairn{cfg: cfg}
	switch cfg.Consistency {
	case "", "linearizable":
		t.read = []client.ReadOption{client.Linearizable()}
	case "session":
		t.read = []client.ReadOption{client.Session()}
	case "stale":
		t.read = []client.ReadOption{client.Stale(0)}
	default:
		return nil, fmt.Errorf("cairn target: unknown consistency %q (linearizable, session or stale)", cfg.Consistency)
	}
	if t.cfg.HTTP == nil {
		t.cfg.HTTP = NewHTTPClient(64)
	}
	return t, nil
}

func (t *Cairn) Name() string        { return "cairn" }
func (t *Cairn) Endpoints() []string { return t.cfg.Endpoints }

func (t *Cairn) Conn(i int) (Conn, error) {
	n := len(t.cfg.Endpoints)
	eps := append(append([]string(nil), t.cfg.Endpoints[i%n:]...), t.cfg.Endpoints[:i%n]...)
	c, err := client.New(client.Config{
		Endpoints:      eps,
		HTTPClient:     t.cfg.HTTP,
		MaxRetries:     -1,
		ClientID:       "bench" + strconv.Itoa(i),
		DisableRouting: t.cfg.DisableRouting,
	})
	if err != nil {
		return nil, err
	}
	return &cairnConn{c: c, read: t.read}, nil
}

// Close releases the shared transport's idle connections.
func (t *Cairn) Close() error {
	t.cfg.HTTP.CloseIdleConnections()
	return nil
}

// Describe reports the number of shards and of nodes, and how the shard
// leaders are spread ("n1=2 n2=1 n3=1"), as the first endpoint sees them.
func (t *Cairn) Describe(ctx context.Context) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := client.New(client.Config{Endpoints: t.cfg.Endpoints, HTTPClient: t.cfg.HTTP, MaxRetries: 2, DisableRouting: true})
	if err != nil {
		return nil
	}
	st, err := c.Cluster(ctx)
	if err != nil {
		return nil
	}
	leaders := ""
	for _, n := range st.Nodes {
		if leaders != "" {
			leaders += " "
		}
		leaders += n.ID + "=" + strconv.Itoa(n.Leaders)
	}
	return map[string]string{
		"shards":  strconv.Itoa(len(st.Shards)),
		"nodes":   strconv.Itoa(len(st.Nodes)),
		"leaders": leaders,
	}
}

type cairnConn struct {
	c    *client.Client
	read []client.ReadOption
}

func (c *cairnConn) Put(ctx context.Context, key, value string) error {
	_, err := c.c.Put(ctx, key, value)
	return err
}

func (c *cairnConn) Get(ctx context.Context, key string) error {
	_, err := c.c.Get(ctx, key, c.read...)
	return err
}

// Lock takes name through the lock API (docs/api.md "Locks") with the
// client's single calls: one acquire request, routed to the leader of the
// name's shard, and a release request carrying the token.
func (c *cairnConn) Lock(ctx context.Context, name string, ttl, wait time.Duration) (func(context.Context) error, error) {
	g, err := c.c.AcquireLock(ctx, name, client.LockOptions{TTL: ttl, Wait: wait, Owner: "cairn-bench"})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return c.c.ReleaseLock(ctx, name, g.Token) }, nil
}

// Txn commits one transaction (POST /v1/txn): every key compared to exist,
// every value put.
func (c *cairnConn) Txn(ctx context.Context, keys, values []string) error {
	t := c.c.Txn()
	for i, k := range keys {
		t.If(client.Compare(k, client.TargetModIndex, ">", 0)).Then(client.OpPut(k, values[i]))
	}
	res, err := t.Commit(ctx)
	if err != nil {
		return err
	}
	if !res.Succeeded {
		return &OpError{Code: "condition_failed", Err: fmt.Errorf("transaction on %v: a compare failed (keys not preloaded?)", keys)}
	}
	return nil
}
