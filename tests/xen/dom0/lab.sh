#!/bin/bash
# tests/xen/dom0/lab.sh ROLE PHASE -- the scenarios, run inside dom0 by init.sh.
#
#   a 1   host A, first boot: scenario a (contract checks on real xl and
#         xenstored), then scenario b's primary side: create the guest,
#         remove B's copy of its disk, `xen-remus protect` seeds B's copy
#         and starts Remus toward B; once checkpoints flow it prints
#         XRL-KILL-ME and waits to be killed (meanwhile it tells B, every
#         second, the last record the guest acknowledged on its console).
#   a 2   host A, booted again on its stale data disk: scenario e's first
#         half: the same guest is started here too (split brain) under
#         `xen-remus supervise`, which rotates A's generation; it writes,
#         is destroyed; then A waits (ready flag) until B says it is done.
#         With XRL_HOLD=1, the default (kernel argument xrl.hold=1), protect runs with
#         --hold-backup: B's `xen-remus hold receive` sits before xl's
#         receiver, and scenario b-hold (on B) checks that after A's death
#         the copy stays paused and unchanged until `xen-remus hold release`.
#   b 1   host B: scenario b's backup side (takeover: counts the
#         acknowledged records B's disk lacks; B's supervisor rotates B's
#         generation), scenario e (failback without --discard-peer is
#         refused as split brain, both disks and records untouched), then
#         scenario c (`xen-remus failback guest hosta --discard-peer
#         --tracker fiemap`) and its checks; scenario d reads that failback's
#         result: the reflink + FIEMAP tracker must have driven a pre-copy
#         pass or the final delta.
#
# Output for the host (serial console): "XRL-RESULT PASS|FAIL <name> <s> <detail>",
# "XRL-TIMELINE ...", "XRL-KILL-ME", "XRL-TAKEOVER", "XRL-ABORT <why>".
# Remus here is memory only (xl remus -d): Debian's DRBD has no protocol D,
# so the backup's disk copy is NOT replicated; failback's resync (the
# product under test) is what brings the disk home.
ROLE=$1; PHASE=${2:-1}
ME=host$ROLE; PEER=$([ "$ROLE" = a ] && echo hostb || echo hosta)
DIR=/opt/xrl/tests/xen/dom0
DISKS=/var/lib/xrl/xfs               # XFS, reflink=1 (init.sh)
GIMG=$DISKS/guest.img; CIMG=$DISKS/ctest.img
CON=/var/log/xen/console
XR=xen-remus
FBOPTS="--no-net --no-disk --lose-disk-writes-at-failover --toolstack xl"
export XRL_DISKS=$DISKS
export PYTHONPATH=/opt/xrl XRL_ME=$ME XRL_PEER=$PEER PYTHONDONTWRITEBYTECODE=1

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "XRL: [$ME $(up)] $*"; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN{printf "%.1f", b-a}'; }
result() { # result NAME RC T0 DETAIL...
  local n=$1 rc=$2 t0=$3; shift 3
  echo "XRL-RESULT $([ "$rc" = 0 ] && echo PASS || echo FAIL) $n $(since "$t0") $*"; }
# ssh to the peer: keepalives ride out a dom0 stall of up to a minute (TCG
# under load: soft lockups of 20-50 s); plook retries a read-only look whose
# link broke, never a command that changes something
pssh() { ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=5 -o ServerAliveCountMax=12 "$PEER" "$@"; }
plook() { # plook CMD...: a read-only look on the peer, up to 3 tries; prints the last try's output
  local i out rc=1
  for i in 1 2 3; do out=$(pssh "$@") && { printf '%s\n' "$out"; return 0; }; rc=$?; sleep 3; done
  printf '%s\n' "$out"; return $rc; }
waitfor() { # waitfor SECONDS CMD...: poll once a second
  local n=$1; shift; local i
  for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 1; done; return 1; }
xlstate() { xl list "$1" 2>/dev/null | awk 'NR==2{print $5}'; }   # r/b/p... letters of DOM
running() { local s; s=$(xlstate "$1"); [ -n "$s" ] && [ "${s#*p}" = "$s" ]; }
lastrec() { cat "$CON/guest-guest.log" 2>/dev/null | tr -d '\r' | sed -n 's/^XRL-GUEST rec \([0-9]*\).*/\1/p' | tail -1; }
maxrec() { python3 $DIR/records.py max "${1:-$GIMG}"; }
ckpts() { local n; n=$(grep -c 'Checkpointed save' /var/lib/xen-remus-ext/remus/guest.log 2>/dev/null); echo "${n:-0}"; }   # grep -c prints 0 and fails
gen() { $XR -q meta show --json "${1:-$GIMG}" | python3 -c 'import json,sys; m=json.load(sys.stdin)["meta"] or {}; print("%s/%s" % (m.get("current"), m.get("bitmap")))'; }

guest_cfg() { # guest_cfg NAME MEMORY IMAGE
  cat > /etc/xen/$1.cfg <<CFG
name = "$1"
type = "pv"
kernel = "/opt/xrl/guest-vmlinuz"
ramdisk = "/opt/xrl/guest-initrd.gz"
extra = "console=hvc0 quiet"
memory = $2
vcpus = 1
disk = [ 'format=raw,vdev=xvda,access=rw,script=block,target=$3' ]
on_crash = "preserve"
CFG
}
guest_cfg guest 96 "$GIMG"
guest_cfg ctest 96 "$CIMG"
# both hosts hold a copy of each disk at the same path (xl migrate and
# remus send memory only); a fresh data disk starts with zeroed copies
[ -e "$GIMG" ] || truncate -s 32M "$GIMG"
[ -e "$CIMG" ] || truncate -s 8M "$CIMG"
say "role $ROLE phase $PHASE; disks: $(ls -s $DISKS | tr '\n' ' '); $(pgrep -a xenstored | head -1); $(xl info | grep -E '^(xen_version|free_memory)' | tr -s ' ' | tr '\n' ' ')"

abort() { echo "XRL-ABORT $*"; pssh "touch /run/xrl-abort" 2>/dev/null; }

# ---------------------------------------------------------------------------
scenario_a() {
  local t0 rc
  t0=$(up)
  (cd /opt/xrl && python3 -m pytest -q -p no:cacheprovider -rf $DIR/test_real_xenstore.py) \
    > /tmp/a-xenstore.log 2>&1; rc=$?
  tail -15 /tmp/a-xenstore.log | sed 's/^/  a-xenstore| /'
  result a-xenstore $rc "$t0" "$(tail -1 /tmp/a-xenstore.log | tr -d '=')"
  t0=$(up)
  (cd /opt/xrl && python3 -m pytest -q -p no:cacheprovider -rf --durations=0 $DIR/test_real_xl.py) \
    > /tmp/a-xl.log 2>&1; rc=$?
  grep -aE '^E |FAILED|ERROR|passed|failed|s call' /tmp/a-xl.log | tail -40 | sed 's/^/  a-xl| /'
  result a-xl $rc "$t0" "$(tail -1 /tmp/a-xl.log | tr -d '=')"
  xl destroy ctest 2>/dev/null; pssh xl destroy ctest 2>/dev/null
}

primary_b() {  # host A: protect the guest toward B with xen-remus, then get killed
  local t0 rc n
  t0=$(up)
  xl create /etc/xen/guest.cfg > /tmp/create.log 2>&1 \
    || { sed 's/^/  create| /' /tmp/create.log; result b-protect 1 "$t0" "xl create failed"; abort create; return 1; }
  waitfor 120 sh -c "[ \"\$(sed -n 's/^XRL-GUEST rec \([0-9]*\).*/\1/p' $CON/guest-guest.log | tail -1)\" -ge 3 ]" \
    || { result b-protect 1 "$t0" "guest wrote no records"; abort guest; return 1; }
  say "guest alive: rec $(lastrec), disk max $(maxrec)"
  pssh rm -f "$GIMG"                     # protect must seed B's copy itself
  $XR protect guest $PEER $FBOPTS $([ "$HOLD" = 1 ] && echo --hold-backup) --local-host $ME --json \
    > /tmp/protect.json 2> /tmp/protect.err
  rc=$?
  sed 's/^/  protect| /' /tmp/protect.err | tail -20; sed 's/^/  protect| /' /tmp/protect.json
  if [ $rc != 0 ]; then result b-protect $rc "$t0" "xen-remus protect exit $rc"; abort protect; return 1; fi
  local seeded; seeded="B's copy $(plook stat -c '%s bytes, %b blocks' "$GIMG"); generation A $(gen) B $(plook $XR -q meta show --json "$GIMG" | python3 -c 'import json,sys; m=json.load(sys.stdin)["meta"] or {}; print("%s/%s" % (m.get("current"), m.get("bitmap")))')"
  say "protect: $seeded"
  [ "$(gen)" = "$(plook $XR -q meta show --json "$GIMG" | python3 -c 'import json,sys; m=json.load(sys.stdin)["meta"] or {}; print("%s/%s" % (m.get("current"), m.get("bitmap")))')" ] \
    || { result b-protect 1 "$t0" "generations differ after protect: $seeded"; abort protect; return 1; }
  # the guest's acknowledged records, for B to count what the failover loses
  ( while sleep 1; do pssh "echo $(lastrec) > /var/lib/xrl/acked.tmp && mv /var/lib/xrl/acked.tmp /var/lib/xrl/acked" 2>/dev/null; done ) &
  # first full copy, then checkpoints every 200 ms
  local i; rc=1
  for ((i = 0; i < 60; i++)); do
    [ "$(ckpts)" -ge 5 ] && { rc=0; break; }
    grep -q 'Domain creation failed\|Remus: Backup failed\|Failover' /var/lib/xen-remus-ext/remus/guest.log && break
    say "remus: $(tr '\r' '\n' < /var/lib/xen-remus-ext/remus/guest.log | grep . | tail -1 | cut -c1-150)"
    say "  xl list: $(xl list | tail -n +2 | awk '{print $1":"$5}' | tr '\n' ' '); procs: $(pgrep -a 'xl|ssh' | cut -c1-80 | tr '\n' ';')"
    sleep 10
  done
  n=$(ckpts); sleep 10
  say "remus: $n -> $(ckpts) checkpoints in 10 s; guest rec $(lastrec); $(xl list | tail -n +2 | awk '{print $1":"$5}' | tr '\n' ' ')"
  tr '\r' '\n' < /var/lib/xen-remus-ext/remus/guest.log | grep -v '^ *Frames\|Checkpointed\|^ *$' | tail -40 | sed 's/^/  remus| /'
  [ $rc = 0 ] && [ "$(ckpts)" -gt "$n" ] || rc=1
  result b-protect $rc "$t0" "xen-remus protect seeded $seeded; xl remus -n -d -F; checkpoints $(ckpts); guest rec $(lastrec)"
  [ $rc = 0 ] || { abort checkpoints; return 1; }
  say "last record before the kill: console $(lastrec), A's disk $(maxrec)"
  [ "$E" = 1 ] && bash $DIR/replication.sh primary   # scenario e: a second guest, its disk replicated
  echo "XRL-KILL-ME"
  sleep 900
}

xllist() { # xllist: `xl list` of this host, retried (a read-only look a dom0 stall can fail)
  local i out
  for i in 1 2 3; do out=$(xl list 2>/dev/null) && { printf '%s\n' "$out"; return 0; }; sleep 1; done
  return 1; }
field() { awk -v d="$1" -v f="$2" '$1 == d {print $f}'; }   # field DOM COLUMN < xl list
held_here() { grep -qs '"state": "held"' /var/lib/xen-remus-ext/hold/guest.json; }   # (cheap: polled every second)

hold_b() {  # on B, A is dead and B's holder keeps the copy: paused, unchanged, until released
  local t0 th st l k0 k1 cpu0 cpu1 g0 g1 s looks=0 ok=0 why="" ckp trel first rc acked
  t0=$(up)
  st=$($XR -q hold show guest)
  ckp=$(echo "$st" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("checkpoints"))')
  echo "XRL-HELD"                       # the host boots A again meanwhile
  say "stream broke; holder: $st"
  # the window: one `xl list` per look (state of guest--incoming, no `guest`),
  # CPU time, B's disk records and B's generation at both ends of it
  l=$(xllist) || { ok=1; why="$why; xl list failed at the start of the hold"; }
  k0=$(maxrec); cpu0=$(echo "$l" | field guest--incoming 6); g0=$(gen)
  say "held: guest--incoming $(echo "$l" | field guest--incoming 5) cpu ${cpu0}s; B's disk max record $k0; generation $g0"
  th=$(up)
  while :; do
    looks=$((looks + 1))
    if l=$(xllist); then
      s=$(echo "$l" | field guest--incoming 5)
      [ -n "$s" ] && [ "${s#*p}" != "$s" ] || { ok=1; why="$why; guest--incoming not paused at +$(since "$th")s ('$s')"; }
      [ -z "$(echo "$l" | field guest 1)" ] || { ok=1; why="$why; a domain 'guest' exists at +$(since "$th")s"; }
    else
      ok=1; why="$why; xl list failed 3 times at +$(since "$th")s"
    fi
    awk -v a="$th" -v b="$(up)" -v w="$HOLD_S" -v n="$looks" 'BEGIN{exit !(b - a >= w && n >= 3)}' && break
    sleep 2
  done
  l=$(xllist) || { ok=1; why="$why; xl list failed at the end of the hold"; }
  k1=$(maxrec); cpu1=$(echo "$l" | field guest--incoming 6); g1=$(gen)
  local held_for; held_for=$(since "$th")
  say "after ${held_for}s ($looks looks): guest--incoming $(echo "$l" | field guest--incoming 5) cpu ${cpu1}s; disk max $k1; generation $g1; $(echo "$l" | tail -n +2 | awk '{print $1":"$5}' | tr '\n' ' ')"
  [ -n "$k0" ] && [ "$k1" = "$k0" ] || { ok=1; why="$why; B's disk records moved $k0 -> $k1 while held"; }
  [ -n "$cpu0" ] && [ "$cpu1" = "$cpu0" ] || { ok=1; why="$why; cpu time moved ${cpu0}s -> ${cpu1}s while held"; }
  [ -n "$g0" ] && [ "$g1" = "$g0" ] || { ok=1; why="$why; generation changed $g0 -> $g1 while held"; }
  case $ckp in ''|None|0) ok=1; why="$why; no committed checkpoint counted ($st)";; esac
  # the release (a promote): xl fails over, renames and unpauses the copy
  trel=$(up)
  $XR hold release guest > /tmp/release.out 2>&1; rc=$?
  sed 's/^/  release| /' /tmp/release.out
  waitfor 60 running guest || { ok=1; why="$why; guest not running after the release (exit $rc)"; }
  trel=$(since "$trel")
  waitfor 60 sh -c "[ \$(python3 $DIR/records.py max $GIMG) -gt $((k0 + 2)) ]" \
    || { ok=1; why="$why; no new records after the release"; }
  # the guest goes on from its checkpointed counter: new records follow one another from there
  first=$(python3 - "$GIMG" "$k0" <<'PY'
import sys
sys.path.insert(0, "/opt/xrl/tests/xen/dom0")
from records import read_records
recs = sorted(n for n in read_records(sys.argv[1]) if n > int(sys.argv[2]))
gaps = [n for a, n in zip(recs, recs[1:]) if n != a + 1]
print("%s %s %s" % (recs[0] if recs else 0, recs[-1] if recs else 0, len(gaps)))
PY
)
  set -- $first
  [ "${1:-0}" -gt "$k0" ] && [ "${3:-1}" = 0 ] || { ok=1; why="$why; records after the release: first ${1:-?} last ${2:-?}, gaps ${3:-?}"; }
  acked=$(cat /var/lib/xrl/acked 2>/dev/null || echo 0)
  tail -4 $CON/guest-guest*.log 2>/dev/null | tr -d '\r' | sed 's/^/  guest| /'
  echo "XRL-TIMELINE b-hold held=${held_for}s looks=$looks checkpoints=$ckp release_to_running=${trel}s first_record_after=$1 acked_on_A=$acked"
  result b-hold $ok "$t0" "stream broke after $ckp committed checkpoints; guest--incoming paused for ${held_for}s ($looks looks: xl state p, no guest; cpu ${cpu0}s -> ${cpu1}s, disk max $k0 -> $k1, generation unchanged); released: running after ${trel}s, records go on from $1 (A had acknowledged $acked) to $2 without gaps${why}"
}

backup_b() {  # host B: wait for the remus stream, then for the takeover
  local t0 k=0 seen="" before after i held=""
  t0=$(up)
  for ((i = 0; i < 1500; i++)); do
    [ -e /run/xrl-abort ] && { result b-failover 1 "$t0" "primary aborted"; return 1; }
    if [ -z "$seen" ] && xl list guest--incoming >/dev/null 2>&1; then
      seen=$(up); k=$(maxrec); echo "$k" > /var/lib/xrl/k
      say "remus receiver up (guest--incoming); B's disk holds records 1..$k"
    fi
    if [ "$HOLD" = 1 ] && [ -z "$held" ] && held_here; then
      held=1; hold_b
    fi
    running guest && break
    sleep 1
  done
  running guest || { result b-failover 1 "$t0" "no takeover in time"; return 1; }
  echo "XRL-TAKEOVER"
  local acked lost; acked=$(cat /var/lib/xrl/acked 2>/dev/null || echo 0)
  lost=$(python3 $DIR/records.py lost $GIMG "$acked")
  echo "$lost" > /var/lib/xrl/lost
  say "failover: $acked records acknowledged on A's console (at least); B's disk lacks ${lost%% *} of them (${lost#* }): memory-only Remus does not replicate the disk"
  echo "XRL-TIMELINE b-failover acknowledged=$acked lost_at_failover=${lost%% *} lost_records=${lost#* }"
  say "guest runs here: $(xl list | tail -n +2 | awk '{print $1":"$5}' | tr '\n' ' ')"
  before=$(maxrec)
  waitfor 60 sh -c "[ \$(python3 $DIR/records.py max $GIMG) -gt $before ]"
  after=$(maxrec)
  tail -3 $CON/guest-guest*.log | tr -d '\r' | sed 's/^/  guest| /'
  local g; waitfor 60 sh -c "$XR -q meta show --json $GIMG | grep -q '\"bitmap\": \"'"; g=$(gen)
  echo "$g" > /var/lib/xrl/gen-b
  say "B's generation after the failover (xen-remus supervise): $g"
  result b-failover $([ "$after" -gt "$before" ] && running guest && [ "${g#*/}" != None ] && echo 0 || echo 1) "$t0" \
    "guest runs on B, records $before -> $after on B's disk (B had 1..$k before); WRITES LOST AT FAILOVER: ${lost%% *} of $acked acknowledged (${lost#* }); B's generation rotated: $g"
}

scenario_c() {  # on B: fail back home to A, then check A's disk and the protection
  local t0 rc k ok=0 detail
  k=$(cat /var/lib/xrl/k 2>/dev/null || echo 0)
  say "waiting for host A to come back"
  waitfor 600 pssh test -e /run/xrl-ready || { result c-failback 1 "$(up)" "host A never came back"; return 1; }
  plook xl list | sed 's/^/  A| /'
  scenario_e
  python3 $DIR/records.py dump $GIMG > /tmp/b-before.json
  say "failback: B's disk records up to $(maxrec) (written here after the failover: $k..); A's stale disk max $(plook python3 $DIR/records.py max $GIMG)"
  t0=$(up)
  $XR -v failback guest $PEER $FBOPTS --discard-peer --tracker fiemap --local-host $ME --json > /tmp/failback.json 2> /tmp/failback.err
  rc=$?
  local total; total=$(since "$t0")
  tail -25 /tmp/failback.err | sed 's/^/  failback| /'; sed 's/^/  failback| /' /tmp/failback.json
  [ $rc = 0 ] || { result c-failback 1 "$t0" "xen-remus failback exit $rc: $(tail -1 /tmp/failback.err)"; return 1; }
  # the domain runs on A
  waitfor 20 sh -c "ssh $PEER xl list guest | awk 'NR==2{print \$5}' | grep -qv p" || { ok=1; say "FAIL: guest not running on A"; }
  plook xl list | sed 's/^/  A| /'
  # every record on B's final disk written after the failover is on A's disk
  python3 $DIR/records.py dump $GIMG > /tmp/b-final.json
  plook python3 $DIR/records.py dump $GIMG > /tmp/a-after.json
  detail=$(python3 $DIR/records.py check /tmp/b-final.json /tmp/a-after.json "$k") || { ok=1; say "FAIL: $detail"; }
  say "records: $detail"
  # the guest goes on writing on A
  local amax; amax=$(plook python3 $DIR/records.py max $GIMG); sleep 8
  local amax2; amax2=$(plook python3 $DIR/records.py max $GIMG)
  [ "$amax2" -gt "$amax" ] || { ok=1; say "FAIL: A's disk records stuck at $amax"; }
  # checkpoints flow A -> B (the sender's log is here: xen-remus started it over
  # ssh).  Remus's first full copy took up to ~170 s on a loaded machine
  # (b-protect): wait for the first checkpoint, then they must go on
  local c1 c2 tw; tw=$(up)
  waitfor 300 sh -c "xl list guest--incoming >/dev/null 2>&1 && [ \$(grep -c 'Checkpointed save' /var/lib/xen-remus-ext/remus/guest.log 2>/dev/null || true) -ge 1 ]"
  say "first checkpoint A->B $(since "$tw") s after the failback returned"
  c1=$(ckpts); sleep 10; c2=$(ckpts)
  xl list guest--incoming >/dev/null 2>&1 && [ "$c2" -gt "$c1" ] || {
    ok=1; say "FAIL: no checkpoints A->B ($c1 -> $c2)"
    tr '\r' '\n' < /var/lib/xen-remus-ext/remus/guest.log 2>/dev/null | grep -v '^ *Frames\|Checkpointed\|^ *$' | tail -15 | sed 's/^/  remus| /'; }
  say "checkpoints A->B: $c1 -> $c2 in 10 s; here: $(xl list | tail -n +2 | awk '{print $1":"$5}' | tr '\n' ' ')"
  python3 - /tmp/failback.json "$total" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r.get("timing") or {}
steps = " ".join("%s=%.1fs" % (k, v[1] - v[0]) for k, v in sorted(t.items(), key=lambda kv: kv[1][0]) if v and v[1])
pre = sum((p.get("bytes_sent") or 0) for d in r.get("disks") or [] for p in d.get("precopy") or [])
fin = sum(((d.get("final") or {}).get("bytes_sent") or 0) for d in r.get("disks") or [])
print("XRL-TIMELINE c-failback total=%ss downtime=%.2fs downtime_max=%.2fs precopy_bytes=%d delta_bytes=%d steps: %s"
      % (sys.argv[2], r.get("downtime") or -1, r.get("downtime_max") or -1, pre, fin, steps))
PY
  result c-failback $ok "$t0" "guest on A; $detail; A records $amax -> $amax2; checkpoints $c1 -> $c2"
}

split_brain_a() {  # on A, back after the failover: the same guest started here too
  local t0 before
  t0=$(up)
  $XR -q supervise --daemon --toolstack xl --grace 5
  say "A's generation before: $(gen)"
  xl create /etc/xen/guest.cfg > /tmp/create2.log 2>&1 || { sed 's/^/  create| /' /tmp/create2.log; return 1; }
  waitfor 120 sh -c "grep -c 'XRL-GUEST rec' $CON/guest-guest.log | awk '{exit !(\$1 >= 5)}'"
  waitfor 60 sh -c "$XR -q meta show --json $GIMG | grep -q '\"bitmap\": \"'"
  xl destroy guest
  gen > /var/lib/xrl/gen-a
  say "split brain on A: guest ran here $(since "$t0") s, wrote records; A's generation now $(gen)"
}

scenario_e() {  # on B: failback toward A, whose copy took writes of its own, is refused
  local t0 rc ga gb sa sb ma mb sa2 sb2 ma2 mb2 ok=0 why=""
  t0=$(up)
  ga=$(plook cat /var/lib/xrl/gen-a 2>/dev/null); gb=$(gen)
  xl pause guest                          # B's disk holds still for the comparison
  sb=$(sha256sum < $GIMG); sa=$(plook sha256sum "< $GIMG")
  mb=$($XR -q meta show --json $GIMG); ma=$(plook $XR -q meta show --json $GIMG)
  $XR failback guest $PEER $FBOPTS --local-host $ME --json > /tmp/sb.json 2> /tmp/sb.err; rc=$?
  sb2=$(sha256sum < $GIMG); sa2=$(plook sha256sum "< $GIMG")
  mb2=$($XR -q meta show --json $GIMG); ma2=$(plook $XR -q meta show --json $GIMG)
  xl unpause guest
  sed 's/^/  e| /' /tmp/sb.json; tail -3 /tmp/sb.err | sed 's/^/  e| /'
  [ "${ga%/*}" != "${gb%/*}" ] || { ok=1; why="$why; generations equal ($ga)"; }
  [ "${ga#*/}" != None ] || { ok=1; why="$why; A's generation was not rotated ($ga)"; }
  [ $rc = 1 ] || { ok=1; why="$why; failback exit $rc, expected 1"; }
  grep -q 'split' /tmp/sb.json && grep -q -- '--discard-peer' /tmp/sb.json || { ok=1; why="$why; no split-brain refusal"; }
  [ "$sa" = "$sa2" ] && [ "$sb" = "$sb2" ] || { ok=1; why="$why; a disk changed"; }
  [ "$ma" = "$ma2" ] && [ "$mb" = "$mb2" ] || { ok=1; why="$why; a generation record changed"; }
  result e-splitbrain $ok "$t0" "A $ga, B $gb; failback without --discard-peer exit $rc; both disks and records unchanged${why}"
}

scenario_d() {  # on B, from scenario c's failback: did the fiemap tracker drive the pre-copy?
  local t0 rc line
  t0=$(up)
  line=$(python3 - /tmp/failback.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok, parts = True, []
for d in r.get("disks") or []:
    pre = d.get("precopy") or []
    fin = d.get("final") or {}
    parts.append("%s tracker=%s precopy=[%s] final=%s:%d bytes" % (
        d.get("vdev"), d.get("tracker"),
        ", ".join("%s:%d" % (p.get("mode"), p.get("bytes_sent") or 0) for p in pre),
        fin.get("mode"), fin.get("bytes_sent") or 0))
    tracked = [p for p in pre[1:] if p.get("mode") == "tracked"] + ([fin] if fin.get("mode") == "tracked" else [])
    ok = ok and d.get("tracker") == "fiemap" and bool(tracked)
print("%d %s" % (0 if ok and parts else 1, "; ".join(parts) or "no disks in the result"))
PY
)
  rc=${line%% *}
  grep -a 'tracker\|pre-copy' /tmp/failback.err | tail -6 | sed 's/^/  d| /'
  result d-tracker "${rc:-1}" "$t0" "${line#* }"
}

SKIP=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^xrl\.skip=//p')   # development: xrl.skip=a+c (XRL_SKIP=a,c)
skipped() { case "+$SKIP+" in *"+$1+"*) return 0;; esac; return 1; }   # a: scenario a; c: A's second boot, e-splitbrain, c, d
E=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^xrl\.e=//p')         # XRL_REPLICATION=1: scenario e
HOLD=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^xrl\.hold=//p')   # 1 (default; XRL_HOLD=0 turns it off): scenario b-hold
HOLD_S=10                                                          # b-hold: at least this many seconds, and 3 looks
case "$ROLE/$PHASE" in
a/1)
  waitfor 300 pssh true || { echo "XRL-ABORT peer unreachable"; exit 1; }
  say "peer reachable"
  skipped a || scenario_a
  primary_b
  ;;
a/2)
  split_brain_a || say "split brain setup failed"
  touch /run/xrl-ready; say "back up; stale disk max record $(maxrec); waiting for B"
  waitfor 1500 test -e /run/xrl-done
  ;;
b/1)
  backup_b && { [ "$E" = 1 ] && bash $DIR/replication.sh backup-check; skipped c || scenario_c; }; [ -s /tmp/failback.json ] && scenario_d
  pssh "touch /run/xrl-done" 2>/dev/null
  sleep 2
  ;;
*) echo "XRL-ABORT unknown role/phase $ROLE/$PHASE"; exit 2 ;;
esac
