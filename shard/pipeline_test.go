package shard

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// hashicorp/raft v1.7.3's pipelined replication can deadlock: when a
// follower answers an AppendEntries with Success=false, pipelineDecode
// returns, and pipelineReplicate may still pick its trigger channel and
// send once more; with the default MaxRPCsInFlight (2) the pipeline's
// channels are unbuffered, so that send parks on inprogressCh while
// decodeResponses parks on doneCh, forever. The leader never replicates to
// that follower again (its heartbeats go on, so no election heals it) and
// Raft.Shutdown waits for the stuck goroutine: Node.Close never returns.
// The in-process nemesis's kill-all hung in Node.Close this way (test/
// TestS24RaftSafetyUnderRandomFaults and TestLinearizableUnderFaults,
// goroutines parked in netPipeline.AppendEntries and decodeResponses).
// So group transports refuse pipelines (MaxRPCsInFlight 1) and raft
// replicates with one AppendEntries at a time per follower.
func TestGroupTransportRefusesPipelining(t *testing.T) {
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	ta, err := a.Transport(1, 2, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	tb, err := b.Transport(1, 2, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	p, err := ta.AppendEntriesPipeline("b", raft.ServerAddress(b.Addr()))
	if p != nil {
		_ = p.Close()
	}
	if !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v, want ErrPipelineReplicationNotSupported: "+
			"raft v1.7.3's pipeline can deadlock replication and Shutdown", err)
	}
}
