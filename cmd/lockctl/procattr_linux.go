package main

import "syscall"

// commandAttr puts COMMAND in a process group of its own, and has the kernel
// SIGKILL it should lockctl die without stopping it (SIGKILL, OOM): a
// command must not run on with nobody renewing its lock. Its children are
// not covered (the signal goes to COMMAND alone); their writes are what
// fencing tokens are for. The kernel ties Pdeathsig to the thread that
// forked, not the process; Go ends a thread only when a goroutine locked to
// it (LockOSThread) exits, which nothing in lockctl does.
func commandAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
