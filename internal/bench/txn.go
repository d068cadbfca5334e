package bench

import "context"

// Txner is the capability the txn workload needs of a Conn: one
// transaction that compares every key (mod_index > 0: it exists) and, when
// all hold, puts values[i] to keys[i]. One request, no retry.
type Txner interface {
	Txn(ctx context.Context, keys, values []string) error
}

// txnKeys picks the two keys of the next transaction: neighbours 2m and
// 2m+1 (one shard unless a split falls between them, which an even split of
// an even keyspace never does), or with CrossShard one key from each half
// of the keyspace.
func (w *worker) txnKeys(cfg Config) (a, b int) {
	half := cfg.Keys / 2
	if cfg.CrossShard {
		return w.rnd.IntN(half), half + w.rnd.IntN(cfg.Keys-half)
	}
	m := w.rnd.IntN(half)
	return 2 * m, 2*m + 1
}

// txnOnce is one operation of the txn workload.
func (w *worker) txnOnce(ctx context.Context, cfg Config) {
	a, b := w.txnKeys(cfg)
	keys := []string{Key(cfg.KeyPrefix, a, cfg.Keys), Key(cfg.KeyPrefix, b, cfg.Keys)}
	values := []string{w.vals.next(), w.vals.next()}
	w.timed(ctx, cfg, opTxn, func(octx context.Context) error { return w.conn.(Txner).Txn(octx, keys, values) })
}
