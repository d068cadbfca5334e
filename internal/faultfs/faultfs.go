//go:build linux

// Package faultfs injects disk faults under code that opens its files with
// os.OpenFile-like hooks (bbolt.Options.OpenFile, shard.BoltKnobs): tests
// only. Armed, every file opened through it is backed by /dev/full, so every
// write fails with ENOSPC and every fdatasync fails, as on a full or failing
// disk; memory maps made earlier keep reading the real file.
package faultfs

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// Files are the files opened through OpenFile.
type Files struct {
	mu    sync.Mutex
	files []*os.File
	armed map[*os.File]int // the real descriptors while armed
}

// OpenFile opens a file for real and keeps it for Arm.
func (f *Files) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	file, err := os.OpenFile(name, flag, perm)
	if err == nil {
		f.mu.Lock()
		f.files = append(f.files, file)
		f.mu.Unlock()
	}
	return file, err
}

// Arm puts /dev/full under every file opened so far and not closed.
func (f *Files) Arm() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.armed != nil {
		return fmt.Errorf("faultfs: armed twice")
	}
	full, err := os.OpenFile("/dev/full", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer full.Close()
	f.armed = map[*os.File]int{}
	for _, file := range f.files {
		var saved int
		err := control(file, func(fd int) error {
			var err error
			if saved, err = syscall.Dup(fd); err != nil {
				return err
			}
			return syscall.Dup3(int(full.Fd()), fd, syscall.O_CLOEXEC)
		})
		if errors.Is(err, os.ErrClosed) {
			continue
		}
		if err != nil {
			return err
		}
		f.armed[file] = saved
	}
	return nil
}

// Disarm puts the real files back: the disk "works" again. A file closed
// meanwhile stays closed.
func (f *Files) Disarm() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for file, saved := range f.armed {
		err := control(file, func(fd int) error { return syscall.Dup3(saved, fd, syscall.O_CLOEXEC) })
		if err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
		_ = syscall.Close(saved)
	}
	f.armed = nil
	return errors.Join(errs...)
}

// control runs fn on file's descriptor, which stays open meanwhile (a
// concurrent Close waits); os.ErrClosed when the file is closed.
func control(file *os.File, fn func(fd int) error) error {
	rc, err := file.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return fmt.Errorf("%w (%v)", os.ErrClosed, err) // the only error Control reports
	}
	return ferr
}
