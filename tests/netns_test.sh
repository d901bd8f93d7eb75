#!/usr/bin/env bash
# The README's "Deploying on separate hosts", step by step, with each party on its own host: a
# network namespace of its own, with its own key folder, on a private LAN (a bridge in one more
# namespace). Only public certificates move between hosts. The round must give the exact sum.
#
#   tests/netns_test.sh BUILD_DIR
#
# Needs root and `ip netns`; exits 77 (ctest: skipped) with the reason where namespaces cannot be
# made. Every command a host runs is also checked to appear, word for word, in the README's
# guide (with the example address and names), so the guide and this test cannot drift apart.
# Every wait is bounded: readiness lines read with a timeout, process exits under timeout(1).
set -euo pipefail

bin=${1:?usage: tests/netns_test.sh BUILD_DIR}
bin=$(cd "$bin" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
readme=$root/README.md
export PATH="$bin/tools:$bin/broker:$bin/nodes:$PATH"

skip() { echo "netns_test: SKIPPED: $*"; exit 77; }
fail() { echo "netns_test: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "needs ip (iproute2)"

id=$$
lan=tally$id-lan
hosts=(broker hospital alice bob charlie)
work=$(mktemp -d /tmp/tally-netns-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for h in "${hosts[@]}"; do ip netns del "tally$id-$h" 2>/dev/null || true; done
  ip netns del "$lan" 2>/dev/null || true
  if [ "${keep:-0}" = 1 ]; then echo "netns_test: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

ip netns add "$lan" 2>/dev/null || skip "cannot create a network namespace here"
ip -n "$lan" link add br0 type bridge
ip -n "$lan" link set br0 up
# The guide's example LAN: the broker at 10.77.0.1, then the hospital and the patients.
declare -A addr
n=1
for h in "${hosts[@]}"; do
  ns=tally$id-$h
  addr[$h]=10.77.0.$n
  ip netns add "$ns"
  ip link add "tv$id$n" type veth peer name "tp$id$n"
  ip link set "tv$id$n" netns "$lan"
  ip link set "tp$id$n" netns "$ns"
  ip -n "$lan" link set "tv$id$n" master br0 up
  ip -n "$ns" link set "tp$id$n" name eth0
  ip -n "$ns" addr add "${addr[$h]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  mkdir -p "$work/$h"
  n=$((n + 1))
done

# Checks that the guide shows COMMAND; the guide's patient example is alice with value 215, so
# another patient's command is checked in alice's words.
guide() {
  local cmd=$1
  for pv in bob:8 charlie:601; do
    cmd=${cmd//--patients ${pv%%:*}/--patients alice}
    cmd=${cmd//--name ${pv%%:*} --broker 10.77.0.1 --value ${pv#*:}/--name alice --broker 10.77.0.1 --value 215}
  done
  grep -qF -- "$cmd" "$readme" || fail "the README's deployment guide does not show: $cmd"
}
# Runs COMMAND on HOST (in its namespace, in its own folder) after checking the guide shows it.
on() {
  local host=$1
  shift
  guide "$*"
  (cd "$work/$host" && ip netns exec "tally$id-$host" bash -c "$*")
}

# Step 1: every party makes its own keys on its own host.
on broker "tally-keygen --dir keys --broker" >/dev/null
on hospital "tally-keygen --dir keys --hospital hospital" >/dev/null
for p in alice bob charlie; do on "$p" "tally-keygen --dir keys --patients $p" >/dev/null; done

# Step 2: the roster. Each host hands out public/NAME.key only; every host gets all of them.
for h in "${hosts[@]}"; do
  for other in "${hosts[@]}"; do
    [ "$h" = "$other" ] || cp "$work/$other/keys/public/$other.key" "$work/$h/keys/public/"
  done
  [ ! -e "$work/$h/keys/private/broker.key_secret" ] || [ "$h" = broker ] ||
    fail "$h holds the broker's secret"
done
for h in "${hosts[@]}"; do
  secrets=$(ls "$work/$h/keys/private")
  [ "$secrets" = "$h.key_secret" ] || fail "$h's private folder holds: $secrets"
done

# Step 3: the broker listens on every interface of its host.
guide "tally-broker --keys keys --bind 0.0.0.0 --captures captures"
mkfifo "$work/broker.out"
(cd "$work/broker" && exec ip netns exec "tally$id-broker" \
  tally-broker --keys keys --bind 0.0.0.0 --captures captures >"$work/broker.out" 2>broker.log) &
pids+=($!)
exec 3<"$work/broker.out"
read -r -t 15 line <&3 || fail "the broker did not come up: $(tail -n 1 "$work/broker/broker.log")"
[ "$line" = "router tcp://0.0.0.0:7700" ] || fail "unexpected readiness line: $line"

# Step 4: the patients, serving, reach the broker by its address alone.
[ "${addr[broker]}" = 10.77.0.1 ] || fail "the broker is not at the guide's address"
values=(alice:215 bob:8 charlie:601)
fd=4
for pv in "${values[@]}"; do
  p=${pv%%:*} v=${pv#*:}
  guide "tally-node --keys keys --name $p --broker 10.77.0.1 --value $v"
  mkfifo "$work/$p.out"
  (cd "$work/$p" && exec ip netns exec "tally$id-$p" \
    tally-node --keys keys --name "$p" --broker 10.77.0.1 --value "$v" \
    >"$work/$p.out" 2>"$p.log") &
  pids+=($!)
  eval "exec $fd<\"$work/$p.out\""
  read -r -t 30 line <&$fd || fail "$p did not reach the broker: $(tail -n 1 "$work/$p/$p.log")"
  [ "$line" = ready ] || fail "$p: unexpected readiness line: $line"
  fd=$((fd + 1))
done

# Step 5: the hospital asks for a round over the patients of its roster.
cmd="tally-node --keys keys --name hospital --broker 10.77.0.1 --range 1000 --json"
guide "$cmd"
out=$(cd "$work/hospital" && timeout 60 ip netns exec "tally$id-hospital" $cmd 2>hospital.log) ||
  { keep=1; fail "the hospital failed: $(tail -n 1 "$work/hospital/hospital.log")"; }
echo "$out"
case $out in
  *'"aggregate": 824, "participants": ["alice", "bob", "charlie"]'*) ;;
  *) keep=1; fail "expected the aggregate 824 over alice, bob and charlie: $out" ;;
esac
# The parties really were on separate hosts: the broker saw them come from their addresses.
for p in alice bob charlie; do
  ip netns exec "tally$id-broker" ss -tn | grep -q " ${addr[$p]}:" ||
    { keep=1; fail "the broker has no connection from $p's address ${addr[$p]}"; }
done
echo "netns_test: ok: 5 hosts, aggregate 824"
