package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"
)

// Backups are newline-delimited JSON:
//
//	{"cairn_backup":1,"created":"2026-11-22T05:50:00Z","prefix":""}
//	{"key":"a","value":"1"}
//	{"key":"b","value_base64":"//4=","ttl":"30s"}
//	{"end":true,"keys":2,"token_floor":4711}
//
// One line per key in byte order; a value that is not UTF-8 is base64; a key
// that had a TTL keeps it (restored, it runs again from the restore). The
// last line says how many keys came before it, so a backup cut short is
// recognised and refused, and carries the cluster's token floor (TokenFloor,
// taken once every key was read): a restore raises every shard's token base
// to it first, so a lock's fencing tokens in the cluster restored into stay
// above every token the backed-up cluster gave out (I9). A backup has no
// lock records: locks are not restored, only the guarantee on their tokens.
//
// A backup reads the keyspace page by page with linearizable scans: every
// key is backed up with a value it held during the backup, but the backup
// is not one point in time across keys. For a point-in-time copy, take it
// while writes are stopped.

const backupVersion = 1

type backupHeader struct {
	Version int    `json:"cairn_backup"`
	Created string `json:"created"`
	Prefix  string `json:"prefix"`
}

type backupLine struct {
	Key         string  `json:"key,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
	TTL         string  `json:"ttl,omitempty"`
	End         bool    `json:"end,omitempty"`
	Keys        int     `json:"keys,omitempty"`
	TokenFloor  uint64  `json:"token_floor,omitempty"`
}

// BackupOptions selects what Backup copies.
type BackupOptions struct {
	Prefix string // only keys with this prefix; "" is the whole keyspace
}

// Backup writes every key selected by opts, with its value and TTL, to w
// and returns how many it wrote. An error leaves w without the final line,
// which Restore then refuses.
func (c *Client) Backup(ctx context.Context, w io.Writer, opts BackupOptions) (int, error) {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(backupHeader{Version: backupVersion, Created: time.Now().UTC().Format(time.RFC3339), Prefix: opts.Prefix}); err != nil {
		return 0, err
	}
	n := 0
	err := c.ScanAll(ctx, ScanOptions{Prefix: opts.Prefix, Consistency: ConsistencyLinearizable}, func(kv KV) error {
		line := backupLine{Key: kv.Key, TTL: kv.TTL}
		if utf8.ValidString(kv.Value) {
			v := kv.Value
			line.Value = &v
		} else {
			line.ValueBase64 = base64.StdEncoding.EncodeToString([]byte(kv.Value))
		}
		n++
		return enc.Encode(line)
	})
	if err != nil {
		return n, err
	}
	floor, err := c.TokenFloor(ctx)
	if err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	if err := enc.Encode(backupLine{End: true, Keys: n, TokenFloor: floor}); err != nil {
		return n, err
	}
	return n, bw.Flush()
}

// RestoreOptions tunes Restore.
type RestoreOptions struct {
	Concurrency int // puts in flight; default 16
	// TokenFloor, when above the backup's own floor, is the one the
	// cluster's token bases are raised to instead: the old cluster's
	// TokenFloor read at restore time covers the locks it granted after
	// the backup was taken, which the backup's floor cannot (invariant I9).
	TokenFloor uint64
}

// Restore puts every key of a backup made by Backup back, with its value
// and TTL, and returns how many it wrote. It reads the backup twice: first
// to check it whole (a backup that is cut short, malformed or of an unknown
// version is refused with ErrInvalidArgument before anything is written),
// then, after raising the cluster's token floor to the backup's (or to
// opts.TokenFloor, if higher), to write.
// Keys not in the backup are left alone; running Restore again writes the
// same values again.
func (c *Client) Restore(ctx context.Context, r io.ReadSeeker, opts RestoreOptions) (int, error) {
	want, floor, err := readBackupEnd(r)
	if err != nil {
		return 0, err
	}
	floor = max(floor, opts.TokenFloor)
	if floor > 0 {
		if err := c.RaiseTokenFloor(ctx, floor); err != nil {
			return 0, fmt.Errorf("restore: %w", err)
		}
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	workers := opts.Concurrency
	if workers <= 0 {
		workers = 16
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan backupLine)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		written  int
		firstErr error
	)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range lines {
				err := c.restoreLine(ctx, l)
				mu.Lock()
				if err == nil {
					written++
				} else if firstErr == nil {
					firstErr = fmt.Errorf("restore %q: %w", l.Key, err)
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	_, readErr := readBackup(r, func(l backupLine) error {
		select {
		case lines <- l:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(lines)
	wg.Wait()
	if firstErr != nil {
		return written, firstErr
	}
	if readErr != nil {
		return written, readErr
	}
	if written != want {
		return written, fmt.Errorf("restore: wrote %d of %d keys", written, want)
	}
	return written, nil
}

func (c *Client) restoreLine(ctx context.Context, l backupLine) error {
	value := ""
	if l.Value != nil {
		value = *l.Value
	} else {
		v, err := base64.StdEncoding.DecodeString(l.ValueBase64)
		if err != nil {
			return err
		}
		value = string(v)
	}
	var opts []PutOption
	if l.TTL != "" {
		d, err := time.ParseDuration(l.TTL)
		if err != nil {
			return err
		}
		opts = append(opts, WithTTL(d))
	}
	_, err := c.Put(ctx, l.Key, value, opts...)
	return err
}

// readBackupEnd checks a backup whole and returns its number of keys and
// its token floor (0: none recorded).
func readBackupEnd(r io.Reader) (keys int, floor uint64, err error) {
	keys, err = readBackupFloor(r, nil, &floor)
	return keys, floor, err
}

// readBackup checks a backup line by line and calls each (when non-nil) for
// every key; it returns the number of keys the final line states.
func readBackup(r io.Reader, each func(backupLine) error) (int, error) {
	return readBackupFloor(r, each, nil)
}

func readBackupFloor(r io.Reader, each func(backupLine) error, floor *uint64) (int, error) {
	bad := func(line int, format string, args ...any) error {
		return &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("backup line %d: ", line) + fmt.Sprintf(format, args...)}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20) // a line holds one value, up to the server's limit
	line := 0
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return 0, err
		}
		return 0, bad(1, "empty: not a cairn backup")
	}
	line++
	var h backupHeader
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Version == 0 {
		return 0, bad(line, "not a cairn backup header")
	}
	if h.Version != backupVersion {
		return 0, bad(line, "backup format %d, this client reads %d", h.Version, backupVersion)
	}
	keys, ended := 0, false
	for sc.Scan() {
		line++
		if ended {
			return 0, bad(line, "data after the final line")
		}
		var l backupLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return 0, bad(line, "not a backup line: %v", err)
		}
		if l.End {
			if l.Keys != keys {
				return 0, bad(line, "final line says %d keys, the backup holds %d", l.Keys, keys)
			}
			ended = true
			if floor != nil {
				*floor = l.TokenFloor
			}
			continue
		}
		if l.Key == "" {
			return 0, bad(line, "a key line without a key")
		}
		switch {
		case l.Value == nil && l.ValueBase64 == "":
			return 0, bad(line, "key %q has no value", l.Key)
		case l.Value != nil && l.ValueBase64 != "":
			return 0, bad(line, "key %q has both value and value_base64", l.Key)
		}
		if l.ValueBase64 != "" {
			if _, err := base64.StdEncoding.DecodeString(l.ValueBase64); err != nil {
				return 0, bad(line, "key %q: value_base64: %v", l.Key, err)
			}
		}
		if l.TTL != "" {
			if d, err := time.ParseDuration(l.TTL); err != nil || d <= 0 {
				return 0, bad(line, "key %q: bad ttl %q", l.Key, l.TTL)
			}
		}
		keys++
		if each != nil {
			if err := each(l); err != nil {
				return keys, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !ended {
		return 0, bad(line, "the backup ends without its final line: it was cut short")
	}
	return keys, nil
}
