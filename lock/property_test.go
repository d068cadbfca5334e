package lock

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// lockSeed returns LOCK_SEED when set (to replay a failure), else a fresh
// seed; the caller logs it.
func lockSeed(t *testing.T) uint64 {
	if s := os.Getenv("LOCK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LOCK_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// model is what an observer of results alone knows about one lock. The
// property test keeps it from Apply's results and checks the record, and
// the results, against it.
type model struct {
	holders  []modelHolder // grant order
	queue    []string      // waiter ids in arrival order
	deadline map[string]int64
	maxToken uint64 // highest token ever granted for the name, across splits and dropped records
	stale    []uint64
	ids      []string
	limit    int
}

type modelHolder struct {
	token, renewSeq uint64
	waiterID        string
}

func (m *model) holder(token uint64) int {
	return slices.IndexFunc(m.holders, func(h modelHolder) bool { return h.token == token })
}

func (m *model) dropHolder(t *testing.T, token uint64) {
	i := m.holder(token)
	if i < 0 {
		t.Fatalf("result removed token %d the model does not hold", token)
	}
	m.holders = slices.Delete(m.holders, i, i+1)
	m.stale = append(m.stale, token)
}

// TestApplyProperties runs random command sequences, with splits (a new
// base and indices restarting) and every record round-tripping through its
// encoding, and checks after every entry:
//   - tokens strictly increase per name, forever (Invariant I9);
//   - at most limit exclusive holders, never shared and exclusive together;
//   - waiters are granted strictly in arrival order, never past their deadline;
//   - an Expire takes effect iff it names a current holder's last renew (Invariant I10);
//   - renew/release succeed iff the token holds the lock (lock_lost otherwise; Invariant I11's tokens);
//   - nothing is granted during a lock delay, and no grantable head waiter is left waiting.
func TestApplyProperties(t *testing.T) {
	seed := lockSeed(t)
	t.Logf("seed %d (replay with LOCK_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for run := range 200 {
		t.Run(fmt.Sprint(run), func(t *testing.T) { propertyRun(t, rng, 300) })
	}
}

func propertyRun(t *testing.T, rng *rand.Rand, steps int) {
	r := newRunner(t)
	r.base = rng.Uint64N(1000)
	m := &model{deadline: map[string]int64{}, limit: 1 + rng.IntN(3)}
	nextID := 0
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	for i := range steps {
		r.now += rng.Int64N(3 * sec)
		if rng.IntN(50) == 0 { // a split moves the record to a child group
			r.base, r.index = r.base+r.index, 1
		}
		cmd := m.randomCommand(rng, r, &nextID, pick)
		before := r.rec.Clone()
		res := r.do(cmd)
		if t.Failed() {
			return
		}
		m.check(t, i, cmd, before, r, res)
		if t.Failed() {
			return
		}
	}
}

func (m *model) randomCommand(rng *rand.Rand, r *runner, nextID *int, pick func([]string) string) Command {
	tokenFor := func() uint64 {
		if len(m.holders) > 0 && (len(m.stale) == 0 || rng.IntN(10) < 7) {
			return m.holders[rng.IntN(len(m.holders))].token
		}
		if len(m.stale) > 0 {
			return m.stale[rng.IntN(len(m.stale))]
		}
		return 1 + rng.Uint64N(5)
	}
	switch p := rng.IntN(100); {
	case p < 35:
		a := Acquire{Name: "L", Owner: "o", TTL: 10 * time.Second, Limit: m.limit}
		if rng.IntN(3) == 0 {
			a.Mode = Shared
		}
		if rng.IntN(20) == 0 {
			a.Limit = 1 + rng.IntN(3)
		}
		if rng.IntN(4) == 0 {
			a.LockDelay = time.Duration(1+rng.IntN(3)) * time.Second
		}
		if rng.IntN(10) < 7 {
			a.Wait = time.Duration(1+rng.IntN(20)) * time.Second
		}
		if len(m.ids) > 0 && rng.IntN(20) == 0 {
			a.WaiterID = pick(m.ids) // a retry
		} else {
			*nextID++
			a.WaiterID = fmt.Sprintf("w%d", *nextID)
			m.ids = append(m.ids, a.WaiterID)
		}
		return a
	case p < 50:
		return Release{Name: "L", Token: tokenFor()}
	case p < 60:
		return Renew{Name: "L", Token: tokenFor()}
	case p < 75:
		e := Expire{Name: "L", Token: tokenFor()}
		if i := m.holder(e.Token); i >= 0 && rng.IntN(4) != 0 {
			e.RenewSeq = m.holders[i].renewSeq
		} else {
			e.RenewSeq = rng.Uint64N(r.base + r.index + 1)
		}
		return e
	case p < 85:
		if len(m.ids) == 0 {
			return ExpireWaiters{Name: "L"}
		}
		return CancelWait{Name: "L", WaiterID: pick(m.ids)}
	case p < 92:
		return ExpireWaiters{Name: "L"}
	}
	if r.rec != nil && r.rec.DelaySeq != 0 && rng.IntN(4) != 0 {
		return EndDelay{Name: "L", DelaySeq: r.rec.DelaySeq}
	}
	return EndDelay{Name: "L", DelaySeq: rng.Uint64N(r.base + r.index + 1)}
}

func (m *model) check(t *testing.T, step int, cmd Command, before *Record, r *runner, res Result) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("step %d %T%+v: %s\nbefore %+v\nafter  %+v\nresult %+v", step, cmd, cmd,
			fmt.Sprintf(format, args...), before, r.rec, res)
	}
	seq := r.base + r.index
	if res.Err != nil {
		if len(res.Granted) != 0 || len(res.Removed) != 0 || res.Status != StatusNone {
			fail("a refused command reported effects")
		}
		switch c := cmd.(type) {
		case Acquire:
			inUse := before != nil && (len(before.Holders) > 0 || len(before.Waiters) > 0)
			if res.Err.Code == CodeInvalidArgument && !(inUse && c.Limit != before.Limit) {
				fail("unexpected invalid_argument")
			}
			if res.Err.Code == CodeLockHeld && c.Wait > 0 && (before == nil || len(before.Waiters) < MaxWaiters) {
				fail("a waiting acquire was refused")
			}
		case Renew, Release:
			if res.Err.Code != CodeLockLost || m.holder(tokenOf(cmd)) >= 0 {
				fail("renew/release of a held token failed, or of a lost one was not lock_lost")
			}
		default:
			fail("unexpected error")
		}
		return
	}
	// Waiters that left, then grants, in the order Apply makes them.
	for _, id := range res.Removed {
		if i := slices.Index(m.queue, id); i >= 0 {
			m.queue = slices.Delete(m.queue, i, i+1)
		} else {
			fail("removed waiter %q that was not queued", id)
		}
	}
	if before != nil && before.DelaySeq != 0 && len(res.Granted) > 0 {
		if e, ok := cmd.(EndDelay); !ok || e.DelaySeq != before.DelaySeq {
			fail("granted during a lock delay")
		}
	}
	for _, h := range res.Granted {
		if h.Token <= m.maxToken { // Invariant I9
			fail("token %d not above every earlier token (%d)", h.Token, m.maxToken)
		}
		m.maxToken = h.Token
		if h.GrantSeq != seq || h.RenewSeq != seq {
			fail("grant seqs %d/%d, want %d", h.GrantSeq, h.RenewSeq, seq)
		}
		if i := slices.Index(m.queue, h.WaiterID); i >= 0 {
			if i != 0 {
				fail("waiter %q granted ahead of %v (FIFO)", h.WaiterID, m.queue[:i])
			}
			if m.deadline[h.WaiterID] <= r.now {
				fail("waiter %q granted past its deadline", h.WaiterID)
			}
			m.queue = m.queue[1:]
		}
		m.holders = append(m.holders, modelHolder{token: h.Token, renewSeq: h.RenewSeq, waiterID: h.WaiterID})
	}
	switch c := cmd.(type) {
	case Acquire:
		switch res.Status {
		case StatusQueued:
			if !slices.Contains(m.queue, c.WaiterID) {
				m.queue = append(m.queue, c.WaiterID)
				m.deadline[c.WaiterID] = r.now + int64(c.Wait)
			}
		case StatusGranted:
			if i := m.holder(res.Token); i < 0 || m.holders[i].waiterID != c.WaiterID {
				fail("granted token %d is not this request's", res.Token)
			}
		default:
			fail("acquire status %d", res.Status)
		}
	case Renew:
		i := m.holder(c.Token)
		if i < 0 || res.Status != StatusRenewed {
			fail("renew of a lost token succeeded, or status %d", res.Status)
		}
		m.holders[i].renewSeq = seq
	case Release:
		if res.Status != StatusReleased {
			fail("release status %d", res.Status)
		}
		m.dropHolder(t, c.Token)
	case Expire:
		i := m.holder(c.Token)
		should := i >= 0 && m.holders[i].renewSeq == c.RenewSeq // Invariant I10
		if should != (res.Status == StatusExpired) {
			fail("expire took effect=%v, want %v", res.Status == StatusExpired, should)
		}
		if should {
			m.dropHolder(t, c.Token)
		}
	case CancelWait:
		if res.Status == StatusReleased {
			i := m.holder(res.Token)
			if i < 0 || m.holders[i].waiterID != c.WaiterID {
				fail("cancel released token %d, not the request's grant", res.Token)
			}
			m.dropHolder(t, res.Token)
		}
	}
	// The record agrees with the model.
	var tokens, want []uint64
	var queue []string
	if r.rec != nil {
		for _, h := range r.rec.Holders {
			tokens = append(tokens, h.Token)
		}
		for _, w := range r.rec.Waiters {
			queue = append(queue, w.ID)
		}
	}
	for _, h := range m.holders {
		want = append(want, h.token)
	}
	if !slices.Equal(tokens, want) || !slices.Equal(queue, m.queue) {
		fail("record holders %v waiters %v, model %v %v", tokens, queue, want, m.queue)
	}
	// No grantable head is left waiting (a lost wake-up would stall the queue).
	if rec := r.rec; rec != nil && len(rec.Waiters) > 0 && rec.DelaySeq == 0 {
		st := &state{r: rec}
		if st.admits(rec.Waiters[0].Mode) && rec.Waiters[0].Deadline > r.now {
			fail("head waiter %q could be granted but waits", rec.Waiters[0].ID)
		}
	}
}

func tokenOf(c Command) uint64 {
	switch c := c.(type) {
	case Renew:
		return c.Token
	case Release:
		return c.Token
	}
	return 0
}
