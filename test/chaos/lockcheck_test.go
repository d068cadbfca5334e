package chaos

import (
	"strings"
	"testing"
	"time"
)

// lockHist builds synthetic fenced-counter histories for CheckLock: each
// increment is (client, token, read, wrote, state), its times one second
// apart in order, and each token's grant answered just before its
// increment.
type lockHist struct {
	t0   time.Time
	h    LockHistory
	step int
}

func newLockHist() *lockHist {
	return &lockHist{t0: time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC), h: LockHistory{Lock: "L", Counter: "c"}}
}

func (b *lockHist) at(i int) time.Time { return b.t0.Add(time.Duration(i) * time.Second) }

func (b *lockHist) grant(client string, token uint64) *lockHist {
	b.step++
	b.h.Grants = append(b.h.Grants, LockGrant{Client: client, Token: token, Start: b.at(b.step), End: b.at(b.step).Add(100 * time.Millisecond)})
	return b
}

func (b *lockHist) inc(client string, token uint64, read, wrote string, st addState) *lockHist {
	b.step++
	inc := Increment{Client: client, Token: token, Read: read, Wrote: wrote, State: st,
		Start: b.at(b.step), End: b.at(b.step).Add(100 * time.Millisecond)}
	if st == addFailed {
		inc.Code = "stale_token"
	}
	b.h.Incs = append(b.h.Incs, inc)
	return b
}

// TestCheckLock is the negative control of the fenced lock workload's
// checker (Scenario S15, invariants I9 and I11): a good history passes, and
// each broken guarantee — a lost update, an increment applied twice, a
// stale_token write that took effect, a phantom value, a counter that skips,
// a token out of grant order or granted twice — is found.
func TestCheckLock(t *testing.T) {
	// good: a, b, then a paused holder c whose late write was refused, an
	// unknown write that took effect (d) and one that did not (e), then f.
	good := func() *lockHist {
		return newLockHist().
			grant("a", 10).inc("a", 10, "", "1 a-0", addAcked).
			grant("b", 12).inc("b", 12, "1 a-0", "2 b-0", addAcked).
			grant("c", 15).grant("d", 17).inc("d", 17, "2 b-0", "3 d-0", addUnknown).
			inc("c", 15, "2 b-0", "3 c-0", addFailed).
			grant("e", 20).inc("e", 20, "3 d-0", "4 e-0", addUnknown).
			grant("f", 22).inc("f", 22, "3 d-0", "4 f-0", addAcked)
	}
	cases := []struct {
		name  string
		hist  func() *lockHist
		final string
		want  string // a substring of the anomalies; "" for none
	}{
		{"good", good, "4 f-0", ""},
		{"empty", newLockHist, "", ""},
		{"lost-update", func() *lockHist {
			// b and c both read a's value and both writes were acknowledged:
			// what a store without fencing does to a paused holder.
			return good().grant("g", 30).inc("g", 30, "4 f-0", "5 g-0", addAcked).
				grant("h", 31).inc("h", 31, "4 f-0", "5 h-0", addAcked)
		}, "5 h-0", "lost update: g token 30"},
		{"applied-twice", func() *lockHist {
			// a's write was applied again after b's (a retry applied twice):
			// g read a's value the second time, and b drops out of the chain.
			return good().grant("g", 30).inc("g", 30, "4 f-0", "5 g-0", addAcked).
				grant("h", 31).inc("h", 31, "5 g-0", "6 h-0", addAcked).
				grant("i", 32).inc("i", 32, "5 g-0", "6 i-0", addAcked)
		}, "6 i-0", "lost update: h token 31"},
		{"stale-write-applied", good, "3 c-0", "write reported failed took effect: c token 15"},
		{"phantom", good, "4 zz-9", "which no increment wrote"},
		{"not-a-counter", good, "garbage", "not a counter value"},
		{"counter-skips", func() *lockHist {
			return newLockHist().grant("a", 1).inc("a", 1, "", "2 a-0", addAcked)
		}, "2 a-0", "does not add one"},
		{"token-order", func() *lockHist {
			return good().grant("g", 21).inc("g", 21, "4 f-0", "5 g-0", addAcked)
		}, "5 g-0", "token order: g got token 21"},
		{"token-twice", func() *lockHist {
			return good().grant("g", 22)
		}, "4 f-0", "token 22 granted twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := CheckLock(tc.hist().h, tc.final)
			an := strings.Join(r.Anomalies(), "\n")
			if tc.want == "" {
				if an != "" {
					t.Fatalf("good history has anomalies:\n%s", an)
				}
				return
			}
			if !strings.Contains(an, tc.want) {
				t.Fatalf("want an anomaly with %q, got:\n%s", tc.want, an)
			}
		})
	}
	r := CheckLock(good().h, "4 f-0")
	if r.Acked != 3 || r.Unknown != 2 || r.UnknownApplied != 1 || r.StaleWrites != 1 || r.Final != 4 || r.Grants != 6 {
		t.Fatalf("counts of the good history: %+v", r)
	}
}
