package cluster

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/cairndb/cairn/internal/clock"
)

// A dial that hangs (a dead peer's name under docker's DNS) fails within the
// dial timeout as a dial error, so forward knows nothing was sent and routes
// again; the peer is then skipped until UnreachableFor passes, and a
// successful dial clears it at once (issue 10 item 7).
func TestBoundedDial(t *testing.T) {
	u := newUnreachable(time.Hour, clock.Real())
	hang := func(ctx context.Context, network, addr string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err() // not a *net.OpError, as a custom dialer may answer
	}
	dial := boundedDial(hang, 50*time.Millisecond, u)
	start := time.Now()
	_, err := dial(context.Background(), "tcp", "n3:7070")
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("hanging dial returned after %v, want about the 50ms bound", took)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" || !errors.Is(err, ErrDialTimeout) {
		t.Fatalf("error %v (%T): want a dial *net.OpError wrapping ErrDialTimeout", err, err)
	}
	if !u.down("n3:7070") || u.down("n1:7070") {
		t.Fatalf("down(n3)=%v down(n1)=%v, want only the failed peer skipped", u.down("n3:7070"), u.down("n1:7070"))
	}

	// The caller giving up is not the peer's fault: not marked.
	u2 := newUnreachable(time.Hour, clock.Real())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _ = boundedDial(hang, time.Second, u2)(ctx, "tcp", "n2:7070")
	if u2.down("n2:7070") {
		t.Fatalf("a dial abandoned by its caller marked the peer unreachable")
	}

	// A peer that answers again is dialed again at once.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ok := func(context.Context, string, string) (net.Conn, error) { return a, nil }
	if _, err := boundedDial(ok, time.Second, u)(context.Background(), "tcp", "n3:7070"); err != nil {
		t.Fatal(err)
	}
	if u.down("n3:7070") {
		t.Fatalf("a successful dial did not clear the peer")
	}

	// Marks expire, by Config.Clock.
	fake := clock.NewFake(time.Unix(1000, 0))
	u3 := newUnreachable(10*time.Millisecond, fake)
	u3.mark("n4:7070")
	if !u3.down("n4:7070") {
		t.Fatalf("mark expired before the clock moved")
	}
	fake.Advance(20 * time.Millisecond)
	if u3.down("n4:7070") {
		t.Fatalf("mark did not expire")
	}
}
