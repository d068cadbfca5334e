package lock

import (
	"fmt"
	"math"
	"time"
)

// Apply applies cmd to rec, the stored record of cmd's lock name (nil when
// there is none), as the raft entry at index of a group whose token base is
// base. now is the proposer's wall clock (unix ns) carried in the entry; it
// is used only for waiter deadlines.
//
// Apply is deterministic (invariant I3): it reads no clock, randomness or
// map, so every replica computes the same next record and result. It never
// modifies rec. next is the record to store: nil means delete it (free, no
// waiters, no lock delay). When res.Err is set, next is rec itself and
// nothing must be written.
//
// Sequence numbers are seq = base+index. Within a group indices increase;
// a split's child starts with base = parent base + split index, so seq
// never goes back for a name wherever its record lives (lock/DESIGN.md "Sequence numbers and tokens").
func Apply(rec *Record, cmd Command, index, base uint64, now int64) (next *Record, res Result) {
	if cmd == nil {
		return rec, Result{Err: invalid("nil command")}
	}
	name := cmd.LockName()
	if err := ValidName(name); err != nil {
		return rec, Result{Err: err}
	}
	if rec != nil && rec.Name != name {
		return rec, Result{Err: invalid("command for lock %q applied to record of %q", name, rec.Name)}
	}
	if index == 0 || base > math.MaxUint64-index {
		return rec, Result{Err: invalid("index %d with base %d is not a valid sequence", index, base)}
	}
	st := &state{r: rec.Clone(), orig: rec, seq: base + index, now: now}
	if st.r == nil {
		st.r = &Record{Name: name}
	}
	switch c := cmd.(type) {
	case Acquire:
		st.acquire(c)
	case *Acquire:
		st.acquire(*c)
	case Renew:
		st.renew(c.Token)
	case *Renew:
		st.renew(c.Token)
	case Release:
		st.release(c.Token)
	case *Release:
		st.release(c.Token)
	case Expire:
		st.expire(c)
	case *Expire:
		st.expire(*c)
	case CancelWait:
		st.cancelWait(c.WaiterID)
	case *CancelWait:
		st.cancelWait(c.WaiterID)
	case ExpireWaiters, *ExpireWaiters:
		st.expireWaiters()
	case EndDelay:
		st.endDelay(c.DelaySeq)
	case *EndDelay:
		st.endDelay(c.DelaySeq)
	default:
		st.res.Err = invalid("unknown lock command %T", cmd)
	}
	if st.res.Err != nil {
		// Whatever the command did before it was refused (a serve that
		// dropped or granted waiters) is discarded, and so is its report.
		return rec, Result{Err: st.res.Err}
	}
	r := st.r
	if len(r.Holders) == 0 && len(r.Waiters) == 0 && r.DelaySeq == 0 {
		return nil, st.res
	}
	if len(r.Holders) == 0 {
		r.Holders = nil
	}
	if len(r.Waiters) == 0 {
		r.Waiters = nil
	}
	return r, st.res
}

// state is one Apply in progress over a private copy of the record.
type state struct {
	r    *Record
	orig *Record // the input, untouched: what a refusal describes
	seq  uint64
	now  int64
	res  Result
}

func validAcquire(c Acquire) *Error {
	switch {
	case len(c.Owner) > MaxOwnerSize:
		return invalid("owner must be at most %d bytes, got %d", MaxOwnerSize, len(c.Owner))
	case c.TTL < MinTTL || c.TTL > MaxTTL:
		return invalid("ttl %v not in [%v, %v]", c.TTL, MinTTL, MaxTTL)
	case c.Wait < 0 || c.Wait > MaxWait:
		return invalid("wait %v not in [0s, %v]", c.Wait, MaxWait)
	case c.Mode != Exclusive && c.Mode != Shared:
		return invalid("unknown mode %d", c.Mode)
	case c.Limit < 1 || c.Limit > MaxLimit:
		return invalid("limit %d not in [1, %d]", c.Limit, MaxLimit)
	case c.LockDelay < 0 || c.LockDelay > MaxLockDelay:
		return invalid("lock_delay %v not in [0s, %v]", c.LockDelay, MaxLockDelay)
	case len(c.WaiterID) > MaxWaiterIDSize:
		return invalid("request id must be at most %d bytes, got %d", MaxWaiterIDSize, len(c.WaiterID))
	case c.Wait > 0 && c.WaiterID == "":
		return invalid("an acquire that may wait needs a request id")
	}
	return nil
}

func (s *state) acquire(c Acquire) {
	if s.res.Err = validAcquire(c); s.res.Err != nil {
		return
	}
	r := s.r
	if c.WaiterID != "" { // a retry of an acquire already applied gets its outcome again
		for _, h := range r.Holders {
			if h.WaiterID == c.WaiterID {
				s.res.Status, s.res.Token, s.res.TTL = StatusGranted, h.Token, h.TTL
				return
			}
		}
		for i, w := range r.Waiters {
			if w.ID == c.WaiterID {
				s.res.Status, s.res.WaiterID, s.res.Position = StatusQueued, w.ID, i
				return
			}
		}
	}
	if len(r.Holders) == 0 && len(r.Waiters) == 0 {
		r.Limit = c.Limit
	} else if r.Limit != c.Limit {
		s.res.Err = invalid("limit %d does not match the lock's limit %d", c.Limit, r.Limit)
		return
	}
	// Waiters whose time ran out leave first; that may let those behind
	// them in, ahead of this newcomer.
	s.serve()
	if len(r.Waiters) == 0 && r.DelaySeq == 0 && s.admits(c.Mode) {
		h := s.grant(c.Owner, c.Mode, c.TTL, c.LockDelay, c.WaiterID)
		s.res.Status, s.res.Token, s.res.TTL = StatusGranted, h.Token, h.TTL
		return
	}
	if c.Wait == 0 {
		s.res.Err = s.held("lock %q is not available", r.Name)
		return
	}
	if len(r.Waiters) >= MaxWaiters {
		s.res.Err = s.held("lock %q already has %d waiters", r.Name, MaxWaiters)
		return
	}
	r.Waiters = append(r.Waiters, Waiter{
		ID: c.WaiterID, Owner: c.Owner, Mode: c.Mode, TTL: c.TTL, LockDelay: c.LockDelay,
		Deadline: addSat(s.now, c.Wait), Seq: s.seq,
	})
	s.res.Status, s.res.WaiterID, s.res.Position = StatusQueued, c.WaiterID, len(r.Waiters)-1
}

func (s *state) held(format string, args ...any) *Error {
	e := &Error{Code: CodeLockHeld, Msg: fmt.Sprintf(format, args...)}
	if s.orig.Held() {
		e.Owner, e.Token = s.orig.Holders[0].Owner, s.orig.Holders[0].Token
	}
	return e
}

// admits reports whether a holder of mode m fits beside the current ones:
// shared with shared (up to MaxHolders), exclusive with exclusive up to
// Limit, never the two together.
func (s *state) admits(m Mode) bool {
	h := s.r.Holders
	switch {
	case len(h) == 0:
		return true
	case len(h) >= MaxHolders || h[0].Mode != m:
		return false
	case m == Shared:
		return true
	}
	return len(h) < s.r.Limit
}

// grant adds a holder with the next token: max(last+1, seq). Several grants
// in one entry (shared waiters served together) take seq, seq+1, ...;
// lock/DESIGN.md shows why the next entry's seq still cannot fall behind.
func (s *state) grant(owner string, m Mode, ttl, delay time.Duration, waiterID string) Holder {
	r := s.r
	token := max(r.LastToken+1, s.seq)
	r.LastToken = token
	h := Holder{Token: token, Owner: owner, Mode: m, TTL: ttl, LockDelay: delay, WaiterID: waiterID,
		GrantSeq: s.seq, RenewSeq: s.seq}
	r.Holders = append(r.Holders, h)
	r.ChangeSeq = s.seq
	s.res.Granted = append(s.res.Granted, h)
	return h
}

// serve grants waiters from the head of the queue while they fit. A head
// that does not fit blocks those behind it (strict FIFO: no barging, so an
// exclusive waiter is not starved by a stream of shared ones).
func (s *state) serve() {
	s.dropExpiredWaiters()
	r := s.r
	for len(r.Waiters) > 0 && r.DelaySeq == 0 && s.admits(r.Waiters[0].Mode) {
		w := r.Waiters[0]
		r.Waiters = r.Waiters[1:]
		s.grant(w.Owner, w.Mode, w.TTL, w.LockDelay, w.ID)
	}
}

// dropExpiredWaiters removes waiters whose deadline (proposer time) is at or
// before the entry's time, so a grant never goes to a request that is over.
func (s *state) dropExpiredWaiters() {
	r := s.r
	kept := r.Waiters[:0:0]
	for _, w := range r.Waiters {
		if w.Deadline <= s.now {
			s.res.Removed = append(s.res.Removed, w.ID)
			continue
		}
		kept = append(kept, w)
	}
	r.Waiters = kept
}

func (s *state) removeHolder(token uint64) (Holder, bool) {
	r := s.r
	for i, h := range r.Holders {
		if h.Token == token {
			r.Holders = append(r.Holders[:i:i], r.Holders[i+1:]...)
			r.ChangeSeq = s.seq
			return h, true
		}
	}
	return Holder{}, false
}

func (s *state) renew(token uint64) {
	if token == 0 {
		s.res.Err = invalid("token 0 is never granted")
		return
	}
	h := s.r.Holder(token)
	if h == nil {
		s.res.Err = &Error{Code: CodeLockLost, Msg: fmt.Sprintf("token %d does not hold lock %q", token, s.r.Name)}
		return
	}
	h.RenewSeq = s.seq
	s.res.Status, s.res.Token, s.res.TTL = StatusRenewed, token, h.TTL
}

func (s *state) release(token uint64) {
	if token == 0 {
		s.res.Err = invalid("token 0 is never granted")
		return
	}
	if _, ok := s.removeHolder(token); !ok {
		s.res.Err = &Error{Code: CodeLockLost, Msg: fmt.Sprintf("token %d does not hold lock %q", token, s.r.Name)}
		return
	}
	s.res.Status, s.res.Token = StatusReleased, token
	s.serve()
}

// expire takes effect only if the holder is still there and was not renewed
// since the countdown the leader ran out started (invariant I10).
func (s *state) expire(c Expire) {
	h := s.r.Holder(c.Token)
	if h == nil || h.RenewSeq != c.RenewSeq {
		return
	}
	old, _ := s.removeHolder(c.Token)
	if old.LockDelay > 0 {
		s.r.Delay = max(s.r.Delay, old.LockDelay)
		s.r.DelaySeq = s.seq
	}
	s.res.Status, s.res.Token = StatusExpired, c.Token
	s.serve()
}

func (s *state) cancelWait(id string) {
	if id == "" || len(id) > MaxWaiterIDSize {
		s.res.Err = invalid("request id must be 1..%d bytes", MaxWaiterIDSize)
		return
	}
	r := s.r
	for i, w := range r.Waiters {
		if w.ID == id {
			r.Waiters = append(r.Waiters[:i:i], r.Waiters[i+1:]...)
			s.res.Status = StatusCancelled
			s.res.Removed = append(s.res.Removed, id)
			s.serve() // the head leaving may let those behind it in
			return
		}
	}
	for _, h := range r.Holders {
		if h.WaiterID == id { // granted while its request was ending: nobody has the token
			s.removeHolder(h.Token)
			s.res.Status, s.res.Token = StatusReleased, h.Token
			s.serve()
			return
		}
	}
}

func (s *state) expireWaiters() {
	s.serve()
	if len(s.res.Removed) > 0 {
		s.res.Status = StatusCancelled
	}
}

func (s *state) endDelay(seq uint64) {
	if s.r.DelaySeq == 0 || s.r.DelaySeq != seq {
		return
	}
	s.r.DelaySeq, s.r.Delay = 0, 0
	s.res.Status = StatusDelayEnd
	s.serve()
}

func addSat(t int64, d time.Duration) int64 {
	if d > 0 && t > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	return t + int64(d)
}
