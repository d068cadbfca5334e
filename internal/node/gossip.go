package node

import (
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cairndb/cairn/placement"
)

// gossip wraps memberlist: which nodes exist and how to reach them. It feeds
// formation and registration only; it never decides safety (invariant I12).
type gossip struct {
	ml       *memberlist.Memberlist
	delegate *gossipDelegate
	events   chan struct{}
	log      *slog.Logger

	leaveOnce sync.Once
	leaveErr  error
	stop      chan struct{} // closed by leave: joinLoop ends
	// counted, when set, names the nodes the cluster counts (the meta
	// state's, not removed): joinLoop joins again while one of them is
	// missing from gossip. Nil: the --join addresses are joined again on
	// every round.
	counted func() []string
}

// gossipMeta is what a node advertises about itself.
type gossipMeta struct {
	HTTPAddr string `json:"http"`
	RaftAddr string `json:"raft"`
	// Level is the binary's shard command level (fsm.CommandLevel); absent
	// (0) from a binary older than levels.
	Level int `json:"level,omitempty"`
	// Recorded is the cluster level the node's data dir has recorded
	// (placement.NodeInfo.Recorded).
	Recorded int `json:"recorded,omitempty"`
	// ClusterLevel is the cluster's command level as the node knows it: a
	// node whose binary is below it, which is never added to the meta
	// group and so never learns it there, says so (a hint, for the
	// operator only).
	ClusterLevel int `json:"cluster_level,omitempty"`
	// ClusterID is the id of the cluster the node belongs to, once its meta
	// state has it (placement.State.ClusterID): members of two clusters
	// that both know theirs refuse each other (gossipDelegate.foreign).
	ClusterID string `json:"cluster_id,omitempty"`
}

type gossipDelegate struct {
	mu     sync.Mutex
	meta   gossipMeta
	events chan struct{}
	// peers holds each member's metadata as last announced. memberlist
	// rewrites a member's Meta in place when it changes (the levels do), so
	// it is copied here in NotifyJoin and NotifyUpdate, which memberlist
	// calls under its own lock, rather than read from Members() later.
	peers map[string]gossipMeta
	// raftAddrs maps a member's gossip address to its raft address (test
	// partitions name nodes by raft address: partitionedTransport).
	raftAddrs map[string]string
	// gossipAddrs maps a member's name to its last gossip address, kept
	// after it leaves or dies (joinLoop joins it again).
	gossipAddrs map[string]string
	// unanswered holds the members this node suspects (gossip.suspect).
	unanswered map[string]bool
}

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, _ := json.Marshal(d.meta)
	return b
}
func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}
func (d *gossipDelegate) NotifyUpdate(n *memberlist.Node)            { d.note(n); d.poke() }

// NotifyMerge and NotifyAlive make the delegate memberlist's MergeDelegate
// and AliveDelegate: a join (a push-pull with join set, both ways) with a
// member of another cluster is cancelled, and gossip about one is ignored.
// A join to the wrong address (a --join typo, or a rejoin of an address
// that a node of another cluster took over) would otherwise merge the two
// clusters' membership, and the meta leader would register the other
// cluster's nodes. A node that knows no cluster yet (new, or wiped) may
// join any; etcd refuses such a peer by its cluster id the same way.
func (d *gossipDelegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if err := d.foreign(p); err != nil {
			return err
		}
	}
	return nil
}

func (d *gossipDelegate) NotifyAlive(peer *memberlist.Node) error { return d.foreign(peer) }

// foreign returns an error when member n belongs to another cluster than
// this node: both know their cluster ids and they differ.
func (d *gossipDelegate) foreign(n *memberlist.Node) error {
	var gm gossipMeta
	if json.Unmarshal(n.Meta, &gm) != nil || gm.ClusterID == "" {
		return nil
	}
	d.mu.Lock()
	ours := d.meta.ClusterID
	d.mu.Unlock()
	if ours == "" || gm.ClusterID == ours {
		return nil
	}
	return fmt.Errorf("gossip: member %s belongs to cluster %s, this node to cluster %s: not merging", n.Name, gm.ClusterID, ours)
}

// A member that joins, or leaves or is declared dead, starts (or ends) a
// life with no failed probe.
func (d *gossipDelegate) NotifyJoin(n *memberlist.Node)  { d.answered(n.Name); d.note(n); d.poke() }
func (d *gossipDelegate) NotifyLeave(n *memberlist.Node) { d.answered(n.Name); d.poke() }

// AckPayload and NotifyPingComplete make the delegate memberlist's
// PingDelegate: NotifyPingComplete is a direct ack to one of this node's
// probes.
func (d *gossipDelegate) AckPayload() []byte { return nil }
func (d *gossipDelegate) NotifyPingComplete(n *memberlist.Node, _ time.Duration, _ []byte) {
	d.answered(n.Name)
}

// unanswer records that a probe of member name failed altogether (no
// direct, indirect or TCP ack); answered, that name answered one directly.
func (d *gossipDelegate) unanswer(name string) { d.setUnanswered(name, true) }
func (d *gossipDelegate) answered(name string) { d.setUnanswered(name, false) }

func (d *gossipDelegate) setUnanswered(name string, failed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !failed {
		delete(d.unanswered, name)
		return
	}
	if d.unanswered == nil {
		d.unanswered = map[string]bool{}
	}
	d.unanswered[name] = true
}

func (d *gossipDelegate) isUnanswered(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.unanswered[name]
}

// note copies n's metadata (see peers); one that does not decode is
// dropped, as members() always skipped it.
func (d *gossipDelegate) note(n *memberlist.Node) {
	var gm gossipMeta
	err := json.Unmarshal(n.Meta, &gm)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.peers == nil {
		d.peers = map[string]gossipMeta{}
	}
	if err != nil {
		delete(d.peers, n.Name)
		return
	}
	d.peers[n.Name] = gm
	if d.raftAddrs == nil {
		d.raftAddrs = map[string]string{}
	}
	d.raftAddrs[n.Address()] = gm.RaftAddr
	if d.gossipAddrs == nil {
		d.gossipAddrs = map[string]string{}
	}
	d.gossipAddrs[n.Name] = n.Address()
}

// gossipAddr returns member name's last known gossip address.
func (d *gossipDelegate) gossipAddr(name string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.gossipAddrs[name]
	return a, ok
}

// raftOf returns the raft address of the member gossiping at gossipAddr.
func (d *gossipDelegate) raftOf(gossipAddr string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.raftAddrs[gossipAddr]
	return r, ok
}

// peer returns member name's metadata as last announced.
func (d *gossipDelegate) peer(name string) (gossipMeta, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	gm, ok := d.peers[name]
	return gm, ok
}
func (d *gossipDelegate) poke() {
	select {
	case d.events <- struct{}{}:
	default:
	}
}

func startGossip(cfg Config, recorded int, members func() []string, logger *slog.Logger) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("--gossip-addr: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--gossip-addr port: %w", err)
	}
	httpAddr := cfg.HTTPAddr
	if cfg.HTTPListener != nil {
		httpAddr = cfg.HTTPListener.Addr().String()
	}
	g := &gossip{events: make(chan struct{}, 1), log: logger, stop: make(chan struct{}), counted: members}
	d := &gossipDelegate{events: g.events,
		meta: gossipMeta{HTTPAddr: httpAddr, RaftAddr: cfg.RaftAddr, Level: cfg.commandLevel(), Recorded: recorded}}
	g.delegate = d

	mc := memberlist.DefaultLANConfig()
	if isLoopback(host) {
		mc = memberlist.DefaultLocalConfig()
		// The LAN's multiplier, not the loopback config's 2: a change of a
		// member's metadata (its levels) is sent RetransmitMult times
		// (times log10 of the members, rounded up), so with 2 one of three
		// peers missed it now and then until the next push-pull, 15s
		// later; the meta leader then neither registered a joining node's
		// recorded level nor added it (TestGossipMetaUpdateReachesEveryPeer).
		mc.RetransmitMult = memberlist.DefaultLANConfig().RetransmitMult
	}
	// memberlist binds and advertises IP literals only; a host name (a
	// container's service name, say) is resolved once, here.
	if host, err = resolveGossipHost(host); err != nil {
		return nil, err
	}
	mc.Name = cfg.ID
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertiseAddr = host
	mc.AdvertisePort = port
	mc.Delegate = d
	mc.Events = d
	mc.Ping = d
	mc.Merge = d
	mc.Alive = d
	mc.Logger = log.New(memberlistWriter{logger, d}, "", 0)
	if host == "0.0.0.0" || host == "" {
		mc.AdvertiseAddr = ""
	}
	rejoin := rejoinEvery
	if k := cfg.Knobs; k != nil {
		if k.GossipToTheDeadTime > 0 {
			mc.GossipToTheDeadTime = k.GossipToTheDeadTime
		}
		if k.RejoinEvery > 0 {
			rejoin = k.RejoinEvery
		}
	}
	if k := cfg.Knobs; k != nil && k.Blocked != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger})
		if err != nil {
			return nil, fmt.Errorf("gossip: %w", err)
		}
		mc.Transport = &partitionedTransport{NetTransport: nt, selfRaft: cfg.RaftAddr, blocked: k.Blocked, raftOf: d.raftOf}
	}
	g.ml, err = memberlist.Create(mc)
	if err != nil {
		if mc.Transport != nil {
			_ = mc.Transport.Shutdown()
		}
		return nil, fmt.Errorf("gossip: %w", err)
	}
	go g.joinLoop(cfg.Join, cfg.GossipAddr, rejoin)
	return g, nil
}

// memberlistWriter takes memberlist's log lines ("[WARN] memberlist: ...")
// at DEBUG, whatever their level: it reports every probe a stopped or
// restarting peer misses, which gossip's own membership states (alive,
// suspect, dead: "cairn cluster status") and the placement driver already
// account for; --log-level debug shows them. Two of the lines are the
// outcome of a probe, which memberlist reports nowhere else: they feed d
// (see gossip.suspect).
type memberlistWriter struct {
	l *slog.Logger
	d *gossipDelegate
}

// The probe outcomes memberlist (v0.5.4, state.go probeNode) logs, with the
// member's name between prefix and suffix. TestGossipReportsSuspect fails
// if a memberlist upgrade rewords them.
var (
	probeFailed = [2]string{"Suspect ", " has failed, no acks received"}
	probeTCPAck = [2]string{"Was able to connect to ", " over TCP but UDP probes failed"}
)

// probed returns the member a line of that form names.
func probed(line string, form [2]string) (string, bool) {
	if !strings.HasPrefix(line, form[0]) {
		return "", false
	}
	name, _, ok := strings.Cut(line[len(form[0]):], form[1])
	return name, ok && name != ""
}

func (w memberlistWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := ""
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			level, line = line[1:end], strings.TrimSpace(line[end+1:])
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	if w.d != nil {
		if name, ok := probed(line, probeFailed); ok {
			w.d.unanswer(name)
		} else if name, ok := probed(line, probeTCPAck); ok {
			w.d.answered(name)
		}
	}
	w.l.Debug("gossip: "+line, "memberlist_level", level)
	return len(p), nil
}

// rejoinEvery is how often joinLoop checks whether a node the cluster
// counts is missing from gossip, and then joins again (Knobs.RejoinEvery in
// tests).
const rejoinEvery = 10 * time.Second

// joinLoop keeps trying the --join addresses until one answers (peers may
// start in any order), then, every rejoin, joins again while a node the
// cluster counts is missing from gossip (missing): the --join addresses and
// the missing nodes' own last known addresses. memberlist gossips to a
// member it declared dead only for a while (GossipToTheDeadTime) and
// push-pulls only with live ones, so after a partition longer than that the
// two sides stayed apart for good, each listing the other dead (and the
// placement driver counting a healed node's DownFor towards repair); a join
// merges their states again, as Serf's reconnect does for Consul
// (TestGossipHealsAfterLongPartition). The missing nodes' own addresses
// matter once the --join addresses are gone: a node that joined through a
// seed since replaced is in no other node's --join list
// (TestGossipRejoinsWithoutItsSeeds).
func (g *gossip) joinLoop(addrs []string, self string, rejoin time.Duration) {
	for attempt := 0; len(addrs) > 0 && attempt < 300; attempt++ {
		_, err := g.ml.Join(addrs)
		if err == nil {
			break
		}
		if attempt%10 == 0 { // at once, then every 10s
			g.log.Info("gossip: no --join address answered yet; retrying", "addrs", addrs, "attempt", attempt+1, "err", err)
		}
		if attempt == 299 {
			g.log.Error("gossip: could not join any of; trying again every "+rejoin.String(), "addrs", addrs)
		}
		if !g.sleep(time.Second) {
			return
		}
	}
	for g.sleep(rejoin) {
		missing, known := g.missing()
		if !missing {
			continue
		}
		tried := map[string]bool{self: true}
		for _, a := range append(slices.Clone(addrs), known...) {
			if tried[a] {
				continue
			}
			tried[a] = true
			if _, err := g.ml.Join([]string{a}); err != nil {
				g.log.Debug("gossip: rejoin", "addr", a, "err", err)
			}
		}
	}
}

// missing reports whether a node the cluster counts is not among gossip's
// live members (always, without g.counted), and the last gossip addresses
// known of those missing nodes. Members' names only: memberlist rewrites a
// member's address fields while others read them (the delegate copies
// them when it is told of a change).
func (g *gossip) missing() (bool, []string) {
	if g.counted == nil {
		return true, nil
	}
	live := map[string]bool{}
	for _, m := range g.ml.Members() {
		live[m.Name] = true
	}
	any := false
	var known []string
	for _, id := range g.counted() {
		if live[id] {
			continue
		}
		any = true
		if a, ok := g.delegate.gossipAddr(id); ok {
			known = append(known, a)
		}
	}
	return any, known
}

// sleep waits d, or until leave; it reports whether leave has not come.
func (g *gossip) sleep(d time.Duration) bool {
	select {
	case <-g.stop:
		return false
	case <-time.After(d):
		return true
	}
}

// members returns the live members, sorted by id.
func (g *gossip) members() []placement.NodeInfo {
	var out []placement.NodeInfo
	for _, m := range g.ml.Members() {
		gm, ok := g.delegate.peer(m.Name)
		if !ok {
			continue
		}
		out = append(out, placement.NodeInfo{ID: m.Name, HTTPAddr: gm.HTTPAddr, RaftAddr: gm.RaftAddr,
			Level: gm.Level, Recorded: gm.Recorded})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// setLevels advertises the cluster level the data dir recorded (the meta
// leader registers it, and raises the level once every node recorded it)
// and the cluster's level, when either changed. A failed broadcast is
// retried by memberlist's own push-pull.
func (g *gossip) setLevels(recorded, cluster int) {
	g.delegate.mu.Lock()
	same := g.delegate.meta.Recorded == recorded && g.delegate.meta.ClusterLevel == cluster
	g.delegate.meta.Recorded, g.delegate.meta.ClusterLevel = recorded, cluster
	g.delegate.mu.Unlock()
	if same {
		return
	}
	if err := g.ml.UpdateNode(time.Second); err != nil {
		g.log.Warn("gossip: advertising the command levels", "recorded_level", recorded, "cluster_level", cluster, "err", err)
	}
}

// setClusterID advertises the cluster id once the meta state has it (it
// never changes after).
func (g *gossip) setClusterID(id string) {
	g.delegate.mu.Lock()
	same := g.delegate.meta.ClusterID == id
	g.delegate.meta.ClusterID = id
	g.delegate.mu.Unlock()
	if same {
		return
	}
	if err := g.ml.UpdateNode(time.Second); err != nil {
		g.log.Warn("gossip: advertising the cluster id", "cluster_id", id, "err", err)
	}
}

// knowsPeer reports whether gossip has another member's metadata (its
// levels among it): a join answered, or a peer joined this node.
func (g *gossip) knowsPeer(self string) bool {
	for _, m := range g.ml.Members() {
		if _, ok := g.delegate.peer(m.Name); ok && m.Name != self {
			return true
		}
	}
	return false
}

// clusterLevel is the highest cluster command level any member advertises.
func (g *gossip) clusterLevel() int {
	level := 0
	for _, m := range g.ml.Members() {
		if gm, ok := g.delegate.peer(m.Name); ok {
			level = max(level, gm.ClusterLevel)
		}
	}
	return level
}

// alive returns the ids gossip currently sees alive or suspect.
func (g *gossip) alive() map[string]bool {
	out := map[string]bool{}
	for _, m := range g.ml.Members() {
		out[m.Name] = true
	}
	return out
}

// suspect returns the ids gossip lists but this node suspects: the last of
// its probes of the member failed (memberlist marked it suspect then) and
// the member has not answered one directly since, nor re-joined.
//
// memberlist keeps its own suspect state private: Members() returns each
// member's Node, whose State field it never sets (v0.5.4 keeps the state in
// nodeState.State), and no delegate sees a member turn suspect or be
// refuted. What it does report is the outcome of each of this node's
// probes: a direct ack (NotifyPingComplete), an ack over TCP only, and a
// probe that failed altogether, the moment it suspects the member itself
// (the last two as log lines only; memberlistWriter). That is firsthand
// evidence, and the question Leave and the placement driver ask: does the
// node answer now? Its limits: a suspicion gossiped by another node is not
// seen until this node's own probe of the member fails too (at most one
// probe round: memberlist probes every member in turn, and in a three-node
// cluster the others cannot declare it dead without this node's
// confirmation before the maximum suspicion timeout); and a member this
// node reaches only through others (indirect acks, which memberlist does
// not report) stays suspect here until it answers directly again. Reading
// memberlist's private state instead (unsafe, reflection) would race with
// its writes, made under its own lock.
func (g *gossip) suspect() map[string]bool {
	out := map[string]bool{}
	for _, m := range g.ml.Members() {
		if g.delegate.isUnanswered(m.Name) {
			out[m.Name] = true
		}
	}
	return out
}

// state reports a member's gossip liveness: alive, suspect (see suspect) or
// dead.
func (g *gossip) state(id string) string {
	for _, m := range g.ml.Members() {
		if m.Name == id {
			if g.delegate.isUnanswered(id) {
				return "suspect"
			}
			return "alive"
		}
	}
	return "dead"
}

// leave announces this node's departure and stops gossip; once.
func (g *gossip) leave() error {
	g.leaveOnce.Do(func() {
		close(g.stop)
		_ = g.ml.Leave(500 * time.Millisecond)
		g.leaveErr = g.ml.Shutdown()
	})
	return g.leaveErr
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// resolveGossipHost returns host unchanged when it is empty or an IP literal,
// else the first IPv4 address it resolves to (the first address when it has
// none).
func resolveGossipHost(host string) (string, error) {
	if host == "" || net.ParseIP(host) != nil {
		return host, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return "", fmt.Errorf("--gossip-addr host %q: %w", host, err)
	}
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil {
			return v4.String(), nil
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("--gossip-addr host %q resolves to no address", host)
	}
	return ips[0].String(), nil
}
