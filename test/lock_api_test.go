package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// The lock routes of docs/api.md over HTTP on a real in-process cluster
// (issue 12). One cluster, split at "lk/list/m" so that a prefix list crosses two
// shards; each subtest uses its own lock names.

type lockGrant struct {
	Name  string `json:"name"`
	Token uint64 `json:"token"`
	TTL   string `json:"ttl"`
	Owner string `json:"owner"`
}

type lockHolder struct {
	Token     uint64 `json:"token"`
	Owner     string `json:"owner"`
	Mode      string `json:"mode"`
	ExpiresIn string `json:"expires_in"`
}

type lockStatus struct {
	Name      string       `json:"name"`
	Held      bool         `json:"held"`
	Token     uint64       `json:"token"`
	Owner     string       `json:"owner"`
	ExpiresIn string       `json:"expires_in"`
	Waiters   int          `json:"waiters"`
	Holders   []lockHolder `json:"holders"`
	Index     uint64       `json:"index"`
	Limit     int          `json:"limit"`
	Mode      string       `json:"mode"`
}

type lockErr struct {
	Error struct {
		Code   string `json:"code"`
		Holder *struct {
			Owner string `json:"owner"`
			Token uint64 `json:"token"`
		} `json:"holder"`
	} `json:"error"`
}

// LockPath is the API path of a lock route: name escaped like a key, then
// the action ("" for the status).
func LockPath(name, action string) string {
	p := "/v1/locks/" + url.PathEscape(name)
	if action != "" {
		p += "/" + action
	}
	return p
}

func acquireLock(t *testing.T, ctx context.Context, addr, name string, body map[string]any) (*HTTPResult, lockGrant) {
	t.Helper()
	res, err := Do(ctx, "POST", addr, LockPath(name, "acquire"), body)
	if err != nil {
		t.Fatalf("acquire %s on %s: %v", name, addr, err)
	}
	var g lockGrant
	if res.Status == 200 {
		if err := res.JSON(&g); err != nil {
			t.Fatalf("acquire %s: %s: %v", name, res, err)
		}
	}
	return res, g
}

func mustAcquire(t *testing.T, ctx context.Context, addr, name string, body map[string]any) lockGrant {
	t.Helper()
	res, g := acquireLock(t, ctx, addr, name, body)
	if res.Status != 200 || g.Token == 0 {
		t.Fatalf("acquire %s on %s: %s", name, addr, res)
	}
	return g
}

func lockOp(t *testing.T, ctx context.Context, addr, name, action string, token uint64) *HTTPResult {
	t.Helper()
	res, err := Do(ctx, "POST", addr, LockPath(name, action), map[string]any{"token": token})
	if err != nil {
		t.Fatalf("%s %s: %v", action, name, err)
	}
	return res
}

func getLockStatus(t *testing.T, ctx context.Context, addr, name, query string) lockStatus {
	t.Helper()
	p := LockPath(name, "")
	if query != "" {
		p += "?" + query
	}
	res, err := Do(ctx, "GET", addr, p, nil)
	if err != nil || res.Status != 200 {
		t.Fatalf("status %s: %v %v", name, res, err)
	}
	var st lockStatus
	if err := res.JSON(&st); err != nil {
		t.Fatalf("status %s: %s: %v", name, res, err)
	}
	return st
}

func wantCode(t *testing.T, what string, res *HTTPResult, status int, code string) {
	t.Helper()
	if res.Status != status || res.Code() != code {
		t.Fatalf("%s: %s; want %d %s", what, res, status, code)
	}
}

func TestLockAPI(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"lk/list/m"}})
	addrs := c.HTTPAddrs()
	t.Run("AcquireTryRenewRelease", func(t *testing.T) { lockAPIBasics(t, addrs) })
	t.Run("WaitersFIFO", func(t *testing.T) { lockAPIWaiters(t, c) })
	t.Run("BlockingStatus", func(t *testing.T) { lockAPIBlockingStatus(t, addrs) })
	t.Run("ListAcrossShards", func(t *testing.T) { lockAPIList(t, addrs) })
	t.Run("FencedDeleteAndGet", func(t *testing.T) { lockAPIFenced(t, addrs) })
	t.Run("BadInputLeavesStateUntouched", func(t *testing.T) { lockAPIBadInput(t, addrs) })
	t.Run("SemaphoreAndShared", func(t *testing.T) { lockAPISemaphoreShared(t, addrs) })
	t.Run("FencedReadPreventsLostUpdate", func(t *testing.T) { lockAPILostUpdate(t, addrs) })
	t.Run("WaiterSurvivesLeaderChange", func(t *testing.T) { lockAPIWaiterFailover(t, c) })
	t.Run("ShutdownEndsWaits", func(t *testing.T) { lockAPIShutdown(t, c) }) // last: it stops a node
}

// Acquire, try-lock 409 naming the holder, renew, stale release 410, status,
// release; the next grant's token is higher (invariant I9). Every call is
// sent to a different node, so most are forwarded to the leader.
func lockAPIBasics(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	const name = "lk/basic/one"
	g := mustAcquire(t, ctx, addrs[0], name, map[string]any{"ttl": "10s", "owner": "worker-1"})
	if g.Name != name || g.Owner != "worker-1" || g.TTL != "10s" {
		t.Fatalf("grant %+v", g)
	}

	res, _ := acquireLock(t, ctx, addrs[1], name, map[string]any{"ttl": "10s", "owner": "worker-2", "wait": "0s"})
	wantCode(t, "try-lock on a held lock", res, 409, "lock_held")
	var le lockErr
	if err := res.JSON(&le); err != nil || le.Error.Holder == nil || le.Error.Holder.Owner != "worker-1" ||
		le.Error.Holder.Token != g.Token {
		t.Fatalf("lock_held body %s does not name holder worker-1 with token %d", res, g.Token)
	}

	if res := lockOp(t, ctx, addrs[2], name, "renew", g.Token); res.Status != 200 {
		t.Fatalf("renew: %s", res)
	}
	wantCode(t, "renew with a token never granted", lockOp(t, ctx, addrs[1], name, "renew", g.Token+1000), 410, "lock_lost")
	wantCode(t, "release with a stale token", lockOp(t, ctx, addrs[0], name, "release", g.Token-1), 410, "lock_lost")

	st := getLockStatus(t, ctx, addrs[1], name, "")
	left, err := time.ParseDuration(st.ExpiresIn)
	if !st.Held || st.Token != g.Token || st.Owner != "worker-1" || len(st.Holders) != 1 || st.Waiters != 0 ||
		st.Limit != 1 || st.Mode != "exclusive" || err != nil || left <= 0 || left > 10*time.Second || st.Index == 0 {
		t.Fatalf("status %+v", st)
	}

	if res := lockOp(t, ctx, addrs[2], name, "release", g.Token); res.Status != 200 {
		t.Fatalf("release: %s", res)
	}
	wantCode(t, "release twice", lockOp(t, ctx, addrs[0], name, "release", g.Token), 410, "lock_lost")
	if st := getLockStatus(t, ctx, addrs[0], name, ""); st.Held || len(st.Holders) != 0 {
		t.Fatalf("status after release %+v", st)
	}
	g2 := mustAcquire(t, ctx, addrs[1], name, map[string]any{"ttl": "10s", "owner": "worker-2", "wait": "0s"})
	if g2.Token <= g.Token {
		t.Fatalf("invariant I9: token %d after %d", g2.Token, g.Token)
	}
	lockOp(t, ctx, addrs[1], name, "release", g2.Token)
}

// Waiters queued through three different nodes are granted in arrival
// order as each holder releases; a waiter whose wait runs out and one whose
// client goes away leave the queue (CancelWait).
func lockAPIWaiters(t *testing.T, c *Cluster) {
	ctx := Context(t, 25*time.Second)
	const name = "lk/fifo"
	addrs := c.HTTPAddrs()
	first := mustAcquire(t, ctx, addrs[0], name, map[string]any{"ttl": "10s", "owner": "holder"})

	type answer struct {
		owner string
		res   *HTTPResult
		g     lockGrant
	}
	answers := make(chan answer, 8)
	waitFor := func(n int) {
		WaitFor(t, 5*time.Second, fmt.Sprintf("%d waiters", n), func() error {
			if st := getLockStatus(t, ctx, addrs[0], name, ""); st.Waiters != n {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
	}
	owners := []string{"w-a", "w-b", "w-c"}
	for i, owner := range owners {
		go func() { // no t.Fatal off the test's goroutine
			res, err := Do(ctx, "POST", addrs[i%len(addrs)], LockPath(name, "acquire"), map[string]any{"ttl": "10s", "owner": owner, "wait": "20s"})
			var g lockGrant
			if err != nil {
				res = &HTTPResult{Status: 599, Body: []byte(err.Error())}
			} else if res.Status == 200 {
				_ = res.JSON(&g)
			}
			answers <- answer{owner, res, g}
		}()
		waitFor(i + 1) // queued in this order
	}

	// A waiter with a short wait: 409 lock_held once it runs out, and it
	// leaves the queue.
	start := time.Now()
	res, _ := acquireLock(t, ctx, addrs[1], name, map[string]any{"ttl": "10s", "owner": "w-short", "wait": "300ms"})
	wantCode(t, "a wait that runs out", res, 409, "lock_held")
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("a 300ms wait answered after %s", d)
	}
	waitFor(3)

	// A waiter whose client goes away: its request's context ends, and the
	// node that held it cancels the wait: sent to the leader (which waits
	// itself), then to a follower (which forwards the wait).
	leader := c.WaitLeader(shardOf(c, name), 10*time.Second)
	for _, i := range []int{leader, (leader + 1) % len(addrs)} {
		gone, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = Do(gone, "POST", addrs[i], LockPath(name, "acquire"), map[string]any{"ttl": "10s", "owner": "w-gone", "wait": "20s"})
		}()
		waitFor(4)
		cancel()
		<-done
		waitFor(3)
	}

	prev := first
	for _, owner := range owners {
		if res := lockOp(t, ctx, addrs[0], name, "release", prev.Token); res.Status != 200 {
			t.Fatalf("release %d: %s", prev.Token, res)
		}
		var a answer
		select {
		case a = <-answers:
		case <-time.After(10 * time.Second):
			t.Fatalf("no waiter granted after release of %d", prev.Token)
		}
		if a.res.Status != 200 || a.owner != owner || a.g.Owner != owner {
			t.Fatalf("after release of %d: %s answered %s; want %s granted (arrival order)", prev.Token, a.owner, a.res, owner)
		}
		if a.g.Token <= prev.Token {
			t.Fatalf("invariant I9: token %d granted after %d", a.g.Token, prev.Token)
		}
		prev = a.g
	}
	lockOp(t, ctx, addrs[0], name, "release", prev.Token)
}

// GET ?wait_index=N blocks until the holders change, then answers with a
// higher index; without a change it answers when its wait ends.
func lockAPIBlockingStatus(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	const name = "lk/watch"
	st := getLockStatus(t, ctx, addrs[0], name, "")
	if st.Held {
		t.Fatalf("fresh lock %+v", st)
	}

	start := time.Now()
	same := getLockStatus(t, ctx, addrs[1], name, "wait_index="+strconv.FormatUint(st.Index, 10)+"&wait=400ms")
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("a blocking status with no change answered after %s: %+v", d, same)
	}
	if same.Held {
		t.Fatalf("status %+v", same)
	}

	type answer struct {
		st  lockStatus
		err error
	}
	got := make(chan answer, 1)
	go func() {
		res, err := Do(ctx, "GET", addrs[2], LockPath(name, "")+"?wait_index="+strconv.FormatUint(same.Index, 10)+"&wait=15s", nil)
		var a answer
		if err == nil {
			err = res.JSON(&a.st)
			if res.Status != 200 {
				err = fmt.Errorf("%s", res)
			}
		}
		a.err = err
		got <- a
	}()
	select {
	case a := <-got:
		t.Fatalf("answered before any change: %+v %v", a.st, a.err)
	case <-time.After(300 * time.Millisecond):
	}
	g := mustAcquire(t, ctx, addrs[0], name, map[string]any{"ttl": "10s", "owner": "leader-elect"})
	select {
	case a := <-got:
		if a.err != nil || !a.st.Held || a.st.Token != g.Token || a.st.Owner != "leader-elect" || a.st.Index <= same.Index {
			t.Fatalf("after the grant the blocking status answered %+v %v (index before %d)", a.st, a.err, same.Index)
		}
		// The new index waits again: the release is the next change.
		next := a.st.Index
		go func() {
			res, err := Do(ctx, "GET", addrs[1], LockPath(name, "")+"?wait_index="+strconv.FormatUint(next, 10)+"&wait=15s", nil)
			var b answer
			if err == nil {
				err = res.JSON(&b.st)
			}
			b.err = err
			got <- b
		}()
		time.Sleep(200 * time.Millisecond)
		lockOp(t, ctx, addrs[2], name, "release", g.Token)
		select {
		case b := <-got:
			if b.err != nil || b.st.Held || b.st.Index <= next {
				t.Fatalf("after the release the blocking status answered %+v %v (index before %d)", b.st, b.err, next)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the blocking status did not answer after the release")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking status did not answer after the grant")
	}
}

// GET /v1/locks?prefix= lists held locks in name order across the two
// shards, paging with more/next like a key scan.
func lockAPIList(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	names := []string{"lk/list/a", "lk/list/b", "lk/list/c"} // shard 1 (before "lk/list/m")
	names2 := []string{"lk/list/x", "lk/list/y"}             // shard 2
	for i, n := range append(append([]string{}, names...), names2...) {
		mustAcquire(t, ctx, addrs[i%len(addrs)], n, map[string]any{"ttl": "10s", "owner": n})
	}
	mustAcquire(t, ctx, addrs[0], "lk/lisu", map[string]any{"ttl": "10s"}) // past the prefix

	list := func(addr, query string) (locks []lockStatus, more bool, next string, shard string) {
		res, err := Do(ctx, "GET", addr, "/v1/locks?"+query, nil)
		if err != nil || res.Status != 200 {
			t.Fatalf("list %s: %v %v", query, res, err)
		}
		var out struct {
			Locks []lockStatus `json:"locks"`
			More  bool         `json:"more"`
			Next  string       `json:"next"`
		}
		if err := res.JSON(&out); err != nil {
			t.Fatal(err)
		}
		return out.Locks, out.More, out.Next, res.Header.Get("X-Cairn-Shard")
	}
	all, more, _, _ := list(addrs[1], "prefix=lk/list/")
	var got []string
	for _, l := range all {
		if !l.Held || l.Owner != l.Name || l.ExpiresIn == "" {
			t.Errorf("listed %+v", l)
		}
		got = append(got, l.Name)
	}
	want := append(append([]string{}, names...), names2...)
	if more || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("list prefix=lk/list/: %v more=%v; want %v", got, more, want)
	}

	// Paging: two at a time, from any node, crossing the shard boundary.
	var paged []string
	q := "prefix=lk/list/&limit=2"
	shards := map[string]bool{}
	for page := 0; page < 10; page++ {
		locks, more, next, shard := list(addrs[page%len(addrs)], q)
		shards[shard] = true
		for _, l := range locks {
			paged = append(paged, l.Name)
		}
		if !more {
			break
		}
		q = "prefix=lk/list/&limit=2&start=" + url.QueryEscape(next)
	}
	if fmt.Sprint(paged) != fmt.Sprint(want) || len(shards) < 2 {
		t.Fatalf("paged list %v from shards %v; want %v from two shards", paged, shards, want)
	}
}

// A fenced DELETE and a fenced GET (invariant I11): the GET registers the
// token on the key; a lower token's DELETE or GET is then stale_token.
func lockAPIFenced(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	const name, key = "lk/fence", "fenced/k"
	g1 := mustAcquire(t, ctx, addrs[0], name, map[string]any{"ttl": "10s"})
	res, err := Do(ctx, "PUT", addrs[1], KVPath(key), map[string]any{"value": "v1", "fence": map[string]any{"lock": name, "token": g1.Token}})
	if err != nil || res.Status != 200 {
		t.Fatalf("fenced put: %v %v", res, err)
	}
	lockOp(t, ctx, addrs[0], name, "release", g1.Token)
	g2 := mustAcquire(t, ctx, addrs[2], name, map[string]any{"ttl": "10s"})

	fenced := func(method string, token uint64) *HTTPResult {
		p := KVPath(key) + "?fence_lock=" + url.QueryEscape(name) + "&fence_token=" + strconv.FormatUint(token, 10)
		res, err := Do(ctx, method, addrs[1], p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res = fenced("GET", g2.Token)
	var kv struct {
		Value string `json:"value"`
	}
	if res.Status != 200 || res.JSON(&kv) != nil || kv.Value != "v1" {
		t.Fatalf("fenced get with the new token: %s", res)
	}
	// The new holder's fenced read registered g2: the old holder's late
	// write, read or delete is refused, though it never wrote after g1.
	wantCode(t, "fenced delete with the old token", fenced("DELETE", g1.Token), 409, "stale_token")
	wantCode(t, "fenced get with the old token", fenced("GET", g1.Token), 409, "stale_token")
	res, _ = Do(ctx, "PUT", addrs[0], KVPath(key), map[string]any{"value": "late", "fence": map[string]any{"lock": name, "token": g1.Token}})
	wantCode(t, "fenced put with the old token", res, 409, "stale_token")
	res = fenced("DELETE", g2.Token)
	var del struct {
		Deleted int `json:"deleted"`
	}
	if res.Status != 200 || res.JSON(&del) != nil || del.Deleted != 1 {
		t.Fatalf("fenced delete with the new token: %s", res)
	}
	wantCode(t, "fenced get of a deleted key", fenced("GET", g2.Token), 404, "not_found")
	lockOp(t, ctx, addrs[2], name, "release", g2.Token)
}

// Bad input (issue 12 item 9) is 400 invalid_argument and leaves the lock
// exactly as it was: same holder, token, waiters and index.
func lockAPIBadInput(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	const name = "lk/bad"
	g := mustAcquire(t, ctx, addrs[0], name, map[string]any{"ttl": "10s", "owner": "keeper"})
	before := getLockStatus(t, ctx, addrs[0], name, "")
	bad := []struct {
		action string
		body   any
	}{
		{"acquire", map[string]any{"ttl": "10s", "limit": 0}},
		{"acquire", map[string]any{"ttl": "10s", "limit": 2}}, // not the lock's limit: refused by Apply, deterministically
		{"acquire", map[string]any{"ttl": "10s", "limit": 129}},
		{"acquire", map[string]any{"ttl": "0s"}},
		{"acquire", map[string]any{"ttl": "10s", "wait": "2h"}},
		{"acquire", map[string]any{"ttl": "10s", "lock_delay": "61s"}},
		{"acquire", map[string]any{"ttl": "10s", "mode": "upgradable"}},
		{"acquire", map[string]any{"ttl": "10s", "stea1": true}},
		{"renew", map[string]any{"token": strconv.FormatUint(g.Token, 10)}},
		{"renew", map[string]any{"token": 0}},
		{"release", map[string]any{"token": -1}},
		{"release", json.RawMessage(`{"token":1.5}`)},
	}
	for i, b := range bad {
		res, err := Do(ctx, "POST", addrs[i%len(addrs)], LockPath(name, b.action), b.body)
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, fmt.Sprintf("%s %v", b.action, b.body), res, 400, "invalid_argument")
	}
	after := getLockStatus(t, ctx, addrs[1], name, "")
	if after.Token != before.Token || after.Owner != before.Owner || after.Index != before.Index ||
		after.Waiters != before.Waiters || len(after.Holders) != 1 || after.Limit != before.Limit {
		t.Fatalf("bad input changed the lock: before %+v, after %+v", before, after)
	}
	lockOp(t, ctx, addrs[0], name, "release", g.Token)
}

// Issue 12 item 5, invariant I11: a write fence alone does not protect a
// read-modify-write. The old holder A read the counter, then lost the lock;
// the new holder B reads it, A's late increment (the first write fenced on
// that key, so nothing refuses it) lands, and B writes its increment on top
// of its stale read: two increments acknowledged, the counter moved by one.
// With B's read fenced (registering its token on the key) A's late write is
// refused, and every acknowledged increment is in the counter. The first
// run is the negative control: the same check fails without the fenced read.
func lockAPILostUpdate(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	run := func(key string, fencedRead bool) (acked, final int) {
		const name = "lk/counter"
		if res, err := Do(ctx, "PUT", addrs[0], KVPath(key), map[string]any{"value": "0"}); err != nil || res.Status != 200 {
			t.Fatalf("put %s: %v %v", key, res, err)
		}
		a := mustAcquire(t, ctx, addrs[0], name, map[string]any{"ttl": "10s", "owner": "A"})
		readA := readCounter(t, ctx, addrs[0], key, "")
		// A pauses; its lease ends (a release stands in for the expiry).
		lockOp(t, ctx, addrs[1], name, "release", a.Token)
		b := mustAcquire(t, ctx, addrs[1], name, map[string]any{"ttl": "10s", "owner": "B"})
		fence := ""
		if fencedRead {
			fence = "fence_lock=" + url.QueryEscape(name) + "&fence_token=" + strconv.FormatUint(b.Token, 10)
		}
		readB := readCounter(t, ctx, addrs[2], key, fence)
		// A resumes and writes its increment with its old token.
		if writeCounter(t, ctx, addrs[2], key, name, a.Token, readA+1) {
			acked++
		}
		if writeCounter(t, ctx, addrs[0], key, name, b.Token, readB+1) {
			acked++
		}
		lockOp(t, ctx, addrs[0], name, "release", b.Token)
		return acked, readCounter(t, ctx, addrs[1], key, "")
	}
	if acked, final := run("counter/plain-read", false); acked != 2 || final != 1 {
		t.Fatalf("without a fenced read: %d increments acknowledged, counter %d; want the lost update (2, 1)", acked, final)
	}
	if acked, final := run("counter/fenced-read", true); acked != final || acked != 1 {
		t.Fatalf("with a fenced read: %d increments acknowledged, counter %d; want every acknowledged one counted", acked, final)
	}
}

func readCounter(t *testing.T, ctx context.Context, addr, key, query string) int {
	t.Helper()
	p := KVPath(key)
	if query != "" {
		p += "?" + query
	}
	res, err := Do(ctx, "GET", addr, p, nil)
	var kv struct {
		Value string `json:"value"`
	}
	if err != nil || res.Status != 200 || res.JSON(&kv) != nil {
		t.Fatalf("read %s: %v %v", p, res, err)
	}
	n, err := strconv.Atoi(kv.Value)
	if err != nil {
		t.Fatalf("counter %q: %v", kv.Value, err)
	}
	return n
}

// writeCounter writes v fenced with (name, token); false when the store
// refused it as stale_token.
func writeCounter(t *testing.T, ctx context.Context, addr, key, name string, token uint64, v int) bool {
	t.Helper()
	res, err := Do(ctx, "PUT", addr, KVPath(key), map[string]any{"value": strconv.Itoa(v),
		"fence": map[string]any{"lock": name, "token": token}})
	switch {
	case err != nil:
		t.Fatal(err)
	case res.Status == 200:
		return true
	case res.Code() == "stale_token":
		return false
	}
	t.Fatalf("fenced put: %s", res)
	return false
}

// A waiting acquire held open on the shard leader is granted after the
// leadership moves away: the queue is replicated, and the old leader, now a
// follower, still applies the release that grants it. Another waiter held
// there whose client goes away is cancelled by the old leader on the new
// one (cluster.PathLockCancelWait).
func lockAPIWaiterFailover(t *testing.T, c *Cluster) {
	ctx := Context(t, 25*time.Second)
	const name = "lk/failover"
	id := shardOf(c, name)
	leader := c.WaitLeader(id, 10*time.Second)
	h := c.Node(leader)
	held := mustAcquire(t, ctx, h.HTTPAddr, name, map[string]any{"ttl": "15s", "owner": "first"})
	waiters := func(addr string, n int) {
		WaitFor(t, 5*time.Second, fmt.Sprintf("%d waiters", n), func() error {
			if st := getLockStatus(t, ctx, addr, name, ""); st.Waiters != n {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
	}
	got := make(chan *HTTPResult, 1)
	go func() {
		res, err := Do(ctx, "POST", h.HTTPAddr, LockPath(name, "acquire"), map[string]any{"ttl": "15s", "owner": "second", "wait": "20s"})
		if err != nil {
			res = &HTTPResult{Status: 599, Body: []byte(err.Error())}
		}
		got <- res
	}()
	waiters(h.HTTPAddr, 1)
	gone, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = Do(gone, "POST", h.HTTPAddr, LockPath(name, "acquire"), map[string]any{"ttl": "15s", "owner": "gone", "wait": "20s"})
	}()
	waiters(h.HTTPAddr, 2)

	to := c.Node((leader + 1) % len(c.Nodes()))
	WaitFor(t, 10*time.Second, "leadership moved to "+to.ID, func() error {
		if cur, err := c.Leader(id); err == nil && c.Node(cur).ID == to.ID {
			return nil
		}
		rep, ok := h.Node.Replica(id)
		if ok && rep.IsLeader() {
			if err := rep.TransferLeader(to.ID, to.RaftAddr); err != nil {
				return err
			}
		}
		return fmt.Errorf("not yet")
	})
	cancel()
	<-done
	waiters(to.HTTPAddr, 1)
	if cur, _ := c.Leader(id); c.Node(cur).ID == h.ID {
		t.Fatalf("%s leads shard %d again: the cancel did not have to cross nodes", h.ID, id)
	}

	if res := lockOp(t, ctx, to.HTTPAddr, name, "release", held.Token); res.Status != 200 {
		t.Fatalf("release on the new leader: %s", res)
	}
	select {
	case res := <-got:
		var g lockGrant
		if res.Status != 200 || res.JSON(&g) != nil || g.Owner != "second" || g.Token <= held.Token {
			t.Fatalf("the waiter on the old leader answered %s; want a grant above %d", res, held.Token)
		}
		lockOp(t, ctx, to.HTTPAddr, name, "release", g.Token)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter on the old leader was not granted after the release on the new leader")
	}
}

// A semaphore ("limit": 2) admits two holders, each with its own token, and
// refuses a third; an acquire with another limit is invalid_argument.
// Shared holders admit each other and exclude an exclusive one.
func lockAPISemaphoreShared(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	const sem = "lk/sem"
	a := mustAcquire(t, ctx, addrs[0], sem, map[string]any{"ttl": "10s", "owner": "a", "limit": 2})
	b := mustAcquire(t, ctx, addrs[1], sem, map[string]any{"ttl": "10s", "owner": "b", "limit": 2})
	if b.Token <= a.Token {
		t.Fatalf("invariant I9: semaphore tokens %d then %d", a.Token, b.Token)
	}
	res, _ := acquireLock(t, ctx, addrs[2], sem, map[string]any{"ttl": "10s", "owner": "c", "limit": 2})
	wantCode(t, "a third holder of a semaphore of 2", res, 409, "lock_held")
	res, _ = acquireLock(t, ctx, addrs[2], sem, map[string]any{"ttl": "10s", "owner": "c", "limit": 3})
	wantCode(t, "an acquire with another limit", res, 400, "invalid_argument")
	st := getLockStatus(t, ctx, addrs[2], sem, "")
	if len(st.Holders) != 2 || st.Limit != 2 || st.Holders[0].Token != a.Token || st.Holders[1].Token != b.Token {
		t.Fatalf("semaphore status %+v", st)
	}
	lockOp(t, ctx, addrs[0], sem, "release", a.Token)
	lockOp(t, ctx, addrs[0], sem, "release", b.Token)

	const rw = "lk/rw"
	r1 := mustAcquire(t, ctx, addrs[0], rw, map[string]any{"ttl": "10s", "owner": "r1", "mode": "shared"})
	r2 := mustAcquire(t, ctx, addrs[1], rw, map[string]any{"ttl": "10s", "owner": "r2", "mode": "shared"})
	res, _ = acquireLock(t, ctx, addrs[2], rw, map[string]any{"ttl": "10s", "owner": "w"})
	wantCode(t, "an exclusive acquire among shared holders", res, 409, "lock_held")
	if st := getLockStatus(t, ctx, addrs[2], rw, ""); st.Mode != "shared" || len(st.Holders) != 2 {
		t.Fatalf("shared status %+v", st)
	}
	lockOp(t, ctx, addrs[0], rw, "release", r1.Token)
	lockOp(t, ctx, addrs[0], rw, "release", r2.Token)
	w := mustAcquire(t, ctx, addrs[2], rw, map[string]any{"ttl": "10s", "owner": "w"})
	res, _ = acquireLock(t, ctx, addrs[0], rw, map[string]any{"ttl": "10s", "owner": "r3", "mode": "shared"})
	wantCode(t, "a shared acquire under an exclusive holder", res, 409, "lock_held")
	lockOp(t, ctx, addrs[2], rw, "release", w.Token)
}

// A node that shuts down ends the requests waiting on it at once: a queued
// acquire cancels its wait while the node can still propose (the queue is
// left clean) and answers 503 unavailable, retryable; a blocking status
// answers 503 too. The node stops without waiting for them.
func lockAPIShutdown(t *testing.T, c *Cluster) {
	ctx := Context(t, 25*time.Second)
	const name = "lk/shutdown"
	id := shardOf(c, name)
	leader := c.WaitLeader(id, 10*time.Second)
	h := c.Node(leader)
	other := c.Node((leader + 1) % len(c.Nodes()))
	held := mustAcquire(t, ctx, other.HTTPAddr, name, map[string]any{"ttl": "15s", "owner": "first"})
	st := getLockStatus(t, ctx, h.HTTPAddr, name, "")
	acq, watch := make(chan *HTTPResult, 1), make(chan *HTTPResult, 1)
	send := func(ch chan *HTTPResult, method, path string, body any) {
		res, err := Do(ctx, method, h.HTTPAddr, path, body)
		if err != nil {
			res = &HTTPResult{Status: 599, Body: []byte(err.Error())}
		}
		ch <- res
	}
	go send(acq, "POST", LockPath(name, "acquire"), map[string]any{"ttl": "15s", "owner": "waiting", "wait": "20s"})
	go send(watch, "GET", LockPath(name, "")+"?wait_index="+strconv.FormatUint(st.Index, 10)+"&wait=20s", nil)
	WaitFor(t, 5*time.Second, "the waiter queued", func() error {
		if st := getLockStatus(t, ctx, other.HTTPAddr, name, ""); st.Waiters != 1 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // the blocking status is waiting too
	start := time.Now()
	c.Kill(leader)
	// The HTTP server's shutdown grace is 2s: a node that waited for its
	// open requests would take that long.
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("stopping %s took %s with requests waiting on it; the waits should end at once", h.ID, d)
	}
	for what, ch := range map[string]chan *HTTPResult{"queued acquire": acq, "blocking status": watch} {
		select {
		case res := <-ch:
			if res.Status != 503 || res.Code() != "unavailable" {
				t.Errorf("%s on a node shutting down answered %s; want 503 unavailable", what, res)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still open after %s stopped", what, h.ID)
		}
	}
	WaitFor(t, 15*time.Second, "the waiter gone from the queue", func() error {
		res, err := Do(ctx, "GET", other.HTTPAddr, LockPath(name, ""), nil)
		var st lockStatus
		if err != nil || res.Status != 200 || res.JSON(&st) != nil {
			return fmt.Errorf("status: %v %v", res, err)
		}
		if st.Waiters != 0 || st.Token != held.Token {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}
