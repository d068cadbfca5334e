package bench

import (
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func TestKeyFormat(t *testing.T) {
	cases := []struct {
		i, n int
		want string
	}{
		{0, 100000, "bench/00000000"},
		{99999, 100000, "bench/00099999"},
		{7, 1, "bench/00000007"},
		{123456789, 1000000000, "bench/123456789"},
		{5, 1000000000, "bench/000000005"},
	}
	for _, c := range cases {
		if got := Key("bench/", c.i, c.n); got != c.want {
			t.Errorf("Key(%d, %d) = %q, want %q", c.i, c.n, got, c.want)
		}
	}
	// Byte order is numeric order, so split keys cut the keyspace evenly.
	var keys []string
	for i := range 2000 {
		keys = append(keys, Key("k", i, 2000))
	}
	if !sort.StringsAreSorted(keys) {
		t.Error("keys are not in byte order")
	}
}

func TestSplitKeys(t *testing.T) {
	if got := SplitKeys("bench/", 100000, 1); len(got) != 0 {
		t.Errorf("1 shard: %v, want no split", got)
	}
	got := SplitKeys("bench/", 100000, 4)
	want := []string{"bench/00025000", "bench/00050000", "bench/00075000"}
	if !slices.Equal(got, want) {
		t.Errorf("4 shards: %v, want %v", got, want)
	}
	if got := SplitKeys("b/", 100000, 16); len(got) != 15 || !sort.StringsAreSorted(got) {
		t.Errorf("16 shards: %v", got)
	}
}

func TestPermutationIsBijection(t *testing.T) {
	for _, n := range []int{1, 2, 3, 10, 64, 97, 100, 1000, 4096, 100000} {
		p := newPermutation(n)
		seen := make([]bool, n)
		for i := range n {
			j := p.apply(i)
			if j < 0 || j >= n || seen[j] {
				t.Fatalf("n=%d: apply(%d)=%d out of range or repeated", n, i, j)
			}
			seen[j] = true
		}
	}
	// Neighbouring ranks (the hottest keys) land far apart.
	p := newPermutation(100000)
	if d := p.apply(1) - p.apply(0); d > -1000 && d < 1000 {
		t.Errorf("ranks 0 and 1 map to neighbours %d and %d", p.apply(0), p.apply(1))
	}
}

// counts draws draws keys from a picker and returns the hit count per key,
// highest first.
func counts(p keyPicker, n, draws int) []int {
	c := make([]int, n)
	for range draws {
		c[p.next()]++
	}
	slices.SortFunc(c, func(a, b int) int { return b - a })
	return c
}

func TestUniformIsFlat(t *testing.T) {
	const n, draws = 100, 200000
	c := counts(newKeyPicker(KeyDistUniform, 0, n, rand.New(rand.NewPCG(1, 2))), n, draws)
	// Expected 2000 per key, standard deviation ~44: every key within 5 sigma.
	if c[0] > 2225 || c[n-1] < 1775 {
		t.Errorf("uniform counts range %d..%d, want within 1775..2225", c[n-1], c[0])
	}
	// Chi-square with 99 degrees of freedom: mean 99, far below 160.
	chi := 0.0
	for _, x := range c {
		d := float64(x) - float64(draws)/n
		chi += d * d / (float64(draws) / n)
	}
	if chi > 160 {
		t.Errorf("chi-square %.1f, want below 160 for a flat distribution", chi)
	}
}

func TestZipfIsSkewed(t *testing.T) {
	const n, draws = 10000, 200000
	c := counts(newKeyPicker(KeyDistZipf, 1.1, n, rand.New(rand.NewPCG(3, 4))), n, draws)
	top1pct := 0
	for _, x := range c[:n/100] {
		top1pct += x
	}
	// With s=1.1 over 10000 keys the hottest key takes about 15% of the
	// draws and the hottest 1% of keys well over half; uniform would give
	// 0.01% and 1%.
	t.Logf("s=1.1: hottest key %.3f, top 1%% %.3f", float64(c[0])/draws, float64(top1pct)/draws)
	if share := float64(c[0]) / draws; share < 0.1 {
		t.Errorf("hottest key share %.3f, want above 0.1", share)
	}
	if share := float64(top1pct) / draws; share < 0.55 {
		t.Errorf("top 1%% of keys share %.3f, want above 0.55", share)
	}
	// A steeper exponent is more skewed.
	c2 := counts(newKeyPicker(KeyDistZipf, 2, n, rand.New(rand.NewPCG(3, 4))), n, draws)
	if c2[0] <= c[0] {
		t.Errorf("s=2 hottest key %d, not above s=1.1's %d", c2[0], c[0])
	}
}

func TestZipfHotKeysSpread(t *testing.T) {
	// The 16 hottest keys fall in more than a quarter of 16 equal ranges
	// (shards), not all in the first.
	const n = 100000
	p := newPermutation(n)
	ranges := map[int]bool{}
	for rank := range 16 {
		ranges[p.apply(rank)*16/n] = true
	}
	if len(ranges) < 4 {
		t.Errorf("the 16 hottest keys fall in %d of 16 ranges", len(ranges))
	}
}

func TestValueSource(t *testing.T) {
	v := newValueSource(rand.New(rand.NewPCG(5, 6)), 256)
	for range 100 {
		s := v.next()
		if len(s) != 256 {
			t.Fatalf("value of %d bytes, want 256", len(s))
		}
		for _, r := range s {
			if r > 127 {
				t.Fatalf("non-ASCII value %q", s)
			}
		}
	}
	if got := newValueSource(rand.New(rand.NewPCG(5, 6)), 0).next(); got != "" {
		t.Errorf("size 0 gave %q", got)
	}
}
