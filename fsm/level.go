package fsm

// CommandLevel is the level of the shard command set this binary applies:
// every op, field and event its Apply knows. A coordinator may propose a
// command that needs level L only once the cluster's level
// (placement.State.Level) is at least L, which the placement driver raises
// only when every node that can hold a replica advertises L or more; a node
// whose binary is below the cluster's level refuses to start (a downgrade)
// and is never given a replica (fsm/DESIGN.md, "Command levels").
//
// Level 1 is the command set of the binary that introduced levels: every op
// of types.go and every field of TxnCommand up to Batch, PreparedIndex,
// ResolveHere, EvDecide and EvForget. Level 2 adds TxnCommand.Riders: a
// prepare or record entry that carries other transactions' resolutions and
// forgets (a level-1 replica would skip them and diverge). Level 3 adds
// OpTxnBatch: several prepares in one entry (a level-2 replica would refuse
// the op and diverge). A node that
// advertises no level runs a binary from before, and counts as level 0.
//
// Raise it, with a new row in fsm/DESIGN.md's table, whenever a command, field
// or event is added that a replica of the current level would skip or apply
// differently; gate every proposal that uses it on the cluster's level.
const CommandLevel = 3
