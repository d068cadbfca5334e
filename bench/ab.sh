#!/usr/bin/env bash
# bench/ab.sh OLD_BIN NEW_BIN [ROUNDS]: put and linearizable get at 64
# clients against two builds of the cairn server, each round on fresh 3-node
# clusters on loopback (ports 18070..18092), alternating which goes first.
# NEW_BIN is also the benchmark client for both. Prints one line per cluster:
# "<old|new> put <ops/s> <errors> get <ops/s> <errors>"; compare the ratios
# within one run. DUR (default 8s) sets each measured run's length.
# Example: go build -o /tmp/cairn-old ./cmd/cairn at the old commit, then
#   bench/ab.sh /tmp/cairn-old ./bin/cairn 2
set -euo pipefail
OLD=$1 NEW=$2 ROUNDS=${3:-2}
DUR=${DUR:-8s}
CLIENT=$NEW
P=18070
run_one() { # BIN LABEL
  local bin=$1 label=$2 w pids=() eps=""
  w=$(mktemp -d /tmp/ab.XXXXXX)
  for i in 1 2 3; do
    local hp=$((P + 10*(i-1)))
    eps+=${eps:+,}127.0.0.1:$hp
    local join=""
    [ $i -gt 1 ] && join="--join 127.0.0.1:$((P+2))"
    "$bin" server --id n$i --data-dir $w/n$i --http-addr 127.0.0.1:$hp --raft-addr 127.0.0.1:$((hp+1)) \
      --gossip-addr 127.0.0.1:$((hp+2)) --bootstrap-expect 3 $join --log-level error >$w/n$i.log 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 120); do
    if out=$("$CLIENT" bench put --endpoints "$eps" --count 30 --clients 3 --keys 3 --key-prefix ready/ --timeout 2s --json 2>/dev/null) && grep -q '"errors": 0,' <<<"$out"; then break; fi
    sleep 0.5
  done
  "$CLIENT" bench get --endpoints "$eps" --clients 64 --count 1 --keys 20000 --value-size 256 --json >/dev/null 2>&1 || true
  local put get
  put=$("$CLIENT" bench put --endpoints "$eps" --clients 64 --duration $DUR --keys 20000 --value-size 256 --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d.get("throughput", d.get("ops_per_sec",0)),1), d.get("errors"))')
  get=$("$CLIENT" bench get --endpoints "$eps" --clients 64 --duration $DUR --keys 20000 --value-size 256 --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d.get("throughput", d.get("ops_per_sec",0)),1), d.get("errors"))')
  echo "$label put $put get $get"
  kill "${pids[@]}" 2>/dev/null || true; sleep 1; kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true
  rm -rf "$w"
}
for r in $(seq 1 $ROUNDS); do
  if [ $((r % 2)) = 1 ]; then run_one "$OLD" old; run_one "$NEW" new; else run_one "$NEW" new; run_one "$OLD" old; fi
done
