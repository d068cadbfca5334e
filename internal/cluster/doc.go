// Package cluster owns every call one cairn node makes to another over HTTP:
// the forwarding hop of a client's request to the shard leader's node, a
// scan's part read from another node, the calls to the placement (meta)
// leader (range ids, range reports, heartbeats, drains, leader preferences,
// linearizable range reads), and the placement executor's calls to nodes.
// The node's API serves the other end of each; nothing here decides where a
// call goes (api's routing loop and the placement driver do).
//
// One policy for all of them:
//
//   - Dials are bounded by Config.DialTimeout, name resolution included, and
//     a peer whose dial failed is reported Down for Config.UnreachableFor, so
//     routing skips it instead of paying the timeout again (dial.go).
//   - A call whose context has no deadline is bounded by Config.CallTimeout,
//     its answer's body included.
//   - A request is forwarded at most MaxHops times (HeaderHops counts them);
//     the next hop is refused with ErrTooManyHops before anything is sent.
//   - Error answers are read up to MaxErrorBody bytes, JSON answers up to
//     MaxResponseBody.
//   - Failed and outcome unknown are kept apart. ErrPeerUnreachable (the dial
//     failed), ErrRemoteUnavailable (the other node answered 503, which it
//     never does for a write that may have happened), ErrNoRoute and
//     ErrTooManyHops prove nothing was done: Failed reports them, and the
//     caller may route again. A connection that breaks after the request was
//     sent is ErrForwardFailed for a write — it wraps shard.ErrOutcomeUnknown
//     and answers 504 outcome_unknown, never a plain failure — and
//     shard.ErrUnavailable for a read (nothing was written).
//   - Decode is the one place that turns another node's error envelope back
//     into the typed error it came from: the inverse of the API's error table
//     (api/errors.go), which maps each of these errors to its status and code.
//     Every row of that table round-trips (api's TestErrorTableRoundTrip).
//
// A Client is safe for concurrent use; a node has one, owned by its API
// server.
package cluster
