package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cairndb/cairn/client"
)

// Node is one node container of the compose cluster.
type Node struct {
	ID        string // cairn node id and compose service name: n1
	Container string // container name: cairn-n1
	Endpoint  string // HTTP API as published on the host: 127.0.0.1:7070
	IP        string // fixed address on the cluster network
	Aliases   []string
}

// Cluster is the compose cluster as seen from the host.
type Cluster struct {
	Nodes   []*Node
	Network string
	docker  Docker
	http    *http.Client
}

// Discover finds the containers of the nodes ids (container "cairn-<id>") on
// network, their published HTTP ports and their fixed addresses.
func Discover(ctx context.Context, d Docker, network string, ids []string) (*Cluster, error) {
	c := &Cluster{Network: network, docker: d,
		http: &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
	for _, id := range ids {
		n := &Node{ID: id, Container: "cairn-" + id}
		st, err := d.Inspect(ctx, n.Container)
		if err != nil {
			return nil, err
		}
		if !st.Running || st.Paused {
			return nil, fmt.Errorf("%s is not running (running=%v paused=%v)", n.Container, st.Running, st.Paused)
		}
		ep, ok := st.Networks[network]
		if !ok {
			return nil, fmt.Errorf("%s is not on network %s", n.Container, network)
		}
		if ep.IPAMConfig == nil || ep.IPAMConfig.IPv4Address == "" {
			return nil, fmt.Errorf("%s has no fixed address on %s: reconnecting it could change its address", n.Container, network)
		}
		n.IP = ep.IPAMConfig.IPv4Address
		// Keep the service name; docker adds the container id as an alias
		// of its own on every connect.
		for _, a := range ep.Aliases {
			if a == id {
				n.Aliases = append(n.Aliases, a)
			}
		}
		if len(n.Aliases) == 0 {
			n.Aliases = []string{id}
		}
		if n.Endpoint, err = d.HostPort(ctx, n.Container, "7070/tcp"); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	return c, nil
}

// Close releases the idle connections of the status client.
func (c *Cluster) Close() { c.http.CloseIdleConnections() }

// Endpoints returns every node's host endpoint, starting with node i's.
func (c *Cluster) Endpoints(i int) []string {
	var eps []string
	for k := range c.Nodes {
		eps = append(eps, c.Nodes[(i+k)%len(c.Nodes)].Endpoint)
	}
	return eps
}

// Node returns the node with id.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// View is the body of GET /v1/cluster, the fields the suite reads.
type View struct {
	Nodes []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"nodes"`
	Shards []ShardView `json:"shards"`
}

// ShardView is one shard as a node sees it.
type ShardView struct {
	ID           uint64   `json:"id"`
	Start        string   `json:"start"`
	End          string   `json:"end"`
	Replicas     []string `json:"replicas"`
	Leader       string   `json:"leader"`
	AppliedIndex uint64   `json:"applied_index"`
}

func (c *Cluster) get(ctx context.Context, n *Node, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Endpoint+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s GET %s: %d %s", n.ID, path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// Ready reports whether node n answers /readyz with 200.
func (c *Cluster) Ready(ctx context.Context, n *Node) error { return c.get(ctx, n, "/readyz", nil) }

// View returns the cluster as node n sees it.
func (c *Cluster) View(ctx context.Context, n *Node) (*View, error) {
	var v View
	// A node forwards GET /v1/cluster to the placement leader; the suite
	// needs each node's own view (its replicas' leader and applied index).
	if err := c.get(ctx, n, "/v1/cluster?local=true", &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// ShardOf returns the id of the shard owning key, as node n's range map says.
func ShardOf(v *View, key string) (uint64, bool) {
	for _, s := range v.Shards {
		if key >= s.Start && (s.End == "" || key < s.End) {
			return s.ID, true
		}
	}
	return 0, false
}

// Leader returns the node that reports itself leader of shard id, asking
// every node of nodes; it fails when none does.
func (c *Cluster) Leader(ctx context.Context, shard uint64, nodes []*Node) (*Node, error) {
	var errs []error
	for _, n := range nodes {
		v, err := c.View(ctx, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range v.Shards {
			if s.ID == shard && s.Leader == n.ID {
				return n, nil
			}
		}
	}
	return nil, fmt.Errorf("no node reports itself leader of shard %d: %w", shard, errors.Join(errs...))
}

// Healthy reports nil when every node is ready and every node agrees on a
// leader for every shard that the leader itself claims: one election has
// settled everywhere.
func (c *Cluster) Healthy(ctx context.Context) error {
	views := map[string]*View{}
	for _, n := range c.Nodes {
		if err := c.Ready(ctx, n); err != nil {
			return err
		}
		v, err := c.View(ctx, n)
		if err != nil {
			return err
		}
		views[n.ID] = v
	}
	for _, s := range views[c.Nodes[0].ID].Shards {
		leader := ""
		for _, n := range c.Nodes {
			i := slices.IndexFunc(views[n.ID].Shards, func(x ShardView) bool { return x.ID == s.ID })
			if i < 0 {
				return fmt.Errorf("%s does not know shard %d", n.ID, s.ID)
			}
			l := views[n.ID].Shards[i].Leader
			if !slices.Contains(s.Replicas, n.ID) {
				continue // a node without a replica reports no leader
			}
			if l == "" || (leader != "" && l != leader) {
				return fmt.Errorf("shard %d: leader %q on %s, %q elsewhere", s.ID, l, n.ID, leader)
			}
			leader = l
		}
		lv, ok := views[leader]
		if !ok {
			return fmt.Errorf("shard %d: leader %q is not a known node", s.ID, leader)
		}
		i := slices.IndexFunc(lv.Shards, func(x ShardView) bool { return x.ID == s.ID })
		if i < 0 || lv.Shards[i].Leader != leader {
			return fmt.Errorf("shard %d: %s is named leader but does not say so", s.ID, leader)
		}
	}
	return nil
}

// WaitHealthy polls Healthy until it holds or timeout passes, and returns how
// long it took.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := c.Healthy(ctx)
		if err == nil {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(start), fmt.Errorf("cluster not healthy after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReplicaReads says what every node's own replica holds for key (a stale
// read each node serves locally), to tell a write lost everywhere from one
// missing on some replicas.
func (c *Cluster) ReplicaReads(ctx context.Context, key string) string {
	var parts []string
	for _, n := range c.Nodes {
		var kv struct {
			Value    string `json:"value"`
			ModIndex uint64 `json:"mod_index"`
		}
		err := c.get(ctx, n, "/v1/kv/"+client.EscapeKey(key)+"?consistency=stale&max_staleness=1h", &kv)
		switch {
		case err == nil:
			parts = append(parts, fmt.Sprintf("%s has it (mod_index %d)", n.ID, kv.ModIndex))
		case strings.Contains(err.Error(), " 404 "):
			parts = append(parts, n.ID+" has not")
		default:
			parts = append(parts, fmt.Sprintf("%s: %v", n.ID, err))
		}
	}
	return "replicas: " + strings.Join(parts, ", ")
}

// Converged reports nil when every replica of every shard has applied the
// same index: with no writes coming in, followers have caught up (S5).
func (c *Cluster) Converged(ctx context.Context) error {
	applied := map[uint64]map[string]uint64{}
	for _, n := range c.Nodes {
		v, err := c.View(ctx, n)
		if err != nil {
			return err
		}
		for _, s := range v.Shards {
			if !slices.Contains(s.Replicas, n.ID) {
				continue
			}
			if applied[s.ID] == nil {
				applied[s.ID] = map[string]uint64{}
			}
			applied[s.ID][n.ID] = s.AppliedIndex
		}
	}
	for id, per := range applied {
		var first uint64
		seen := false
		for _, idx := range per {
			if seen && idx != first {
				return fmt.Errorf("shard %d: applied indexes differ: %v", id, per)
			}
			first, seen = idx, true
		}
	}
	return nil
}
