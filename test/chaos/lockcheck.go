package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// LockGrant is one acquire of the fenced lock workload that answered with a
// token, as its client saw it.
type LockGrant struct {
	Client     string
	Token      uint64
	Start, End time.Time // the acquire's invocation and answer
	Index      uint64    // X-Cairn-Index of the answer
}

// Increment is one fenced read-modify-write of the counter: the value the
// fenced read returned ("" when the key was absent) and the value the fenced
// write tried to store. Every written value is "<n> <client>-<seq>", unique
// in the run, n being the read's n plus one, so the value the counter holds
// at the end names the increment that wrote it and, through that
// increment's Read, the whole chain of increments that took effect.
type Increment struct {
	Client     string
	Token      uint64
	Read       string
	Wrote      string
	State      addState // of the write: acknowledged, unknown or failed
	Code       string   // the write's error code when it failed
	Start, End time.Time
	Index      uint64 // the write's Raft index when acknowledged
}

// LockHistory is what the workload's clients saw of one lock and its
// counter.
type LockHistory struct {
	Lock, Counter string
	Grants        []LockGrant
	Incs          []Increment
	StaleReads    int // fenced reads refused with stale_token
}

// LockResult is the check of one lock's history against the counter's
// final value.
type LockResult struct {
	Lock, Counter string
	Grants        int
	Final         int64 // the counter's final n
	// Increments by outcome of their write.
	Acked, Unknown, UnknownApplied, Failed int
	StaleWrites                            int // failed with stale_token: the store fencing off a late holder
	StaleReads                             int
	// The anomalies.
	Lost          []string // an acknowledged increment that is not in the final chain (lost update)
	FailedApplied []string // an increment whose write definitely failed, yet took effect
	Phantom       []string // the counter holds a value no increment wrote, or a malformed chain
	TokenOrder    []string // a grant's token not above a grant that ended before it began (I9)
}

// Anomalies lists every anomaly of r.
func (r *LockResult) Anomalies() []string {
	var out []string
	add := func(what string, xs []string) {
		for _, x := range xs {
			out = append(out, fmt.Sprintf("lock %s: %s: %s", r.Lock, what, x))
		}
	}
	add("lost update", r.Lost)
	add("write reported failed took effect", r.FailedApplied)
	add("counter", r.Phantom)
	add("token order", r.TokenOrder)
	return out
}

// counterN returns the n of a counter value; "" (absent) is 0.
func counterN(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	f, _, _ := strings.Cut(v, " ")
	return strconv.ParseInt(f, 10, 64)
}

// CheckLock checks a fenced lock workload's history (Scenario S15,
// invariants I9 and I11) against the counter's final value (final, "" when
// the key is absent):
//
//   - the chain of increments that took effect, walked back from the final
//     value through each increment's Read, reaches the absent key with n
//     going down by one at each step: the counter equals the number of
//     increments applied, each once;
//   - every acknowledged increment is in that chain (no lost update: two
//     acknowledged increments that read the same value cannot both be
//     there, nor can one applied twice, which cuts the increments between
//     its two applications out of the chain);
//   - no increment whose write definitely failed (stale_token above all) is
//     in it; unknown ones may be or not, and are counted;
//   - tokens strictly increase in grant order: a grant whose acquire began
//     after another's answer has a higher token, and no token is handed
//     out twice.
func CheckLock(h LockHistory, final string) *LockResult {
	r := &LockResult{Lock: h.Lock, Counter: h.Counter, Grants: len(h.Grants), StaleReads: h.StaleReads}
	byValue := make(map[string]int, len(h.Incs))
	for i, inc := range h.Incs {
		if j, dup := byValue[inc.Wrote]; dup {
			r.Phantom = append(r.Phantom, fmt.Sprintf("value %q written by two increments (%d and %d): the workload's values are not unique", inc.Wrote, j, i))
			continue
		}
		byValue[inc.Wrote] = i
		switch inc.State {
		case addAcked:
			r.Acked++
		case addUnknown:
			r.Unknown++
		case addFailed:
			r.Failed++
			if inc.Code == "stale_token" {
				r.StaleWrites++
			}
		}
	}
	chain := walkChain(h.Incs, byValue, final, r)
	inChain := make(map[int]bool, len(chain))
	for _, i := range chain {
		inChain[i] = true
	}
	for i, inc := range h.Incs {
		switch {
		case inc.State == addAcked && !inChain[i]:
			r.Lost = append(r.Lost, describeLost(h.Incs, byValue, inChain, i))
		case inc.State == addFailed && inChain[i]:
			r.FailedApplied = append(r.FailedApplied, fmt.Sprintf("%s (%s) is in the counter's chain", describeInc(inc), inc.Code))
		case inc.State == addUnknown && inChain[i]:
			r.UnknownApplied++
		}
	}
	r.TokenOrder = checkTokenOrder(h.Grants)
	sort.Strings(r.Lost)
	return r
}

// walkChain follows the counter's final value back through the increments'
// reads to the absent key and returns the increments met, last first. A
// value no increment wrote, a step where n does not go down by one, or a
// cycle ends the walk with an anomaly in r.Phantom.
func walkChain(incs []Increment, byValue map[string]int, final string, r *LockResult) []int {
	n, err := counterN(final)
	if err != nil {
		r.Phantom = append(r.Phantom, fmt.Sprintf("final value %q is not a counter value", final))
		return nil
	}
	r.Final = n
	var chain []int
	seen := map[int]bool{}
	for cur := final; cur != ""; {
		i, ok := byValue[cur]
		if !ok {
			r.Phantom = append(r.Phantom, fmt.Sprintf("the counter's chain reaches %q, which no increment wrote (%d steps from the final value %q)", cur, len(chain), final))
			return chain
		}
		if seen[i] {
			r.Phantom = append(r.Phantom, fmt.Sprintf("the counter's chain loops at %q", cur))
			return chain
		}
		seen[i] = true
		inc := incs[i]
		wn, err1 := counterN(inc.Wrote)
		rn, err2 := counterN(inc.Read)
		if err1 != nil || err2 != nil || wn != rn+1 {
			r.Phantom = append(r.Phantom, fmt.Sprintf("%s does not add one to what it read", describeInc(inc)))
			return chain
		}
		chain = append(chain, i)
		cur = inc.Read
	}
	if int64(len(chain)) != n {
		r.Phantom = append(r.Phantom, fmt.Sprintf("counter holds %d but %d increments took effect", n, len(chain)))
	}
	return chain
}

// describeLost says what became of lost increment i: which increment of the
// chain read the same value (both acknowledged: a lost update), or that
// nothing in the chain did.
func describeLost(incs []Increment, byValue map[string]int, inChain map[int]bool, i int) string {
	inc := incs[i]
	for j, o := range incs {
		if j != i && inChain[j] && o.Read == inc.Read {
			return fmt.Sprintf("%s and %s both read %q; only the second is in the counter's chain", describeInc(inc), describeInc(o), inc.Read)
		}
	}
	return describeInc(inc) + " is acknowledged but not in the counter's chain"
}

func describeInc(inc Increment) string {
	return fmt.Sprintf("%s token %d wrote %q over %q (%s..%s UTC, index %d)", inc.Client, inc.Token, inc.Wrote, inc.Read,
		inc.Start.UTC().Format("15:04:05.000"), inc.End.UTC().Format("15:04:05.000"), inc.Index)
}

// checkTokenOrder checks invariant I9 from the clients' side: a grant
// answered before another grant's acquire began has the lower token, and no
// token is granted twice.
func checkTokenOrder(grants []LockGrant) []string {
	var out []string
	byToken := map[uint64]LockGrant{}
	for _, g := range grants {
		if o, dup := byToken[g.Token]; dup {
			out = append(out, fmt.Sprintf("token %d granted twice: to %s and to %s", g.Token, o.Client, g.Client))
		}
		byToken[g.Token] = g
	}
	ended := slices.Clone(grants)
	slices.SortFunc(ended, func(a, b LockGrant) int { return a.End.Compare(b.End) })
	started := slices.Clone(grants)
	slices.SortFunc(started, func(a, b LockGrant) int { return a.Start.Compare(b.Start) })
	// Sweep the grants by start, keeping the highest token among those
	// answered strictly before the current one began.
	var best LockGrant
	have := false
	k := 0
	for _, g := range started {
		for k < len(ended) && ended[k].End.Before(g.Start) {
			if !have || ended[k].Token > best.Token {
				best, have = ended[k], true
			}
			k++
		}
		if have && g.Token <= best.Token {
			out = append(out, fmt.Sprintf("%s got token %d at %s, after %s got token %d at %s", g.Client, g.Token,
				g.End.UTC().Format("15:04:05.000"), best.Client, best.Token, best.End.UTC().Format("15:04:05.000")))
		}
	}
	return out
}
