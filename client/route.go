package client

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HeaderNode names the node that served a request (docs/api.md, "Extensions"): the
// shard leader for a write or a linearizable read, even when another node
// forwarded it there.
const HeaderNode = "X-Cairn-Node"

// Routing. Any node serves any request: a node that does not lead the key's
// shard forwards it to the leader. That hop costs a second HTTP exchange, so
// the client keeps a cache of the range map (shard ranges, their leaders and
// the nodes' addresses) and sends writes and linearizable reads straight to
// the leader. The cache is only ever a hint: a stale entry costs the hop it
// was meant to save, never a wrong answer, because the node that receives the
// request routes it again by its own range map (invariant I5 holds in the
// shard's FSM either way).
//
// The cache fills and refreshes in the background from GET /v1/cluster, at
// most once per refreshEvery, and learns from every answer: X-Cairn-Shard and
// X-Cairn-Node say who served the key's shard. A routed attempt that cannot
// connect drops the node from the cache for badNodeFor and the call goes on
// through the configured endpoints, as without routing.

const (
	refreshEvery   = time.Second
	refreshTimeout = 3 * time.Second
	badNodeFor     = 30 * time.Second
)

type routeRange struct {
	id         uint64
	start, end string // [start, end); end "" is the end of the keyspace
	leader     string // node id, "" when unknown
}

type routeCache struct {
	c *Client

	mu      sync.RWMutex
	ranges  []routeRange      // sorted by start, non-overlapping
	nodes   map[string]string // node id -> base URL
	bad     map[string]time.Time
	last    time.Time // start of the latest refresh
	running bool

	ctx    context.Context // ends at Client.Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newRouteCache(c *Client) *routeCache {
	ctx, cancel := context.WithCancel(context.Background())
	return &routeCache{c: c, nodes: map[string]string{}, bad: map[string]time.Time{}, ctx: ctx, cancel: cancel}
}

// close stops a refresh in flight and waits for it.
func (rc *routeCache) close() {
	rc.cancel()
	rc.wg.Wait()
}

// lookup returns the base URL of the leader of key's shard, or "" when the
// cache cannot say (which also starts a refresh if none ran lately).
func (rc *routeCache) lookup(key string) string {
	rc.mu.RLock()
	base := ""
	if i := rc.find(key); i >= 0 {
		if b, ok := rc.nodes[rc.ranges[i].leader]; ok {
			if until, bad := rc.bad[b]; !bad || time.Now().After(until) {
				base = b
			}
		}
	}
	rc.mu.RUnlock()
	if base == "" {
		rc.refresh()
	}
	return base
}

// find returns the index of the range holding key, -1 if none. Callers hold mu.
func (rc *routeCache) find(key string) int {
	i := sort.Search(len(rc.ranges), func(i int) bool { return rc.ranges[i].start > key }) - 1
	if i < 0 || (rc.ranges[i].end != "" && key >= rc.ranges[i].end) {
		return -1
	}
	return i
}

// observe learns from a successful answer about key: shard (X-Cairn-Shard)
// was served by node (X-Cairn-Node). When that contradicts the cache, the
// shard's leader is updated, or, when the cache does not know the shard at
// key (a split it has not seen), the map is refreshed.
func (rc *routeCache) observe(key string, h http.Header) {
	node := h.Get(HeaderNode)
	shard, err := strconv.ParseUint(h.Get(HeaderShard), 10, 64)
	if node == "" || err != nil || shard == 0 {
		return
	}
	rc.mu.RLock()
	i := rc.find(key)
	same := i >= 0 && rc.ranges[i].id == shard && rc.ranges[i].leader == node
	rc.mu.RUnlock()
	if same {
		return
	}
	rc.mu.Lock()
	i = rc.find(key)
	known := i >= 0 && rc.ranges[i].id == shard
	if known {
		rc.ranges[i].leader = node
	}
	_, nodeKnown := rc.nodes[node]
	rc.mu.Unlock()
	if !known || !nodeKnown {
		rc.refresh()
	}
}

// unreachable records that base could not be connected to.
func (rc *routeCache) unreachable(base string) {
	rc.mu.Lock()
	rc.bad[base] = time.Now().Add(badNodeFor)
	rc.mu.Unlock()
	rc.refresh()
}

// refresh starts a background fetch of the range map unless one is running
// or one started less than refreshEvery ago.
func (rc *routeCache) refresh() {
	rc.mu.Lock()
	if rc.running || time.Since(rc.last) < refreshEvery || rc.ctx.Err() != nil {
		rc.mu.Unlock()
		return
	}
	rc.running, rc.last = true, time.Now()
	rc.wg.Add(1)
	rc.mu.Unlock()
	go func() {
		defer rc.wg.Done()
		ctx, cancel := context.WithTimeout(rc.ctx, refreshTimeout)
		defer cancel()
		st, err := rc.c.Cluster(ctx)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.running = false
		if err != nil {
			rc.c.log.Debug("cairn client: range map refresh failed", "err", err)
			return
		}
		rc.install(st)
	}()
}

// install replaces the cache with st. Callers hold mu.
func (rc *routeCache) install(st *ClusterStatus) {
	nodes := make(map[string]string, len(st.Nodes))
	for _, n := range st.Nodes {
		if n.HTTPAddr == "" || n.State == "dead" {
			continue
		}
		base := n.HTTPAddr
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
		nodes[n.ID] = base
	}
	ranges := make([]routeRange, 0, len(st.Shards))
	for _, s := range st.Shards {
		ranges = append(ranges, routeRange{id: s.ID, start: s.Start, end: s.End, leader: s.Leader})
	}
	sort.Slice(ranges, func(i, j int) bool { return ranges[i].start < ranges[j].start })
	for i := 1; i < len(ranges); i++ {
		if ranges[i-1].end == "" || ranges[i-1].end > ranges[i].start {
			// Overlapping ranges: a view caught mid-split. Route nothing
			// from it rather than guess.
			ranges = nil
			break
		}
	}
	rc.ranges, rc.nodes = ranges, nodes
	now := time.Now()
	for b, until := range rc.bad {
		if now.After(until) {
			delete(rc.bad, b)
		}
	}
}
