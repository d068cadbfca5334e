package api

import (
	"bytes"
	"net/url"
	"testing"

	"github.com/cairndb/cairn/fsm"
)

func TestParseScan(t *testing.T) {
	tests := []struct {
		name       string
		query      string
		code       string
		start, end string
		limit      int
		keysOnly   bool
		read       string // consistency
	}{
		{name: "everything", query: "", start: "", end: "", limit: defaultScanLimit, read: "linearizable"},
		{name: "prefix", query: "prefix=jobs/", start: "jobs/", end: "jobs0", limit: defaultScanLimit, read: "linearizable"},
		{name: "prefix ending in 0xff", query: "prefix=a%FF", start: "a\xff", end: "b", limit: defaultScanLimit, read: "linearizable"},
		{name: "prefix all 0xff", query: "prefix=%FF%FF", start: "\xff\xff", end: "", limit: defaultScanLimit, read: "linearizable"},
		{name: "empty prefix is no prefix", query: "prefix=&start=a&end=b", start: "a", end: "b", limit: defaultScanLimit, read: "linearizable"},
		{name: "start and end", query: "start=a&end=b", start: "a", end: "b", limit: defaultScanLimit, read: "linearizable"},
		{name: "start only", query: "start=m", start: "m", end: "", limit: defaultScanLimit, read: "linearizable"},
		{name: "end only", query: "end=m", start: "", end: "m", limit: defaultScanLimit, read: "linearizable"},
		{name: "end just after start", query: "start=a&end=a%00", start: "a", end: "a\x00", limit: defaultScanLimit, read: "linearizable"},
		{name: "prefix with start", query: "prefix=p&start=a", code: "invalid_argument"},
		// A prefix scan continues from its next, which lies inside the prefix.
		{name: "prefix continued from next", query: "prefix=p/&start=p/k%00", start: "p/k\x00", end: "p0", limit: defaultScanLimit, read: "linearizable"},
		{name: "prefix continued from the prefix", query: "prefix=p/&start=p/", start: "p/", end: "p0", limit: defaultScanLimit, read: "linearizable"},
		{name: "prefix all 0xff continued", query: "prefix=%FF&start=%FF%FF", start: "\xff\xff", end: "", limit: defaultScanLimit, read: "linearizable"},
		{name: "prefix with start after it", query: "prefix=p/&start=q", code: "invalid_argument"},
		{name: "prefix with start just before it", query: "prefix=p/&start=p", code: "invalid_argument"},
		{name: "prefix with end", query: "prefix=p&end=z", code: "invalid_argument"},
		{name: "start equals end", query: "start=a&end=a", code: "invalid_argument"},
		{name: "start after end", query: "start=b&end=a", code: "invalid_argument"},
		{name: "byte order, not length", query: "start=b&end=ab", code: "invalid_argument"},

		{name: "limit", query: "limit=10", limit: 10, read: "linearizable"},
		{name: "limit 1", query: "limit=1", limit: 1, read: "linearizable"},
		{name: "limit at the cap", query: "limit=10000", limit: maxScanLimit, read: "linearizable"},
		{name: "limit over the cap", query: "limit=10001", limit: maxScanLimit, read: "linearizable"},
		{name: "limit far over the cap", query: "limit=9000000000", limit: maxScanLimit, read: "linearizable"},
		{name: "limit empty is the default", query: "limit=", limit: defaultScanLimit, read: "linearizable"},
		{name: "limit 0", query: "limit=0", code: "invalid_argument"},
		{name: "limit negative", query: "limit=-1", code: "invalid_argument"},
		{name: "limit not a number", query: "limit=ten", code: "invalid_argument"},
		{name: "limit fraction", query: "limit=1.5", code: "invalid_argument"},

		{name: "keys_only 1", query: "keys_only=1", limit: defaultScanLimit, keysOnly: true, read: "linearizable"},
		{name: "keys_only true", query: "keys_only=true", limit: defaultScanLimit, keysOnly: true, read: "linearizable"},
		{name: "keys_only 0", query: "keys_only=0", limit: defaultScanLimit, read: "linearizable"},
		{name: "keys_only other", query: "keys_only=yes", limit: defaultScanLimit, read: "linearizable"},

		{name: "consistency", query: "prefix=a&consistency=stale", start: "a", end: "b", limit: defaultScanLimit, read: "stale"},
		{name: "bad consistency", query: "prefix=a&consistency=eventual", code: "invalid_argument"},
		{name: "bad max_staleness", query: "consistency=stale&max_staleness=x", code: "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			req, err := parseScan(q)
			wantCode(t, err, tt.code)
			if err != nil {
				return
			}
			if string(req.start) != tt.start || string(req.end) != tt.end {
				t.Errorf("range [%q, %q); want [%q, %q)", req.start, req.end, tt.start, tt.end)
			}
			if req.limit != tt.limit || req.keysOnly != tt.keysOnly || req.read.consistency != tt.read {
				t.Errorf("limit %d keys_only %v consistency %s; want %d %v %s",
					req.limit, req.keysOnly, req.read.consistency, tt.limit, tt.keysOnly, tt.read)
			}
		})
	}
}

func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		prefix string
		want   string // "" = to the end of the keyspace
	}{
		{"", ""},
		{"a", "b"},
		{"ab", "ac"},
		{"jobs/", "jobs0"},
		{"a\x00", "a\x01"},
		{"a\xfe", "a\xff"},
		{"a\xff", "b"},
		{"a\xff\xff", "b"},
		{"az\xff", "a{"},
		{"\xfe\xff", "\xff"},
		{"\xff", ""},
		{"\xff\xff\xff", ""},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			p := []byte(tt.prefix)
			got := prefixEnd(p)
			if string(got) != tt.want {
				t.Errorf("prefixEnd(%q) = %q; want %q", tt.prefix, got, tt.want)
			}
			if string(p) != tt.prefix {
				t.Errorf("prefixEnd changed its argument to %q", p)
			}
		})
	}
}

func TestOverlaps(t *testing.T) {
	rng := func(start, end string) fsm.Range { return fsm.Range{ID: 1, Start: []byte(start), End: []byte(end)} }
	tests := []struct {
		name       string
		rng        fsm.Range
		start, end string
		want       bool
	}{
		{"inside", rng("b", "d"), "b", "c", true},
		{"covers", rng("b", "d"), "a", "z", true},
		{"straddles start", rng("b", "d"), "a", "c", true},
		{"straddles end", rng("b", "d"), "c", "z", true},
		{"scan ends at range start", rng("b", "d"), "a", "b", false},
		{"scan starts at range end", rng("b", "d"), "d", "z", false},
		{"scan before", rng("b", "d"), "", "a", false},
		{"scan after", rng("b", "d"), "e", "", false},
		{"open scan end", rng("b", "d"), "c", "", true},
		{"open scan end from range end", rng("b", "d"), "d", "", false},
		{"open range end", rng("m", ""), "z", "", true},
		{"open range end, scan before", rng("m", ""), "a", "m", false},
		{"open range end, scan across", rng("m", ""), "a", "n", true},
		{"first range", rng("", "m"), "", "a", true},
		{"first range, scan from its end", rng("", "m"), "m", "", false},
		{"whole keyspace", rng("", ""), "", "", true},
		{"whole keyspace, bounded scan", rng("", ""), "x", "y", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := overlaps(tt.rng, []byte(tt.start), []byte(tt.end)); got != tt.want {
				t.Errorf("overlaps([%q,%q), [%q,%q)) = %v; want %v",
					tt.rng.Start, tt.rng.End, tt.start, tt.end, got, tt.want)
			}
		})
	}
}

func TestMaxKey(t *testing.T) {
	tests := []struct{ a, b, want string }{
		{"", "", ""},
		{"", "a", "a"},
		{"a", "", "a"},
		{"a", "b", "b"},
		{"b", "a", "b"},
		{"a", "a\x00", "a\x00"},
		{"b", "ab", "b"},
	}
	for _, tt := range tests {
		if got := maxKey([]byte(tt.a), []byte(tt.b)); string(got) != tt.want {
			t.Errorf("maxKey(%q, %q) = %q; want %q", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestMinEnd(t *testing.T) {
	tests := []struct{ a, b, want string }{
		{"", "", ""}, // both infinite
		{"", "m", "m"},
		{"m", "", "m"},
		{"a", "b", "a"},
		{"b", "a", "a"},
		{"a", "a", "a"},
		{"a\x00", "a", "a"},
		{"\xff", "\xfe\xff", "\xfe\xff"},
	}
	for _, tt := range tests {
		if got := minEnd([]byte(tt.a), []byte(tt.b)); string(got) != tt.want {
			t.Errorf("minEnd(%q, %q) = %q; want %q", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestScanPartsTileTheRange checks the clipping scan does per shard: over a
// range map that tiles the keyspace, the parts of every overlapping range,
// [maxKey(start, rng.Start), minEnd(end, rng.End)), are non-empty, in order,
// and together are exactly [start, end).
func TestScanPartsTileTheRange(t *testing.T) {
	ranges := []fsm.Range{
		{ID: 1, Start: nil, End: []byte("c")},
		{ID: 2, Start: []byte("c"), End: []byte("f")},
		{ID: 3, Start: []byte("f"), End: []byte("f\x00")},
		{ID: 4, Start: []byte("f\x00"), End: []byte("p")},
		{ID: 5, Start: []byte("p"), End: nil},
	}
	keys := []string{"", "a", "c", "c\x00", "d", "f", "f\x00", "g", "p", "q", "\xff"}
	for _, start := range keys {
		for _, end := range keys {
			if end != "" && start >= end {
				continue
			}
			var parts [][2][]byte
			for _, r := range ranges {
				if !overlaps(r, []byte(start), []byte(end)) {
					continue
				}
				parts = append(parts, [2][]byte{maxKey([]byte(start), r.Start), minEnd([]byte(end), r.End)})
			}
			if len(parts) == 0 {
				t.Errorf("[%q, %q): no range overlaps", start, end)
				continue
			}
			if !bytes.Equal(parts[0][0], []byte(start)) || !bytes.Equal(parts[len(parts)-1][1], []byte(end)) {
				t.Errorf("[%q, %q): parts %q do not start and end with the scan", start, end, parts)
			}
			for i, p := range parts {
				if len(p[1]) > 0 && bytes.Compare(p[0], p[1]) >= 0 {
					t.Errorf("[%q, %q): part %d [%q, %q) is empty", start, end, i, p[0], p[1])
				}
				if i > 0 && !bytes.Equal(parts[i-1][1], p[0]) {
					t.Errorf("[%q, %q): gap or overlap between parts %q", start, end, parts)
				}
			}
		}
	}
}

func overlaps(rng fsm.Range, start, end []byte) bool {
	if len(rng.End) > 0 && bytes.Compare(rng.End, start) <= 0 {
		return false
	}
	return len(end) == 0 || bytes.Compare(rng.Start, end) < 0
}

func maxKey(a, b []byte) []byte {
	if bytes.Compare(a, b) >= 0 {
		return a
	}
	return b
}
