package cluster

import (
	"context"
	"net/http"
)

// PathLockCancelWait is the internal route that ends a waiting acquire on
// the shard leader: the node that held the waiting request proposes
// lock.CancelWait there when the request ended (its wait ran out, the
// client went away) and leadership had moved off it meanwhile.
const PathLockCancelWait = "/internal/v1/locks/cancel-wait"

// CancelWaitRequest names the waiter to remove.
type CancelWaitRequest struct {
	Name     string `json:"name"`
	WaiterID string `json:"waiter_id"`
}

// CancelWaitResult says what the cancel did: "cancelled" (the waiter left
// the queue), "released" (it had been granted, and the grant its requester
// never learned is released) or "none" (it was gone already).
type CancelWaitResult struct {
	Outcome string `json:"outcome"`
}

// CancelLockWait asks the node at addr to cancel a waiting acquire; that
// node routes it to the lock's shard leader. Errors as Call.
func (c *Client) CancelLockWait(ctx context.Context, addr string, req CancelWaitRequest) (CancelWaitResult, error) {
	var out CancelWaitResult
	err := c.Call(ctx, addr, http.MethodPost, PathLockCancelWait, req, &out)
	return out, err
}
