package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/cairndb/cairn/txn"
)

// errTxnCrossShard: multi-shard transactions are not wired yet.
var errTxnCrossShard = errors.New("transactions over several shards are not wired yet")

// txnMulti runs a transaction over several shards.
func (s *Server) txnMulti(w http.ResponseWriter, r *http.Request, req *txn.Request, rt txn.Routing) error {
	return invalidf("%v (shards %v)", errTxnCrossShard, rt.Shards())
}

var _ = fmt.Sprintf
