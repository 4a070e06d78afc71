#!/bin/bash
# tests/xen/run.sh -- `make test-xen`: real Xen 4.17 (Debian) on two QEMU hosts.
#
# Builds (or reuses) the lab image (build.sh), boots host B then host A as
# two TCG QEMUs linked only to each other (QEMU socket netdev on 127.0.0.1;
# inside, 192.0.2.1 hosta <-> 192.0.2.2 hostb, no route anywhere else), lets
# dom0's lab.sh run the scenarios, kills A's QEMU when A asks for it
# (XRL-KILL-ME: scenario b's failover), boots A again on its stale data disk
# (scenario c), and prints one "PASS|FAIL <name> (<s>s)" line per scenario.
# Exit 0 only if every scenario passed; "SKIP: ..." and exit 0 only when QEMU
# or Debian's packages cannot be had.  Logs stay in $XRL_LOGS
# (default /tmp/xen-remus-lab-logs).  See tests/xen/README.md.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
LOGS=${XRL_LOGS:-/tmp/xen-remus-lab-logs}
MEM=${XRL_MEM:-1024}                  # MiB per host; dom0 gets half
A1_MAX=${XRL_A1_MAX:-1500}            # seconds: A's first boot up to the kill
B_MAX=${XRL_B_MAX:-1500}              # seconds: after the kill, until B is done
SCENARIOS="a-xenstore a-xl b-protect b-failover e-splitbrain c-failback d-tracker"
# XRL_REPLICATION=1: also scenario e (disk replication for xl remus, tests/xen/dom0/replication.sh)
[ "${XRL_REPLICATION:-0}" = 1 ] && SCENARIOS="a-xenstore a-xl b-protect b-failover e-replication e-splitbrain c-failback d-tracker"
# XRL_HOLD=1 (the default; XRL_HOLD=0 turns it off): protect with --hold-backup,
# and scenario b-hold (B's copy waits, paused, until released)
HOLD=${XRL_HOLD:-1}
[ "$HOLD" = 1 ] && SCENARIOS=${SCENARIOS/b-protect/b-protect b-hold}
# XRL_SKIP (development): a comma-separated list; a: scenario a; c: A's second
# boot, e-splitbrain, c-failback, d-tracker.  Skipped scenarios print SKIP.
# (On the kernel command line the list is joined by "+": QEMU's -initrd
# separates multiboot modules by commas.)
SKIPPED=""
case ",${XRL_SKIP:-}," in *,a,*) SKIPPED="$SKIPPED a-xenstore a-xl";; esac
case ",${XRL_SKIP:-}," in *,c,*) SKIPPED="$SKIPPED e-splitbrain c-failback d-tracker";; esac
T0=$(date +%s.%N)
el() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
say() { echo "[test-xen $(el)s] $*"; }

RUN=$(mktemp -d /tmp/xen-remus-lab.XXXXXX)
QEMU_PIDS=(); FOLLOW_PIDS=()
cleanup() {
  local p
  for p in "${QEMU_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${FOLLOW_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$LOGS"; mkdir -p "$LOGS"
  cp "$RUN"/*.log "$LOGS"/ 2>/dev/null
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# -- build --------------------------------------------------------------------
tb=$(el)
"$HERE/build.sh" image > "$RUN/build.log" 2>&1; rc=$?
sed 's/^/  /' "$RUN/build.log" | grep -v '^  IMAGE ' | tail -8
if [ $rc = 3 ]; then echo "SKIP: $(grep 'cannot build here' "$RUN/build.log" | tail -1)"; exit 0; fi
if [ $rc != 0 ]; then echo "FAIL build (exit $rc; log in $LOGS/build.log)"; exit 1; fi
IMG=$(sed -n 's/^IMAGE //p' "$RUN/build.log" | tail -1)
say "build/reuse of $IMG took $(awk -v a="$tb" -v b="$(el)" 'BEGIN{print b-a}')s"

# -- boot -----------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
truncate -s 1G "$RUN/A-data.img" "$RUN/B-data.img"
XEN="console=com1 com1=115200,8n1 dom0_mem=$((MEM / 2))M,max:$((MEM / 2))M dom0_max_vcpus=1 loglvl=warning guest_loglvl=warning"
boot() { # boot LOGNAME ROLE PHASE IP MAC NETMODE
  local log=$RUN/$1.log name=host$2
  : > "$log"
  qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -machine pc -m "$MEM" -smp 1 -no-reboot \
    -display none -monitor none -serial "file:$log" \
    -kernel "$IMG/boot/xen" -append "$XEN" \
    -initrd "$IMG/boot/vmlinuz root=LABEL=xrl-dom0 rw console=hvc0 init=/opt/xrl/init xrl.role=$2 xrl.phase=$3 xrl.name=$name xrl.ip=$4${XRL_SKIP:+ xrl.skip=${XRL_SKIP//,/+}}${XRL_REPLICATION:+ xrl.e=$XRL_REPLICATION} xrl.hold=$HOLD,$IMG/boot/initrd.img" \
    -drive "file=$IMG/dom0.img,if=virtio,format=raw,snapshot=on" \
    -drive "file=$RUN/${2^^}-data.img,if=virtio,format=raw" \
    -netdev "socket,id=lab,$6=127.0.0.1:$PORT" -device "virtio-net-pci,netdev=lab,mac=$5" \
    > "$RUN/$1.qemu.log" 2>&1 &
  LAST=$!; QEMU_PIDS+=("$LAST")
  say "started $1 ($name, phase $3): QEMU pid $LAST"
  # echo the lab's lines with the host's elapsed time; ends with its QEMU
  tail --pid="$LAST" -n +1 -F "$log" 2>/dev/null | while IFS= read -r l; do
    l=${l//$'\r'/}
    case $l in *XRL*|*"Panic"*|*"panic"*|*"Oops"*) echo "[test-xen $(el)s] $1| $l" | tee -a "$RUN/events.log";; esac
  done &
  FOLLOW_PIDS+=("$!")
}
alive() { kill -0 "$1" 2>/dev/null; }
seen() { grep -q -- "$2" "$RUN/$1.log" 2>/dev/null; }
wait_until() { # wait_until SECONDS PID CMD...: until CMD holds, PID exits, or time is up
  local end=$(( $(date +%s) + $1 )) pid=$2; shift 2
  while [ "$(date +%s)" -lt $end ]; do "$@" && return 0; alive "$pid" || return 2; sleep 1; done; return 1; }

boot B b 1 192.0.2.2 52:54:00:99:00:02 listen; B=$LAST
sleep 1
boot A1 a 1 192.0.2.1 52:54:00:99:00:01 connect; A1=$LAST
wait_until "$A1_MAX" "$A1" sh -c "grep -q 'XRL-KILL-ME\|XRL-ABORT' '$RUN/A1.log'"; rc=$?
if seen A1 XRL-KILL-ME; then
  sleep 2
  say "=== SIGKILL host A (QEMU pid $A1) ==="; TKILL=$(el); kill -9 "$A1"; wait "$A1" 2>/dev/null
  # A boots again once B took over, or (the hold) once B holds its copy:
  # A's boot then overlaps b-hold's window and release
  wait_until $([ "$HOLD" = 1 ] && echo 600 || echo 300) "$B" seen B 'XRL-HELD\|XRL-TAKEOVER\|XRL-RESULT [A-Z]* b-failover'
  case ",${XRL_SKIP:-}," in *,c,*) ;; *) boot A2 a 2 192.0.2.1 52:54:00:99:00:01 connect; A2=$LAST;; esac
  wait_until "$B_MAX" "$B" false
  TTAKE=$(grep -m1 'B| XRL-TAKEOVER' "$RUN/events.log" | sed 's/^\[test-xen \([0-9.]*\)s.*/\1/')
  [ -n "$TTAKE" ] && say "B took over $(awk -v a="$TKILL" -v b="$TTAKE" 'BEGIN{print b-a}')s after the kill$([ "$HOLD" = 1 ] && echo " (held, then released by b-hold)")"
else
  say "host A did not reach the failover point (rc $rc); stopping"
fi
for p in "${QEMU_PIDS[@]}"; do alive "$p" && { sleep 5; kill -9 "$p" 2>/dev/null; }; done
wait "${QEMU_PIDS[@]}" 2>/dev/null

# -- results ---------------------------------------------------------------------
echo "== timeline =="
grep -h 'dom0 ready\|XRL-TIMELINE\|SIGKILL\|took over\|back up' "$RUN/events.log" 2>/dev/null | sed 's/^/  /'
echo "== results =="
fail=0
for s in $SCENARIOS; do
  case " $SKIPPED " in *" $s "*) echo "SKIP $s (XRL_SKIP=$XRL_SKIP)"; continue;; esac
  line=$(cat "$RUN"/A1.log "$RUN"/B.log "$RUN"/A2.log 2>/dev/null | tr -d '\r' | grep -a "^XRL-RESULT [A-Z]* $s " | tail -1)
  if [ -z "$line" ]; then echo "FAIL $s (not run)"; fail=1; continue; fi
  set -- $line; verdict=$2; secs=$4; shift 4 2>/dev/null
  extra=""
  [ "$s" = b-failover ] && [ -n "${TTAKE:-}" ] && extra="; B took over $(awk -v a="$TKILL" -v b="$TTAKE" 'BEGIN{print b-a}')s after the SIGKILL"
  echo "$verdict $s (${secs}s) $*$extra"
  [ "$verdict" = PASS ] || fail=1
done
say "total $(el)s; logs in $LOGS"
exit $fail
