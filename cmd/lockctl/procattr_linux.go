package main

import "syscall"

// commandAttr puts COMMAND in a process group of its own, and has the kernel
// SIGKILL it should lockctl die without stopping it (SIGKILL, OOM): a
// command must not run on with nobody renewing its lock. Its children are
// not covered (the signal goes to COMMAND alone); their writes are what
// fencing tokens are for.
func commandAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
