#!/usr/bin/env bash
# gen.sh writes an upgrade fixture for TestUpgradeOpensOldDataDir
# (test/upgrade_test.go): the data dirs of a 3-node cluster run by a cairn
# binary built from the current commit, as real processes on loopback.
#
#   test/testdata/upgrade/gen.sh            # from the repository root
#
# It builds ./cmd/cairn, starts n1..n3 with the addresses below (the raft
# addresses are fixed in the data dirs: the test must reuse them), forms the
# cluster with --initial-splits g, writes the keys the test checks (one with
# a long TTL, one with a short TTL written last, one binary value, one
# overwritten), splits shard 2 at m (so the meta log holds range
# descriptors of a split), stops the nodes with SIGTERM and packs the data
# dirs into v<git describe>/data.tar.gz (the WAL's active file is zero-filled
# ahead, so the raw dirs are megabytes of zeros). Keep the expectations in
# upgrade_test.go in step with this script.
set -euo pipefail

root=$(git rev-parse --show-toplevel)
cd "$root"
version=$(git describe --always --tags --dirty)
out="test/testdata/upgrade/v$version"
if [ -e "$out" ]; then
	echo "$out exists; remove it first" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

go build -o "$work/cairn" ./cmd/cairn

# Ports: HTTP 2717N, raft 2718N, gossip 2719N for node nN.
joins=127.0.0.1:27191,127.0.0.1:27192,127.0.0.1:27193
pids=()
for i in 1 2 3; do
	"$work/cairn" server --id "n$i" --data-dir "$work/data/n$i" \
		--http-addr "127.0.0.1:2717$i" --raft-addr "127.0.0.1:2718$i" --gossip-addr "127.0.0.1:2719$i" \
		--bootstrap-expect 3 --join "$joins" --initial-splits g \
		>"$work/n$i.log" 2>&1 &
	pids+=($!)
done

ep=http://127.0.0.1:27171
for _ in $(seq 1 120); do
	if curl -fs "$ep/readyz" >/dev/null && curl -fs -X PUT -d '{"value":"ping"}' "$ep/v1/kv/gen-ping" >/dev/null; then
		break
	fi
	sleep 0.5
done
curl -fs -X DELETE "$ep/v1/kv/gen-ping" >/dev/null

put() { curl -fsS -X PUT -d "$2" "$ep/v1/kv/$1" >/dev/null; }
put alpha '{"value":"first"}'
put alpha '{"value":"one"}'                   # version 2
put config/mode '{"value":"fast"}'
put hotel '{"value":"h is in shard 2, then in the parent after the split"}'
put moon '{"value":"in the child after the split"}'
put zeta '{"value":"last range"}'
put ttl/long '{"value":"kept","ttl":"8760h"}'
printf '\x00\x01\x02\xfe\xff binary\n' >"$work/bin"
curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$work/bin" "$ep/v1/kv/bin" >/dev/null

# Split shard 2 ([g, +inf)) at m: the child [m, +inf) is a new range.
"$work/cairn" --endpoints 127.0.0.1:27171 cluster split 2 m >/dev/null
for _ in $(seq 1 120); do
	n=$(curl -fs "$ep/v1/cluster" | jq '.shards | length')
	[ "$n" = 3 ] && break
	sleep 0.5
done
put nova '{"value":"written after the split"}'
# Written last so that it is still on disk, unexpired, when the nodes stop;
# a later binary's leader expires it a few seconds after it starts.
put ttl/short '{"value":"goes","ttl":"5s"}'
curl -fs "$ep/v1/cluster" | jq . >"$work/cluster.json"

kill -TERM "${pids[@]}"
wait "${pids[@]}" || true

mkdir -p "$out"
tar -C "$work/data" -czf "$out/data.tar.gz" n1 n2 n3
cp "$work/cluster.json" "$out/cluster.json"
cat >"$out/README.md" <<EOF
# Upgrade fixture v$version

Written by \`test/testdata/upgrade/gen.sh\` with cairn built from commit
\`$(git rev-parse HEAD)\` (\`git describe\`: $version) on $(date -u +%Y-%m-%d).

\`data.tar.gz\` holds the data dirs n1, n2, n3 of a 3-node cluster run as real
processes (raft addresses 127.0.0.1:27181..27183, fixed in the data dirs),
formed with \`--initial-splits g\`, shard 2 split at \`m\`, stopped with SIGTERM.
\`cluster.json\` is \`GET /v1/cluster\` just before the stop. The keys are listed
in gen.sh and checked by TestUpgradeOpensOldDataDir (test/upgrade_test.go).
Never regenerate or edit a committed fixture: add a new one.
EOF
du -sh "$out"/*
