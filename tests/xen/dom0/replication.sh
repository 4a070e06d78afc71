#!/bin/bash
# tests/xen/dom0/replication.sh ACTION -- scenario e: `xl remus` of a second
# PV guest (rguest) whose disk is replicated checkpoint by checkpoint by
# `xen-remus replicate` (docs/design/xl-disk-replication.md), inside dom0.
#
#   setup         this host: serve rguest.img over NBD, /dev/nbd0 through
#                 Debian's nbd-client (both hosts, before protection)
#   primary       host A, after scenario b's protection: B's setup, create
#                 rguest on /dev/nbd0, `xl remus -n -d -F -s 'xen-remus
#                 replicate relay --link tcp ...'` toward B, wait until B's
#                 backup relay has committed MIN_COMMITTED checkpoints after
#                 checkpoint 0 (its report), measure the checkpoint rate
#                 against the memory-only guest's over the same 20 s and the
#                 relay's own costs, stamp the kill point on B; A is then
#                 killed with everything else
#   backup-check  host B, after the takeover: rguest must run here, failed
#                 over because the primary fell silent after the kill point
#                 (not a broken link, not earlier) from a checkpoint at least
#                 as late as the one committed there; the copy of B's disk
#                 taken at failover (before the guest resumed) must hold every
#                 record the resumed guest had acknowledged and none after;
#                 prints `xl-disk-replication: acknowledged N, lost M at
#                 failover` and the scenario's result line
#
# The link is a TCP connection of the relays' own (ssh only starts B's end):
# the lab's sshd drops a client silent for 30 s and its kernels give up on
# unacknowledged data after ~50 s (init.sh), which a long dom0 stall under
# TCG can still exceed; the relays' TCP_USER_TIMEOUT and heartbeat (TIMEOUT)
# ride it out.
DIR=/opt/xrl/tests/xen/dom0
DISKS=/var/lib/xrl/xfs
RIMG=$DISKS/rguest.img
RNBD=/run/xrl-rguest.nbd
RCTL=/run/xrl-rguest.ctl
CON=/var/log/xen/console
TIMEOUT=30          # the backup's failover silence, and the link's TCP_USER_TIMEOUT
MIN_COMMITTED=5     # checkpoints committed on B after checkpoint 0 before A may be killed
ME=${XRL_ME:-$(hostname)}; PEER=${XRL_PEER:-}
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "XRL: [$ME $(up)] e: $*"; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN{printf "%.1f", b-a}'; }
waitfor() { local n=$1 i; shift; for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 1; done; return 1; }
pssh() { ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=5 -o ServerAliveCountMax=12 "$PEER" "$@"; }
plook() { # a read-only look on the peer, up to 3 tries
  local i out rc=1
  for i in 1 2 3; do out=$(pssh "$@") && { printf '%s\n' "$out"; return 0; }; rc=$?; sleep 3; done
  printf '%s\n' "$out"; return $rc; }
jfield() { python3 -c 'import json,sys
try: d = json.loads(sys.stdin.read() or "{}")
except ValueError: d = {}
print(d.get(sys.argv[1]))' "$1"; }
rec_of() { tr -d '\r' < "$1" 2>/dev/null | sed -n 's/^XRL-GUEST rec \([0-9]*\).*/\1/p'; }
ckpts() { local n; n=$(grep -c 'Checkpointed save' "$1" 2>/dev/null); echo "${n:-0}"; }   # grep -c prints 0 and fails

setup() {
  modprobe nbd nbds_max=2 || { echo "modprobe nbd failed"; return 1; }
  command -v nbd-client >/dev/null || { echo "no nbd-client"; return 1; }
  [ -e "$RIMG" ] || truncate -s 32M "$RIMG"
  rm -f /run/xrl-rserve.ready
  setsid xen-remus replicate serve "$RIMG" --nbd "unix:$RNBD" --control "$RCTL" \
    --ready-file /run/xrl-rserve.ready > /tmp/rserve.log 2>&1 < /dev/null &
  echo $! > /run/xrl-rserve.pid
  waitfor 60 test -e /run/xrl-rserve.ready || { echo "serve: $(tail -3 /tmp/rserve.log)"; return 1; }
  nbd-client -unix "$RNBD" /dev/nbd0 -N xvda -b 512 > /tmp/nbd-client.log 2>&1 \
    || { echo "nbd-client: $(tail -3 /tmp/nbd-client.log)"; return 1; }
  waitfor 10 sh -c '[ "$(cat /sys/block/nbd0/size 2>/dev/null || echo 0)" -gt 0 ]' \
    || { echo "/dev/nbd0 has no size"; return 1; }
  # the backup's end logs here (its stderr otherwise goes back to A); not under
  # /run, which the initramfs mounts noexec
  printf '#!/bin/sh\necho "backup end: $(date +%%T) $*" >>/tmp/rbackup.err\nPYTHONFAULTHANDLER=1 xen-remus "$@" 2>>/tmp/rbackup.err\nrc=$?\necho "backup end: exit $rc" >>/tmp/rbackup.err\nexit $rc\n' > /usr/local/sbin/xrl-backup-wrap
  chmod 755 /usr/local/sbin/xrl-backup-wrap
  echo "ok: /dev/nbd0 $(cat /sys/block/nbd0/size) sectors"
}

primary() {
  local t0 out i n1 n2 g1 g2
  t0=$(up)
  out=$(setup) || { say "A setup: $out"; pssh "echo 'A setup: $out' > /run/xrl-e-skip"; return 1; }
  say "A: $out"
  out=$(pssh bash $DIR/replication.sh setup) \
    || { say "B setup: $out"; pssh "echo 'B setup: $out' > /run/xrl-e-skip"; return 1; }
  say "B: $out"
  cat > /etc/xen/rguest.cfg <<CFG
name = "rguest"
type = "pv"
kernel = "/opt/xrl/guest-vmlinuz"
ramdisk = "/opt/xrl/guest-initrd.gz"
extra = "console=hvc0 quiet"
memory = 96
vcpus = 1
disk = [ 'format=raw,vdev=xvda,access=rw,target=/dev/nbd0' ]
on_crash = "preserve"
CFG
  xl create /etc/xen/rguest.cfg > /tmp/rcreate.log 2>&1 \
    || { say "xl create: $(tail -3 /tmp/rcreate.log)"; pssh "echo 'xl create rguest failed' > /run/xrl-e-skip"; return 1; }
  waitfor 120 sh -c "[ \"\$(tr -d '\r' < $CON/guest-rguest.log | sed -n 's/^XRL-GUEST rec \([0-9]*\).*/\1/p' | tail -1)\" -ge 3 ]" \
    || { say "rguest wrote no records"; pssh "echo 'rguest wrote no records' > /run/xrl-e-skip"; return 1; }
  say "rguest up, rec $(rec_of $CON/guest-rguest.log | tail -1); starting xl remus with the relay"
  setsid xl remus -n -d -F -e -i 200 -s "xen-remus replicate relay --control $RCTL --backup-disk $RIMG \
--link tcp --timeout $TIMEOUT --remote /usr/local/sbin/xrl-backup-wrap --report /tmp/rrelay.json \
--backup-report /tmp/rbackup.json --backup-snapshot /var/lib/xrl/rsnap.img" rguest "$PEER" > /tmp/rremus.log 2>&1 < /dev/null &
  # B's backup relay rewrites its report at each committed checkpoint
  local committed=-1 rep
  for ((i = 0; i < 90; i++)); do
    rep=$(plook "cat /tmp/rbackup.json 2>/dev/null; true")
    committed=$(echo "$rep" | jfield committed)
    [ "$(echo "$rep" | jfield failover)" = True ] && break
    [ "${committed:--1}" != None ] && [ "${committed:--1}" -ge "$MIN_COMMITTED" ] && break
    pgrep -f 'replicate relay' >/dev/null || { say "relay gone"; break; }
    [ $((i % 6)) = 0 ] && say "B committed ${committed}; xl: $(ckpts /tmp/rremus.log) checkpoints; load $(cut -d' ' -f1-3 /proc/loadavg)"
    sleep 5
  done
  tr '\r' '\n' < /tmp/rremus.log | grep -v '^ *$\|Checkpointed\|Frames' | tail -12 | sed 's/^/  e-remus| /'
  if [ "$committed" = None ] || [ "${committed:--1}" -lt "$MIN_COMMITTED" ] || [ "$(echo "$rep" | jfield failover)" = True ]; then
    # what the backup's end said, and B's kernel (an OOM kill ends ssh with 255 and no message)
    plook "cat /tmp/rbackup.json; tail -15 /tmp/rbackup.err; dmesg | tail -6" 2>&1 | sed 's/^/  e-backup(B)| /'
    tr '\r' '\n' < /tmp/rremus.log | grep -v '^ *$' | head -8 | sed 's/^/  e-remus(head)| /'
    say "rguest: B committed ${committed} checkpoints (needed $MIN_COMMITTED after checkpoint 0)"
    pssh "echo 'rguest: B committed ${committed} checkpoints before the kill point' > /run/xrl-e-skip"
    return 1
  fi
  # the cost against memory-only Remus: both guests' checkpoints over the same 20 s
  # (same dom0, same link, both under xl remus -i 200), and the relay's own figures
  n1=$(ckpts /tmp/rremus.log); g1=$(ckpts /var/lib/xen-remus-ext/remus/guest.log); sleep 20
  n2=$(ckpts /tmp/rremus.log); g2=$(ckpts /var/lib/xen-remus-ext/remus/guest.log)
  echo "XRL-TIMELINE e-replication checkpoints in 20 s: replicated disk $((n2 - n1)), memory-only $((g2 - g1)); relay: $(python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
f = lambda k: "%.1f ms" % (d[k] * 1000) if d.get(k) is not None else "-"
print("per checkpoint (medians, max) cut hold %s (%s), window %s (%s), ack %s (%s); %s checkpoints, %s guest writes, %.1f MB of stream"
      % (f("cut_hold_median"), f("cut_hold_max"), f("window_median"), f("window_max"), f("ack_latency_median"),
         f("ack_latency_max"), d.get("checkpoints"), d.get("writes"), (d.get("stream_bytes") or 0) / 1e6))' /tmp/rrelay.json 2>&1); load $(cut -d' ' -f1-3 /proc/loadavg)"
  # the kill point, stamped with B's clock; B must fail over after it, from no earlier checkpoint
  rep=$(plook "cat /tmp/rbackup.json 2>/dev/null; true"); committed=$(echo "$rep" | jfield committed)
  pssh "echo \$(date +%s.%N) $committed $(rec_of $CON/guest-rguest.log | tail -1) > /run/xrl-e-prekill" \
    || say "could not stamp the kill point on B"
  say "rguest last record before the kill: console $(rec_of $CON/guest-rguest.log | tail -1), A's disk $(python3 $DIR/records.py max $RIMG); B committed $committed"
  say "primary side ready after $(since "$t0") s"
}

backup_check() {
  local t0 rc=1 detail first n pre
  t0=$(up)
  if [ -e /run/xrl-e-skip ]; then
    echo "XRL-RESULT FAIL e-replication 0 not run: $(cat /run/xrl-e-skip)"; return 1
  fi
  # failover after the backup's TIMEOUT s of silence, then xl's own failover under TCG
  waitfor 300 sh -c "xl list rguest >/dev/null 2>&1" \
    || { echo "XRL-RESULT FAIL e-replication $(since "$t0") rguest did not take over on B ($(xl list | tail -n +2 | awk '{print $1}' | tr '\n' ' '); $(tail -3 /tmp/rbackup.err 2>/dev/null | tr '\n' ' '))"; return 1; }
  waitfor 60 grep -qs '"receiver_exit"' /tmp/rbackup.json
  sed 's/^/  e-backup| /' /tmp/rbackup.json 2>/dev/null
  tail -8 /tmp/rbackup.err 2>/dev/null | sed 's/^/  e-backup| /'
  # the first record the resumed guest prints: its counter at the checkpoint + 1
  waitfor 60 sh -c "cat $CON/guest-rguest*.log 2>/dev/null | tr -d '\r' | grep -q '^XRL-GUEST rec '"
  first=$(cat $CON/guest-rguest*.log 2>/dev/null | tr -d '\r' | sed -n 's/^XRL-GUEST rec \([0-9]*\).*/\1/p' | head -1)
  if [ -z "$first" ] || [ ! -e /var/lib/xrl/rsnap.img ]; then
    echo "XRL-RESULT FAIL e-replication $(since "$t0") no record from the resumed guest (first '$first') or no failover copy"
    return 1
  fi
  pre=$(cat /run/xrl-e-prekill 2>/dev/null)
  detail=$(python3 - /var/lib/xrl/rsnap.img "$first" /tmp/rbackup.json "$pre" "$MIN_COMMITTED" "$TIMEOUT" <<'PY'
import json, sys
sys.path.insert(0, "/opt/xrl/tests/xen/dom0")
from records import read_records
recs = read_records(sys.argv[1])
first = int(sys.argv[2])
acked = first - 1
lost = [n for n in range(1, acked + 1) if n not in recs]
future = sorted(n for n in recs if n > first)
try:
    rep = json.load(open(sys.argv[3]))
except (IOError, ValueError):
    rep = {}
pre = sys.argv[4].split()
why = []
committed = rep.get("committed")
if len(pre) < 2:
    why.append("no kill point stamped by A")
else:
    if not rep.get("time") or rep["time"] <= float(pre[0]):
        why.append("failover at %s, before A's kill point %s" % (rep.get("time"), pre[0]))
    if committed is None or committed < int(pre[1]):
        why.append("failed over from checkpoint %s, B had committed %s at the kill point" % (committed, pre[1]))
if committed is None or committed < int(sys.argv[5]):
    why.append("only %s checkpoints committed" % committed)
if rep.get("reason") != "no frame from the primary for %.1f s" % float(sys.argv[6]):
    why.append("failover reason: %s (expected the primary's silence)" % rep.get("reason"))
after_kill = "%.1f s after the kill point" % (rep["time"] - float(pre[0])) if rep.get("time") and pre else "?"
a_acked = pre[2] if len(pre) > 2 else "?"
print("%d %d %d %d xl-disk-replication: acknowledged %d, lost %d at failover; records after the checkpoint on B's disk: %d%s; "
      "committed checkpoints %s (0 = the pre-copy; %s at A's kill point), failover %s (%s), %s writes applied, "
      "dropped (epochs, writes, bytes) %s, B's stalls not counted as silence %s (longest %s s); A's console had "
      "acknowledged %s: the records after the checkpoint are lost with the memory, as Remus loses them%s"
      % (len(lost), len(future), acked, len(why), acked, len(lost), len(future),
         " (first %s)" % future[:3] if future else "", committed, pre[1] if len(pre) > 1 else "?", after_kill,
         rep.get("reason"), rep.get("applied_writes"), rep.get("dropped"), rep.get("stalls"), rep.get("stall_max"),
         a_acked, "".join("; NOT AS REQUIRED: " + w for w in why)))
PY
)
  set -- $detail
  local lost=$1 future=$2 acked=$3 bad=$4; shift 4
  echo "XRL-E $*"
  [ "$lost" = 0 ] && [ "$future" = 0 ] && [ "$acked" -gt 0 ] && [ "$bad" = 0 ] && rc=0
  n=$(xl list rguest 2>/dev/null | awk 'NR==2{print $5}')
  echo "XRL-RESULT $([ $rc = 0 ] && echo PASS || echo FAIL) e-replication $(since "$t0") rguest on B ($n); $*"
  xl destroy rguest 2>/dev/null
  nbd-client -d /dev/nbd0 >/dev/null 2>&1
  [ -s /run/xrl-rserve.pid ] && kill "$(cat /run/xrl-rserve.pid)" 2>/dev/null
  return $rc
}

case "$1" in
setup) setup ;;
primary) primary ;;
backup-check) backup_check ;;
*) echo "usage: $0 setup|primary|backup-check" >&2; exit 2 ;;
esac
