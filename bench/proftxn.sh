#!/usr/bin/env bash
# bench/proftxn.sh BIN: where a transaction's time goes. One fresh 4-shard
# 3-node cluster of BIN on loopback (ports 17070..17092, servers with
# --pprof), KEYS keys (100000) preloaded, then one-shard and two-shard
# transactions (cairn bench txn, 64 clients, DURATION 25s each). For each it
# prints the rate, the servers' CPU per transaction (from /proc), how busy
# the host was, and writes into OUT (a new temp dir unless set):
#   {one,two}.json          the bench reports
#   {one,two}-n*.pb.gz      10-second CPU profiles of the three nodes
#   {one,two}-alloc-n*.pb.gz what each node allocated during the run
#                           (alloc_space, the run's difference)
# Compare per transaction: a function's cumulative seconds in a profile over
# (rate x 10 s), e.g.
#   go tool pprof -top -cum -nodecount=5000 BIN OUT/two-n*.pb.gz
# txn/DESIGN.md, "Where the time goes", reads it.
set -uo pipefail
BIN=$1
OUT=${OUT:-$(mktemp -d /tmp/proftxn.XXXXXX)}
KEYS=${KEYS:-100000}
DURATION=${DURATION:-25s}
base=17070
W=$(mktemp -d /tmp/proftxn-data.XXXXXX)
PIDS=
splits=$("$BIN" bench split-keys --shards 4 --keys "$KEYS")
for i in 1 2 3; do
  p=$((base + 10*(i-1))); join=
  for j in 1 2 3; do [ $j != $i ] && join+=${join:+,}127.0.0.1:$((base + 10*(j-1) + 2)); done
  "$BIN" server --id n$i --data-dir $W/n$i --http-addr 127.0.0.1:$p --raft-addr 127.0.0.1:$((p+1)) \
    --gossip-addr 127.0.0.1:$((p+2)) --bootstrap-expect 3 --join "$join" --initial-splits "$splits" \
    --log-level warn --pprof >$W/n$i.log 2>&1 &
  PIDS+=" $!"
done
trap 'kill $PIDS 2>/dev/null; sleep 1; kill -9 $PIDS 2>/dev/null; rm -rf $W' EXIT
EPS=127.0.0.1:$base,127.0.0.1:$((base+10)),127.0.0.1:$((base+20))
for _ in $(seq 1 120); do
  out=$("$BIN" bench put --endpoints "$EPS" --count 30 --clients 3 --keys 3 --key-prefix ready/ --timeout 2s --json 2>/dev/null) &&
    grep -q '"errors": 0,' <<<"$out" && break
  sleep 0.5
done
sleep 8
"$BIN" bench txn --endpoints "$EPS" --keys "$KEYS" --count 1 --clients 1 >/dev/null 2>&1 # preload
cpu() { local s=0 p; for p in $PIDS; do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }
allocs() { local i; for i in 0 10 20; do curl -s -o "$1-n$i.pb.gz" "127.0.0.1:$((base+i))/debug/pprof/allocs"; done; }
for mode in one two; do
  flag=; [ $mode = two ] && flag=--cross-shard
  allocs $W/$mode-a0
  c0=$(cpu); read -r _ u0 n0 s0 i0 w0 _ </proc/stat
  "$BIN" bench txn --endpoints "$EPS" --keys "$KEYS" --preload=false --clients 64 --duration "$DURATION" $flag --json >$OUT/$mode.json 2>/dev/null &
  pb=$!
  sleep 8
  cps=
  for i in 0 10 20; do curl -s -o $OUT/$mode-n$i.pb.gz "127.0.0.1:$((base+i))/debug/pprof/profile?seconds=10" & cps+=" $!"; done
  wait $pb $cps
  c1=$(cpu); read -r _ u1 n1 s1 i1 w1 _ </proc/stat
  allocs $W/$mode-a1
  for i in 0 10 20; do
    go tool pprof -proto -sample_index=alloc_space -base $W/$mode-a0-n$i.pb.gz $W/$mode-a1-n$i.pb.gz >$OUT/$mode-alloc-n$i.pb.gz 2>/dev/null
  done
  busy=$(( 100*((u1+n1+s1)-(u0+n0+s0)) / ((u1+n1+s1+i1+w1)-(u0+n0+s0+i0+w0)) ))
  python3 - $OUT/$mode.json $((c1-c0)) $mode $busy <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); ticks = int(sys.argv[2])
n = max(d.get("ops", 0), 1)
print(f"{sys.argv[3]}-shard: {d.get('ops_per_sec', 0):.0f}/s, errors {d.get('errors')}, "
      f"servers' CPU {ticks * 10000 / n:.0f} us a transaction, host {sys.argv[4]}% busy")
PY
done
echo "profiles in $OUT"
