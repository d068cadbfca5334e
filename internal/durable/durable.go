// Package durable holds the file-system steps that make a write survive a
// crash, shared by the packages that own files on disk (fsm, shard).
package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SyncDir fsyncs directory dir, which makes a rename or a file creation in
// it durable: without it, a crash can bring back the old name even though
// the file's contents were synced.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFile replaces the file at final with b, so that after a crash it holds
// either its old contents or b: a temp file beside it, fsynced, renamed over
// it, then the directory fsynced.
func WriteFile(final string, b []byte, perm os.FileMode) error {
	tmp := final + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, werr := fh.Write(b)
	serr := fh.Sync()
	cerr := fh.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(final))
}
