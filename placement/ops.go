package placement

import (
	"fmt"
	"time"
)

// This file defines the scheduler's contract: a pure function from a
// ClusterView to a list of Operations (decide), carried out one step at a
// time per range by the controller (execute), as TiKV's PD does.

// NodeView is one node as the scheduler sees it.
type NodeView struct {
	ID       string
	Alive    bool          // gossip says alive (hint only, invariant I12)
	DownFor  time.Duration // how long gossip has reported it dead; 0 when alive
	Draining bool          // operator asked to move everything off it
	Removed  bool          // operator removed it for good
	// Unresponsive: gossip suspects it, or it has not reported to the
	// placement driver recently (DriverConfig.ReportTimeout). A node that has
	// just died looks like this for seconds before gossip declares it dead.
	Unresponsive bool
}

// RangeView is one range as the scheduler sees it.
type RangeView struct {
	ID         uint64
	Start, End []byte
	Epoch      uint64
	Replicas   []string // voters, node ids
	Leader     string   // "" when unknown
	SizeBytes  int64
	WriteBytes float64 // bytes written per second, recent average
	// PreferredLeader is the node an operator asked to lead the range
	// (cairn cluster transfer-leader); "" when none.
	PreferredLeader string
	// Busy is set when an operation is already in progress for the range; the
	// scheduler must not propose another for it.
	Busy bool
}

// ClusterView is the scheduler's whole input.
type ClusterView struct {
	Nodes  []NodeView
	Ranges []RangeView
}

// OpKind is the kind of a placement operation.
type OpKind string

const (
	// OpSplitRange splits a range at SplitKey ("" = the range's middle key,
	// found by the shard leader).
	OpSplitRange OpKind = "split"
	// OpMoveReplica adds a replica on To (as a non-voter, caught up by
	// snapshot, then promoted) and then removes the one on From. The range
	// never drops below its replication factor.
	OpMoveReplica OpKind = "move_replica"
	// OpAddReplica adds a replica on To (repair when a replica is lost and
	// there is no live From to move from).
	OpAddReplica OpKind = "add_replica"
	// OpRemoveReplica removes the replica on From (after a repair added one).
	OpRemoveReplica OpKind = "remove_replica"
	// OpTransferLeader moves the range's leadership to To.
	OpTransferLeader OpKind = "transfer_leader"
)

// Operation is one scheduler decision. It is persisted in the meta log and
// snapshots (op_start, State.Ops): the JSON keys are explicit and are the Go
// names cf3dc0d wrote without tags; never change one (fsm/DESIGN.md
// "Persisted formats").
type Operation struct {
	Kind     OpKind `json:"Kind"`
	RangeID  uint64 `json:"RangeID"`
	Epoch    uint64 `json:"Epoch"` // the range epoch the decision was made at; stale ops are dropped
	From     string `json:"From"`  // node ids, as the kind needs
	To       string `json:"To"`
	SplitKey []byte `json:"SplitKey"`
	Reason   string `json:"Reason"` // for operators and logs: "size 70MiB > 64MiB", "node n4 dead for 31s", ...
}

func (o Operation) String() string {
	return fmt.Sprintf("%s range %d@%d from=%q to=%q (%s)", o.Kind, o.RangeID, o.Epoch, o.From, o.To, o.Reason)
}

// SchedulerConfig are the thresholds the scheduler decides with.
type SchedulerConfig struct {
	Replication    int           // replicas per range, default 3
	SplitSize      int64         // split a range larger than this, default 64 MiB
	SplitWriteRate float64       // split a range writing more bytes/s than this, default 8 MiB/s
	DeadAfter      time.Duration // replace replicas on a node dead this long, default 30s
	// MaxOps bounds the operations one Schedule call returns, so a big
	// imbalance is corrected gradually. Default 16.
	MaxOps int
}

// DefaultSchedulerConfig returns the production thresholds.
func DefaultSchedulerConfig() SchedulerConfig {
	return SchedulerConfig{Replication: 3, SplitSize: 64 << 20, SplitWriteRate: 8 << 20, DeadAfter: 30 * time.Second, MaxOps: 16}
}
