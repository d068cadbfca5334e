package client

import "time"

// Consistency is the read level of docs/api.md, "Reads".
type Consistency string

const (
	// ConsistencyDefault leaves the choice to the server (linearizable).
	ConsistencyDefault      Consistency = ""
	ConsistencyLinearizable Consistency = "linearizable"
	// ConsistencySession reads at least what this client's session token
	// names: read-your-writes and monotonic reads.
	ConsistencySession Consistency = "session"
	// ConsistencyStale reads any replica that heard from its leader within
	// the max staleness.
	ConsistencyStale Consistency = "stale"
)

// ReadOption adjusts a Get.
type ReadOption func(*readConfig)

type readConfig struct {
	consistency  Consistency
	maxStaleness time.Duration
	fence        *fence
}

// Linearizable asks for a linearizable read (the server's default, invariant I2).
func Linearizable() ReadOption {
	return func(r *readConfig) { r.consistency, r.maxStaleness = ConsistencyLinearizable, 0 }
}

// Session asks for a session read: any replica that has applied what the
// client's session token names.
func Session() ReadOption {
	return func(r *readConfig) { r.consistency, r.maxStaleness = ConsistencySession, 0 }
}

// Stale asks for a read from any replica that heard from its leader within
// maxStaleness; 0 means the server's default (5s).
func Stale(maxStaleness time.Duration) ReadOption {
	return func(r *readConfig) { r.consistency, r.maxStaleness = ConsistencyStale, maxStaleness }
}

// FencedRead makes the Get a fenced read under (lock, token): it goes through
// Raft on the key's leader, registers token on the key so that every later
// write with a lower token for lock is refused, and fails with an error
// matching ErrStaleToken when a higher token is already registered
// (docs/api.md, "Locks"). A read-modify-write under a lock is safe with a
// fenced read followed by a fenced write (lock/DESIGN.md).
func FencedRead(lock string, token uint64) ReadOption {
	return func(r *readConfig) { r.fence = &fence{Lock: lock, Token: token} }
}

// PutOption adjusts a Put.
type PutOption interface{ applyPut(*putConfig) }

// DeleteOption adjusts a Delete.
type DeleteOption interface{ applyDelete(*deleteConfig) }

// WriteOption applies to both Put and Delete.
type WriteOption interface {
	PutOption
	DeleteOption
}

type putConfig struct {
	body putBody
	prev bool
}

type deleteConfig struct {
	ifModIndex *uint64
	requestID  string
	fence      *fence
}

type putOptionFunc func(*putConfig)

func (f putOptionFunc) applyPut(p *putConfig) { f(p) }

type writeOption struct {
	put func(*putConfig)
	del func(*deleteConfig)
}

func (w writeOption) applyPut(p *putConfig)       { w.put(p) }
func (w writeOption) applyDelete(d *deleteConfig) { w.del(d) }

// WithTTL makes the key disappear after d.
func WithTTL(d time.Duration) PutOption {
	return putOptionFunc(func(p *putConfig) { p.body.TTL = d.String() })
}

// IfModIndex makes the write conditional on the key's mod_index being n
// (for Put, 0 means the key is absent). A later condition option replaces an
// earlier one.
func IfModIndex(n uint64) WriteOption {
	return writeOption{
		put: func(p *putConfig) { p.body.If = &putIf{ModIndex: &n} },
		del: func(d *deleteConfig) { d.ifModIndex = &n },
	}
}

// IfAbsent makes the Put conditional on the key not existing.
func IfAbsent() PutOption {
	return putOptionFunc(func(p *putConfig) { p.body.If = &putIf{Absent: true} })
}

// IfValue makes the Put conditional on the key existing with value v.
func IfValue(v string) PutOption {
	return putOptionFunc(func(p *putConfig) { p.body.If = &putIf{Value: &v} })
}

// WithFence makes the Put or Delete a fenced write under (lock, token): the
// store rejects it with stale_token once a higher token for lock was accepted
// on the key (invariant I11). (*Lock).Fence gives it for a held lock.
func WithFence(lock string, token uint64) WriteOption {
	f := &fence{Lock: lock, Token: token}
	return writeOption{
		put: func(p *putConfig) { p.body.Fence = f },
		del: func(d *deleteConfig) { d.fence = f },
	}
}

// WithRequestID sets the write's idempotency key instead of a generated one,
// for a caller that retries a write itself (after ErrOutcomeUnknown, say) and
// must reuse the id of the first try.
func WithRequestID(id string) WriteOption {
	return writeOption{
		put: func(p *putConfig) { p.body.RequestID = id },
		del: func(d *deleteConfig) { d.requestID = id },
	}
}

// WithPrev asks for the previous kv in PutResult.Prev.
func WithPrev() PutOption {
	return putOptionFunc(func(p *putConfig) { p.prev = true })
}
