//go:build !linux

package shard

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
