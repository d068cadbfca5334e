package bench

import (
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
)

// keyPicker picks key indexes in [0, n). One picker belongs to one client:
// it holds that client's random source and is not safe for concurrent use.
type keyPicker interface {
	next() int
}

type uniformPicker struct {
	r *rand.Rand
	n int
}

func (u *uniformPicker) next() int { return u.r.IntN(u.n) }

// zipfPicker draws a popularity rank from a Zipf distribution (rank 0 the
// hottest) and maps it to a key index through a fixed permutation, so that the
// hot keys are spread over the keyspace, and so over shards, instead of all
// sitting at its start.
type zipfPicker struct {
	z *rand.Zipf
	p permutation
}

func (z *zipfPicker) next() int { return z.p.apply(int(z.z.Uint64())) }

func newKeyPicker(dist KeyDist, s float64, n int, r *rand.Rand) keyPicker {
	if dist == KeyDistZipf && n > 1 {
		return &zipfPicker{z: rand.NewZipf(r, s, 1, uint64(n-1)), p: newPermutation(n)}
	}
	return &uniformPicker{r: r, n: n}
}

// permutation is the bijection i -> (i*mult + off) mod n on [0, n), with mult
// coprime to n. It depends on n alone, so every client (and every run) maps
// ranks to the same keys.
type permutation struct {
	n, mult, off uint64
}

func newPermutation(n int) permutation {
	p := permutation{n: uint64(n), off: uint64(n) / 3}
	// Near n times the golden ratio's fraction, so neighbouring ranks land far
	// apart; moved up until coprime with n, which makes the map a bijection.
	m := uint64(float64(n)*0.6180339887) | 1
	for gcd(m, p.n) != 1 {
		m++
	}
	p.mult = m % p.n
	return p
}

func (p permutation) apply(i int) int {
	hi, lo := bits.Mul64(uint64(i), p.mult)
	return int((bits.Rem64(hi, lo, p.n) + p.off) % p.n)
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// keyWidth is the number of digits of a key's index: at least 8, enough for
// n-1.
func keyWidth(n int) int {
	return max(8, len(strconv.Itoa(max(n-1, 0))))
}

// Key returns key i of a keyspace of n keys: prefix and i zero-padded, so
// that byte order is numeric order (and split keys cut the keyspace evenly).
func Key(prefix string, i, n int) string {
	d := strconv.Itoa(i)
	var b strings.Builder
	w := keyWidth(n)
	b.Grow(len(prefix) + w)
	b.WriteString(prefix)
	for range w - len(d) {
		b.WriteByte('0')
	}
	b.WriteString(d)
	return b.String()
}

// SplitKeys returns the shards-1 keys that cut a keyspace of n keys into
// shards ranges of (nearly) equal size, for a server's --initial-splits.
func SplitKeys(prefix string, n, shards int) []string {
	var out []string
	for j := 1; j < shards; j++ {
		out = append(out, Key(prefix, j*n/shards, n))
	}
	return out
}

// valueSource hands out values of one size, cheaply: slices of a random
// printable buffer at random offsets. Values are ASCII, so valid UTF-8 and
// the same bytes whether sent as JSON strings or base64.
type valueSource struct {
	r    *rand.Rand
	buf  string
	size int
}

const valueAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func newValueSource(r *rand.Rand, size int) *valueSource {
	b := make([]byte, 2*size+64)
	for i := range b {
		b[i] = valueAlphabet[r.IntN(len(valueAlphabet))]
	}
	return &valueSource{r: r, buf: string(b), size: size}
}

func (v *valueSource) next() string {
	off := v.r.IntN(len(v.buf) - v.size + 1)
	return v.buf[off : off+v.size]
}
