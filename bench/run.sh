#!/usr/bin/env bash
# make bench: cairn and etcd measured side by side on this machine.
#
# Installs Debian's etcd-server if etcd is missing, builds cairn, starts a
# 3-node cairn cluster and a 3-member etcd cluster on loopback (temp data
# dirs, fsync on for both), and runs put, linearizable get and a 90/10 mix at
# 1, 16, 64 and 256 clients against each with "cairn bench", alternating the
# two systems run by run; then etcd through its native Go client
# (bench/etcdnative), cairn's put throughput with 1, 4 and 16 shards, and
# cairn's put on each raft log store (--log-store wal and boltdb, a fresh
# one-shard cluster per store), and locks: acquire+release on names of each
# client's own and on one contended lock, cairn (4 shards) against etcd's
# concurrency.Mutex through its native client; and transactions: two-key
# transactions on one shard and across two (cairn, 4 shards) against etcd's
# transactions through its native client.
# Writes bench/results/<date>.md (tables, cairn/etcd and boltdb/wal ratios)
# and <date>.json (every run), with the disk's 4 KiB O_DSYNC writes a second
# (one writer and three) before and after: on a host whose three nodes share
# one disk, commits per second bound the multi-shard rows. About 11 minutes;
# every process it starts is stopped on exit.
#
# Knobs (environment): BENCH_DURATION (10s per run), BENCH_CLIENTS
# ("1 16 64 256"), BENCH_KEYS (100000), BENCH_VALUE_SIZE (256), BENCH_SHARDS
# ("1 4 16"), BENCH_SHARD_CLIENTS ("64 256"), BENCH_STORES ("wal boltdb"; ""
# skips the log-store runs), BENCH_STORE_CLIENTS ("1 16 64"), BENCH_PARTS
# ("compare locks shards stores": which parts run; without compare or
# locks, etcd is neither installed nor started), BENCH_LOCK_CLIENTS
# ("1 16 64": the lock part's client counts), BENCH_TXN_CLIENTS ("1 16
# 64": the transaction part's), BENCH_LOCK_SHARDS and BENCH_TXN_SHARDS
# ("1 4": cairn's shard counts for those parts, a fresh cluster each; the
# compare part runs one shard; two-shard transactions need two or more), BENCH_NATIVE (1; 0 skips the
# native etcd client), BENCH_CAIRN_PORT (17070: node i listens on
# base+10(i-1), +1 raft, +2 gossip), BENCH_ETCD_PORT (12379: member i on
# base+10000(i-1), +1 peer), BENCH_KEEP (1 keeps the temp dir), GO (go),
# BENCH_REPEAT (1: how many times each cairn/etcd pair of the compare, lock
# and transaction parts runs, their order alternating; the report shows the
# median run of each cell, with the range of its repeats; odd counts read
# best, an even count's median being the lower middle run).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
GO=${GO:-go}
DURATION=${BENCH_DURATION:-10s}
CLIENTS=${BENCH_CLIENTS:-"1 16 64 256"}
KEYS=${BENCH_KEYS:-100000}
VALUE_SIZE=${BENCH_VALUE_SIZE:-256}
SHARDS=${BENCH_SHARDS:-"1 4 16"}
SHARD_CLIENTS=${BENCH_SHARD_CLIENTS:-"64 256"}
STORES=${BENCH_STORES-"wal boltdb"}
STORE_CLIENTS=${BENCH_STORE_CLIENTS:-"1 16 64"}
PARTS=${BENCH_PARTS:-"compare locks txns shards stores"}
TXN_CLIENTS=${BENCH_TXN_CLIENTS:-"1 16 64"}
LOCK_CLIENTS=${BENCH_LOCK_CLIENTS:-"1 16 64"}
LOCK_SHARDS=${BENCH_LOCK_SHARDS:-"1 4"}
TXN_SHARDS=${BENCH_TXN_SHARDS:-"1 4"}
NATIVE=${BENCH_NATIVE:-1}
REPEAT=${BENCH_REPEAT:-1}
case $REPEAT in '' | 0* | *[!0-9]*) echo "bench: BENCH_REPEAT must be a positive integer, not '$REPEAT'" >&2; exit 2 ;; esac
CAIRN_PORT=${BENCH_CAIRN_PORT:-17070}
ETCD_PORT=${BENCH_ETCD_PORT:-12379}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench.XXXXXX")
LOGS=$WORK/logs
RUNS=$WORK/runs
mkdir -p "$LOGS" "$RUNS"
CAIRN=$WORK/cairn
CAIRN_PIDS=()
ETCD_PIDS=()
STARTED=$(date +%s)

part() { [[ " $PARTS " == *" $1 "* ]]; }
log() { printf '[bench %4ds] %s\n' "$(($(date +%s) - STARTED))" "$*" >&2; }

# stop PID...: SIGTERM, up to 10s for them to end, then SIGKILL.
stop() {
  local pid
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "$@"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    if [ $alive = 0 ]; then break; fi
    sleep 0.1
  done
  for pid in "$@"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ ${#CAIRN_PIDS[@]} -gt 0 ]; then stop "${CAIRN_PIDS[@]}"; fi
  if [ ${#ETCD_PIDS[@]} -gt 0 ]; then stop "${ETCD_PIDS[@]}"; fi
  if [ $rc != 0 ]; then
    log "failed (exit $rc); last lines of the logs:"
    for f in "$LOGS"/*; do
      if [ -s "$f" ]; then echo "== $f"; tail -n 15 "$f"; fi
    done >&2
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() {
  local p
  for p in "$@"; do
    port_free "$p" || { log "port 127.0.0.1:$p is in use; set BENCH_CAIRN_PORT / BENCH_ETCD_PORT"; exit 1; }
  done
}

# --- etcd: install -----------------------------------------------------------
if ! part compare && ! part locks && ! part txns; then
  NATIVE=0
elif ! command -v etcd >/dev/null 2>&1; then
  SUDO=
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  log "installing Debian's etcd-server and etcd-client"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server etcd-client >"$LOGS/apt.log" 2>&1 ||
    { cat "$LOGS/apt.log" >&2; exit 1; }
fi
case "$(uname -m)" in x86_64 | amd64) ;; *) export ETCD_UNSUPPORTED_ARCH=${ETCD_UNSUPPORTED_ARCH:-$(dpkg --print-architecture 2>/dev/null || uname -m)} ;; esac
ETCD_VERSION=$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p' || true)

# --- build ------------------------------------------------------------------
log "building cairn"
VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
CGO_ENABLED=0 $GO build -trimpath -ldflags "-X main.version=$VERSION" -o "$CAIRN" ./cmd/cairn
NATIVE_BIN=
if [ "$NATIVE" = 1 ]; then
  log "building bench/etcdnative (etcd's Go client)"
  if (cd bench/etcdnative && CGO_ENABLED=0 $GO build -trimpath -o "$WORK/etcdnative" .) >"$LOGS/etcdnative-build.log" 2>&1; then
    NATIVE_BIN=$WORK/etcdnative
  else
    log "bench/etcdnative did not build; skipping the native etcd client (see below)"
    tail -n 5 "$LOGS/etcdnative-build.log" >&2
  fi
fi

# --- clusters ---------------------------------------------------------------
cairn_eps() {
  local i eps=
  for i in 1 2 3; do eps+=${eps:+,}127.0.0.1:$((CAIRN_PORT + 10 * (i - 1))); done
  echo "$eps"
}
etcd_eps() {
  local i eps=
  for i in 1 2 3; do eps+=${eps:+,}127.0.0.1:$((ETCD_PORT + 10000 * (i - 1))); done
  echo "$eps"
}

# ready SYSTEM: waits until a few writes through every endpoint succeed.
ready() {
  local target=$1 eps out
  if [ "$target" = cairn ]; then eps=$(cairn_eps); else eps=$(etcd_eps); fi
  for _ in $(seq 1 120); do
    if out=$("$CAIRN" bench put --target "$target" --endpoints "$eps" --count 30 --clients 3 --keys 3 \
      --key-prefix ready/ --timeout 2s --json 2>/dev/null) && grep -q '"errors": 0,' <<<"$out"; then
      return 0
    fi
    sleep 0.5
  done
  log "$target did not become ready in 60s"
  exit 1
}

# start_cairn SHARDS [STORE]: a fresh 3-node cluster with the keyspace
# pre-split into SHARDS equal ranges, on raft log store STORE (default wal);
# waits until it serves writes and the shard leaders are spread over the
# nodes (within one of even, at most 30s).
CLUSTERS=0
start_cairn() {
  local shards=$1 store=${2:-wal} dir i p join splits=
  CLUSTERS=$((CLUSTERS + 1))
  dir=$WORK/cairn-$CLUSTERS-$shards-$store
  if [ "$shards" -gt 1 ]; then splits=$("$CAIRN" bench split-keys --shards "$shards" --keys "$KEYS"); fi
  for i in 1 2 3; do
    p=$((CAIRN_PORT + 10 * (i - 1)))
    check_ports "$p" $((p + 1)) $((p + 2))
  done
  for i in 1 2 3; do
    p=$((CAIRN_PORT + 10 * (i - 1)))
    join=
    for j in 1 2 3; do
      if [ "$j" != "$i" ]; then join+=${join:+,}127.0.0.1:$((CAIRN_PORT + 10 * (j - 1) + 2)); fi
    done
    "$CAIRN" server --id "n$i" --data-dir "$dir/n$i" --http-addr "127.0.0.1:$p" \
      --raft-addr "127.0.0.1:$((p + 1))" --gossip-addr "127.0.0.1:$((p + 2))" \
      --bootstrap-expect 3 --join "$join" ${splits:+--initial-splits "$splits"} --log-level warn \
      --log-store "$store" >"$LOGS/cairn-$CLUSTERS-$shards-$store-n$i.log" 2>&1 &
    CAIRN_PIDS+=($!)
  done
  ready cairn
  # Placement moves leaders after formation (writes meanwhile can end in
  # outcome_unknown): wait until every shard has a leader, leaders are within
  # one of even, and the shard -> leader map held still for 3s.
  local status leaders owners prev= stable=0 min max sum
  for _ in $(seq 1 90); do
    status=$("$CAIRN" cluster status -o json --endpoints "$(cairn_eps)" 2>/dev/null || true)
    leaders=$(grep -o '"leaders":[0-9]*' <<<"$status" | cut -d: -f2 | sort -n || true)
    owners=$(grep -o '"leader":"[^"]*"' <<<"$status" | tr '\n' ' ' || true)
    if [ -n "$leaders" ]; then
      min=$(head -n 1 <<<"$leaders")
      max=$(tail -n 1 <<<"$leaders")
      sum=$(awk '{ s += $1 } END { print s }' <<<"$leaders")
      if [ "$sum" -ge "$shards" ] && [ $((max - min)) -le 1 ] && [ "$owners" = "$prev" ]; then
        stable=$((stable + 1))
        if [ $stable -ge 6 ]; then break; fi
      else
        stable=0
      fi
    fi
    prev=$owners
    sleep 0.5
  done
  if [ $stable -lt 6 ]; then log "warning: cairn's shard leaders did not settle in 45s"; fi
  log "cairn up: $shards shard(s) on $store, leaders per node: $(tr '\n' ' ' <<<"${leaders:-?}")"
}

stop_cairn() {
  if [ ${#CAIRN_PIDS[@]} -gt 0 ]; then stop "${CAIRN_PIDS[@]}"; fi
  CAIRN_PIDS=()
}

start_etcd() {
  local i c p cluster=
  for i in 1 2 3; do
    c=$((ETCD_PORT + 10000 * (i - 1)))
    cluster+=${cluster:+,}e$i=http://127.0.0.1:$((c + 1))
    check_ports "$c" $((c + 1))
  done
  for i in 1 2 3; do
    c=$((ETCD_PORT + 10000 * (i - 1)))
    etcd --name "e$i" --data-dir "$WORK/etcd/e$i" \
      --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
      --listen-peer-urls "http://127.0.0.1:$((c + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((c + 1))" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token cairn-bench \
      --logger zap --log-outputs stderr --log-level warn >"$LOGS/etcd-e$i.log" 2>&1 &
    ETCD_PIDS+=($!)
  done
  ready etcd
  log "etcd up: 3 members ($ETCD_VERSION)"
}

stop_etcd() {
  if [ ${#ETCD_PIDS[@]} -gt 0 ]; then stop "${ETCD_PIDS[@]}"; fi
  ETCD_PIDS=()
}

# --- runs -------------------------------------------------------------------
SEQ=0
# bench SYSTEM WORKLOAD CLIENTS [FLAGS...]: one measured run, its JSON report
# kept for the summary. SYSTEM is cairn, etcd (JSON gateway) or etcd-native.
bench() {
  local sys=$1 wl=$2 n=$3 out
  shift 3
  SEQ=$((SEQ + 1))
  out=$RUNS/$(printf '%03d' $SEQ)-$sys-$wl-$n.json
  local cmd=("$CAIRN" bench "$wl" --target "$sys" --endpoints "$(cairn_eps)")
  case $sys in
    etcd) cmd=("$CAIRN" bench "$wl" --target etcd --endpoints "$(etcd_eps)") ;;
    etcd-native) cmd=("$NATIVE_BIN" "$wl" --endpoints "$(etcd_eps)") ;;
  esac
  "${cmd[@]}" --clients "$n" --duration "$DURATION" --keys "$KEYS" --value-size "$VALUE_SIZE" \
    --json "$@" >"$out" 2>>"$LOGS/bench.log"
  log "$(printf '%-11s %-5s %3d clients: %8s ops/s  p99 %6s ms  errors %s' "$sys" "$wl" "$n" \
    "$(grep -o '"ops_per_sec": [0-9.]*' "$out" | head -n 1 | cut -d' ' -f2)" \
    "$(grep -o '"p99": [0-9.]*' "$out" | head -n 1 | cut -d' ' -f2)" \
    "$(grep -o '"errors": [0-9]*' "$out" | head -n 1 | cut -d' ' -f2)")"
}

preload() {
  log "preloading $KEYS keys into $1"
  local eps
  if [ "$1" = cairn ]; then eps=$(cairn_eps); else eps=$(etcd_eps); fi
  "$CAIRN" bench get --target "$1" --endpoints "$eps" --clients 256 --count 1 --keys "$KEYS" \
    --value-size "$VALUE_SIZE" --json >/dev/null 2>>"$LOGS/bench.log"
}

# dsync_rate N: 4 KiB O_DSYNC writes a second in the work dir, N writers at
# once (500 writes each), all of them together: what a log commit's flush
# costs on this disk, which the three nodes of a cluster share.
dsync_rate() {
  local n=$1 i pids=() start end
  start=$(date +%s%N)
  for i in $(seq 1 "$n"); do
    dd if=/dev/zero of="$WORK/dsync-$i" bs=4k count=500 oflag=dsync 2>/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  end=$(date +%s%N)
  rm -f "$WORK"/dsync-*
  echo $((n * 500 * 1000000000 / (end - start + 1)))
}
disk_syncs() { echo "$(dsync_rate 1)/s alone, $(dsync_rate 3)/s with three writers"; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo ?)
SYNCS_BEFORE=$(disk_syncs)
log "temp dir $WORK; $DURATION per run"
if part compare; then
  start_cairn 1
  start_etcd
  preload cairn
  preload etcd

  row=0
  for wl in put get mixed; do
    extra=()
    if [ "$wl" != put ]; then extra=(--preload=false); fi
    for n in $CLIENTS; do
      for _ in $(seq 1 "$REPEAT"); do
        if [ $((row % 2)) = 0 ]; then order="cairn etcd"; else order="etcd cairn"; fi
        for sys in $order; do bench "$sys" "$wl" "$n" "${extra[@]}"; done
        if [ -n "$NATIVE_BIN" ]; then bench etcd-native "$wl" "$n" "${extra[@]}"; fi
        row=$((row + 1))
      done
    done
  done
  stop_etcd
  stop_cairn
fi

# Locks: cairn's lock API against etcd's recipe (concurrency.Mutex on a
# session lease) through its native client, on a cairn cluster of each of
# LOCK_SHARDS shards; uncontended (names of each client's own, spread over
# the shards) and one lock for every client (the
# report's handoff row: release to the next grant).
if part locks && [ -n "$NATIVE_BIN" ]; then
  for shards in $LOCK_SHARDS; do
    start_cairn "$shards"
    start_etcd
    row=0
    for n in $LOCK_CLIENTS; do
      for _ in $(seq 1 "$REPEAT"); do
        if [ $((row % 2)) = 0 ]; then order="cairn etcd-native"; else order="etcd-native cairn"; fi
        for sys in $order; do bench "$sys" lock "$n" --label "uncontended shards=$shards"; done
        row=$((row + 1))
      done
    done
    n=$(echo "$LOCK_CLIENTS" | awk '{print $NF}')
    for rep in $(seq 1 "$REPEAT"); do
      if [ $((rep % 2)) = 1 ]; then order="cairn etcd-native"; else order="etcd-native cairn"; fi
      for sys in $order; do bench "$sys" lock "$n" --contended --label "contended shards=$shards"; done
    done
    stop_etcd
    stop_cairn
  done
elif part locks; then
  log "skipping the lock part: it needs bench/etcdnative"
fi

# Transactions: two keys compared and written, neighbours (one shard) or
# one from each half of the keyspace (two of cairn's shards, on clusters of
# two or more), on a cairn cluster of each of TXN_SHARDS shards, against
# etcd's transactions through its native client (one raft group).
if part txns && [ -n "$NATIVE_BIN" ]; then
  for shards in $TXN_SHARDS; do
    start_cairn "$shards"
    start_etcd
    preload cairn
    preload etcd
    row=0
    kinds=one-shard
    if [ "$shards" -gt 1 ]; then kinds="one-shard cross-shard"; fi
    for kind in $kinds; do
      extra=(--preload=false --label "$kind shards=$shards")
      if [ "$kind" = cross-shard ]; then extra+=(--cross-shard); fi
      for n in $TXN_CLIENTS; do
        for _ in $(seq 1 "$REPEAT"); do
          if [ $((row % 2)) = 0 ]; then order="cairn etcd-native"; else order="etcd-native cairn"; fi
          for sys in $order; do bench "$sys" txn "$n" "${extra[@]}"; done
          row=$((row + 1))
        done
      done
    done
    stop_etcd
    stop_cairn
  done
elif part txns; then
  log "skipping the transaction part: it needs bench/etcdnative"
fi

if part shards; then
  for s in $SHARDS; do
    start_cairn "$s"
    for n in $SHARD_CLIENTS; do bench cairn put "$n" --label shards; done
    stop_cairn
  done
fi

# The raft log stores, one fresh cluster each, in turn: puts, where the
# store is on the path of every write (reads do not touch it).
if part stores; then
  for store in $STORES; do
    start_cairn 1 "$store"
    for n in $STORE_CLIENTS; do bench cairn put "$n" --label "log-store=$store"; done
    stop_cairn
  done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo ?)
SYNCS_AFTER=$(disk_syncs)

# --- results ----------------------------------------------------------------
DATE=$(date -u +%Y-%m-%d)
mkdir -p bench/results
base=bench/results/$DATE
k=2
while [ -e "$base.md" ]; do base=bench/results/$DATE-$k; k=$((k + 1)); done
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
MEM=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null)
"$CAIRN" bench summarize --title "cairn vs etcd, $DATE" --md "$base.md" --json-out "$base.json" \
  --env "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --env "machine=$(nproc) cores ($CPU), $MEM RAM, $(uname -sr)" \
  --env "disk=$(df -PT "$WORK" | awk 'NR == 2 {print $2 " on " $7}') (all data dirs)" \
  --env "disk flushes (4 KiB O_DSYNC writes) before / after=$SYNCS_BEFORE / $SYNCS_AFTER" \
  --env "load average (1/5/15 min) before / after=$LOAD_BEFORE / $LOAD_AFTER" \
  --env "cairn=$VERSION, $($GO version | cut -d' ' -f3), 3 nodes, fsync on (the raft log on every write; state machine files at close, fsm/DESIGN.md), --log-store wal except in the log-store table" \
  --env "etcd=$ETCD_VERSION (Debian etcd-server), 3 members, default settings (fsync on)" \
  --env "etcd clients=JSON gateway (/v3/kv/...) through cairn bench; native: bench/etcdnative ($(sed -n 's/^[[:space:]]*go.etcd.io\/etcd\/client\/v3 //p' bench/etcdnative/go.mod))" \
  --env "runs=$DURATION each$([ "$REPEAT" -gt 1 ] && echo ", every cairn/etcd pair $REPEAT times"), closed loop, $KEYS keys uniform (preloaded), $VALUE_SIZE-byte values; cairn and etcd alternate run by run; both clusters up together during the comparison, loopback only" \
  --env "client spread=client i starts at endpoint i mod 3; cairn's Go client then sends writes and linearizable reads to the shard leader it learned (client/route.go); etcd's members forward to the raft leader" \
  "$RUNS"/*.json
log "wrote $base.md and $base.json in $(($(date +%s) - STARTED))s"
cat "$base.md"
