// Package durable holds the file-system steps that make a write survive a
// crash, shared by the packages that own files on disk (fsm, shard).
package durable

import "os"

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
