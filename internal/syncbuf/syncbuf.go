// Package syncbuf is a bytes.Buffer safe for concurrent writers and
// readers: a logger's or a child process's output that a test reads while
// it is being written.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer behind a mutex. The zero value is empty and
// ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Tail keeps the last Max bytes written (whole lines when the writes are
// lines), for a log that a test prints only if it fails. The zero value
// keeps nothing; set Max.
type Tail struct {
	Max int

	mu      sync.Mutex
	b       []byte
	dropped bool
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.Max {
		// Trim to the last Max bytes, from the start of a line, at most
		// once per Max bytes written.
		cut := len(t.b) - t.Max
		if i := bytes.IndexByte(t.b[cut:], '\n'); i >= 0 {
			cut += i + 1
		}
		t.b = append(t.b[:0], t.b[cut:]...)
		t.dropped = true
	}
	return len(p), nil
}

// String returns what is kept, with a first line saying so when earlier
// output was dropped.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped {
		return "(earlier lines dropped)\n" + string(t.b)
	}
	return string(t.b)
}
