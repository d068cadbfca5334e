#!/usr/bin/env bash
# bench/abtxn.sh OLD_BIN NEW_BIN "bench txn args": two builds of the cairn
# server measured side by side on transactions. Two fresh 4-shard 3-node
# clusters on loopback (OLD on ports 18070..18092, NEW on 19070..19092),
# preloaded, then the same "cairn bench txn" against both at once, ROUNDS
# times (default 2): whatever else the machine does falls on both. Prints,
# per round, each build's rate and its servers' CPU time per transaction
# (from /proc) and the NEW/OLD ratios, then each cluster's
# cairn_txn_batch_size sums and counts. NEW_BIN is the benchmark client for
# both. KEYS (20000) sets the keyspace, SETTLE (8s) the wait after formation.
# Example (riders, txn/DESIGN.md):
#   git worktree add /tmp/old b5e4bc2 && (cd /tmp/old && go build -o /tmp/cairn-old ./cmd/cairn)
#   go build -o /tmp/cairn-new ./cmd/cairn
#   ROUNDS=4 bench/abtxn.sh /tmp/cairn-old /tmp/cairn-new "--clients 64 --duration 15s --cross-shard"
set -uo pipefail
A=$1 B=$2 ARGS=$3
KEYS=${KEYS:-20000}
CLIENT=$B
W=$(mktemp -d /tmp/abtxn.XXXXXX)
declare -A PIDS
start() { # BIN BASE LABEL
  local bin=$1 base=$2 label=$3 splits join p
  splits=$("$CLIENT" bench split-keys --shards 4 --keys $KEYS)
  for i in 1 2 3; do
    p=$((base + 10*(i-1))); join=
    for j in 1 2 3; do [ $j != $i ] && join+=${join:+,}127.0.0.1:$((base + 10*(j-1) + 2)); done
    "$bin" server --id n$i --data-dir $W/$label/n$i --http-addr 127.0.0.1:$p --raft-addr 127.0.0.1:$((p+1)) \
      --gossip-addr 127.0.0.1:$((p+2)) --bootstrap-expect 3 --join "$join" --initial-splits "$splits" --log-level warn >$W/$label-n$i.log 2>&1 &
    PIDS[$label]+=" $!"
  done
}
eps() { echo 127.0.0.1:$1,127.0.0.1:$(($1+10)),127.0.0.1:$(($1+20)); }
cpu() { local s=0; for p in $1; do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }
trap 'kill ${PIDS[A]} ${PIDS[B]} 2>/dev/null; sleep 1; kill -9 ${PIDS[A]} ${PIDS[B]} 2>/dev/null; rm -rf $W' EXIT
start "$A" 18070 A; start "$B" 19070 B
for base in 18070 19070; do
  for _ in $(seq 1 120); do
    out=$("$CLIENT" bench put --endpoints "$(eps $base)" --count 30 --clients 3 --keys 3 --key-prefix ready/ --timeout 2s --json 2>/dev/null) && grep -q '"errors": 0,' <<<"$out" && break
    sleep 0.5
  done
done
sleep ${SETTLE:-8}
# preload both (compares need the keys)
"$CLIENT" bench txn --endpoints "$(eps 18070)" --keys $KEYS --count 1 --clients 1 >/dev/null 2>&1 &
p1=$!
"$CLIENT" bench txn --endpoints "$(eps 19070)" --keys $KEYS --count 1 --clients 1 >/dev/null 2>&1 &
p2=$!
wait $p1 $p2
for r in $(seq 1 ${ROUNDS:-2}); do
  ca=$(cpu "${PIDS[A]}"); cb=$(cpu "${PIDS[B]}")
  "$CLIENT" bench txn --endpoints "$(eps 18070)" --keys $KEYS --preload=false $ARGS --json >$W/a.json 2>/dev/null &
  pa=$!
  "$CLIENT" bench txn --endpoints "$(eps 19070)" --keys $KEYS --preload=false $ARGS --json >$W/b.json 2>/dev/null &
  pb=$!
  wait $pa $pb
  ca=$(( $(cpu "${PIDS[A]}") - ca )); cb=$(( $(cpu "${PIDS[B]}") - cb ))
  python3 - $W/a.json $W/b.json $ca $cb <<'PY'
import json,sys
a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2]))
ca,cb=int(sys.argv[3]),int(sys.argv[4])
def ops(d): return d.get("throughput", d.get("ops_per_sec",0)), d.get("ops", d.get("count",0)), d.get("errors")
ta,na,ea=ops(a); tb,nb,eb=ops(b)
ua=ca*10000/max(na,1); ub=cb*10000/max(nb,1)  # clock ticks 100/s -> us
print(f"old {ta:8.1f} ops/s err {ea} cpu/txn {ua:6.0f}us | new {tb:8.1f} ops/s err {eb} cpu/txn {ub:6.0f}us | rate new/old {tb/ta:.3f} cpu new/old {ub/ua:.3f}")
PY
done
for base in 18070 19070; do
  for i in 0 10 20; do curl -s 127.0.0.1:$((base+i))/metrics; done | grep -E '^cairn_txn_batch_size_(sum|count)' | awk -v b=$base '{split($1,a,"{"); k[a[1]" "a[2]]+=$2} END {for (x in k) print b, x, k[x]}' | sort
done
