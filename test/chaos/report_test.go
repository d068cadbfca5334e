package chaos

import (
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, tc := range []struct {
		q    int
		want time.Duration
	}{{50, 5}, {90, 9}, {100, 10}, {1, 1}} {
		if got := percentile(ds, tc.q); got != tc.want {
			t.Errorf("percentile(%d) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := percentile([]time.Duration{7}, 50); got != 7 {
		t.Errorf("percentile of one = %v", got)
	}
}

func TestFailoversUseWritesIssuedAfterTheFault(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	c := &Canary{}
	c.writes = []probe{
		{addRecord: addRecord{start: at(-50), end: at(20), state: addAcked}},    // began before the fault: maybe acknowledged by the old leader
		{addRecord: addRecord{start: at(50), end: at(900), state: addUnknown}},  // issued after, no answer
		{addRecord: addRecord{start: at(100), end: at(1900), state: addAcked}},  // first issued after the fault, ends late
		{addRecord: addRecord{start: at(1500), end: at(1600), state: addAcked}}, // issued later, ends first
		{addRecord: addRecord{start: at(3000), end: at(3010), state: addAcked}},
	}
	c.Mark(FaultKillLeader, "n1", t0)
	c.Mark(FaultKillLeader, "n2", at(5000))
	fs := c.Failovers()
	if !fs[0].Recovered || fs[0].Took != 1600*time.Millisecond {
		t.Errorf("first failover = %+v, want 1.6s", fs[0])
	}
	if fs[1].Recovered {
		t.Errorf("second failover recovered with no write after it: %+v", fs[1])
	}
}

func TestSetCompare(t *testing.T) {
	adds := map[string]addRecord{"a": {state: addAcked}, "b": {state: addUnknown}, "c": {state: addFailed},
		"d": {state: addUnknown}, "e": {state: addAcked}}
	present := map[string]string{"a": "a", "b": "b", "c": "c", "e": "x", "z": "z"}
	r := compareSet(adds, present, func(string) string { return "" })
	if len(r.Lost) != 0 || r.UnknownPresent != 1 || len(r.FailedPresent) != 1 || len(r.Phantom) != 2 {
		t.Errorf("compare = %+v", r)
	}
}

// Issue 10 item 7: failover is reported per fault kind, every leader fault
// kind the nemesis marked (the new ones too), with median and p99 against the
// goal (median under 2s, p99 under 5s).
func TestReportFailoverGoalsPerKind(t *testing.T) {
	r := &Report{}
	for i := range 10 {
		r.Failovers = append(r.Failovers,
			Failover{Kind: FaultKillLeader, Node: "n1", Took: time.Duration(500+100*i) * time.Millisecond, Recovered: true},
			Failover{Kind: FaultPauseLeader, Node: "n2", Took: time.Duration(1+i) * time.Second, Recovered: true})
	}
	r.Failovers = append(r.Failovers, Failover{Kind: FaultKind("transfer-to-paused"), Node: "n3", Took: 3 * time.Second, Recovered: true})
	var b strings.Builder
	r.Print(&b)
	out := b.String()
	for _, want := range []string{
		"kill-leader        n=10 median 900ms p90 1.3s p99 1.4s max 1.4s; goal median < 2s, p99 < 5s: met",
		"pause-leader       n=10 median 5s p90 9s p99 10s max 10s; goal median < 2s, p99 < 5s: NOT met",
		"transfer-to-paused n=1 median 3s p90 3s p99 3s max 3s; goal median < 2s, p99 < 5s: NOT met",
		"partition-leader   n=0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// TestReportLockAndBankAnomalies: the lock (S15) and bank (S13) workloads'
// findings fail the run, a run of either that proves nothing does too, and
// a bank skipped before transactions are served does not.
func TestReportLockAndBankAnomalies(t *testing.T) {
	good := &LockResult{Lock: "L", Acked: 3, Final: 3}
	cases := []struct {
		name string
		r    Report
		want string // a substring of the anomalies; "" for none
	}{
		{"good", Report{Locks: []*LockResult{good}, Bank: &BankResult{readsDuring: 2}}, ""},
		{"bank-skipped", Report{Locks: []*LockResult{good}, Bank: &BankResult{Skipped: "POST /v1/txn answers 404"}}, ""},
		{"lost-update", Report{Locks: []*LockResult{{Lock: "L", Acked: 3, Lost: []string{"x"}}}}, "lock L: lost update: x"},
		{"lock-proves-nothing", Report{Locks: []*LockResult{{Lock: "L"}}}, "lock L: no increment was acknowledged"},
		{"lock-unread", Report{LockErrs: []string{"lock L: reading counter"}}, "lock L: reading counter"},
		{"bank-violation", Report{Bank: &BankResult{readsDuring: 1, Violations: []string{"wrong-total: 799"}}}, "bank: wrong-total: 799"},
		{"bank-proves-nothing", Report{Bank: &BankResult{}}, "bank: no whole-bank read completed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			an := strings.Join(tc.r.Anomalies(), "\n")
			var sb strings.Builder
			tc.r.Print(&sb)
			if tc.want == "" && an != "" || !strings.Contains(an, tc.want) {
				t.Fatalf("anomalies %q, want %q", an, tc.want)
			}
			if tc.want != "" && !strings.Contains(sb.String(), tc.want) {
				t.Fatalf("summary lacks %q:\n%s", tc.want, sb.String())
			}
		})
	}
}
