package api

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// session is the decoded X-Cairn-Session token: for each shard the highest
// index the client has observed. Merged by element-wise max, it gives
// read-your-writes and monotonic reads across shards.
type session map[uint64]uint64

const sessionPrefix = "s1."

// maxSessionToken bounds a token we accept. Each shard costs about 30 bytes,
// so this admits sessions over ~15,000 shards; tokens we hand out stay below
// it unless a client touches more shards than that in one session.
const maxSessionToken = 512 << 10

func parseSession(tok string) (session, error) {
	s := session{}
	if tok == "" {
		return s, nil
	}
	if !strings.HasPrefix(tok, sessionPrefix) || len(tok) > maxSessionToken {
		return nil, invalidf("malformed session token")
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok[len(sessionPrefix):])
	if err != nil {
		return nil, invalidf("malformed session token: %v", err)
	}
	if len(raw) == 0 {
		return s, nil
	}
	for _, pair := range strings.Split(string(raw), ",") {
		k, v, ok := strings.Cut(pair, ":")
		if !ok {
			return nil, invalidf("malformed session token entry %q", pair)
		}
		id, err1 := strconv.ParseUint(k, 10, 64)
		idx, err2 := strconv.ParseUint(v, 10, 64)
		if err1 != nil || err2 != nil {
			return nil, invalidf("malformed session token entry %q", pair)
		}
		s.observe(id, idx)
	}
	return s, nil
}

func (s session) observe(shard, index uint64) {
	if index > s[shard] {
		s[shard] = index
	}
}

func (s session) merge(o session) {
	for k, v := range o {
		s.observe(k, v)
	}
}

func (s session) String() string {
	ids := make([]uint64, 0, len(s))
	for id := range s {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d:%d", id, s[id])
	}
	return sessionPrefix + base64.RawURLEncoding.EncodeToString([]byte(b.String()))
}
