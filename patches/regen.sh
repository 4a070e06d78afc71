#!/usr/bin/env bash
# patches/regen.sh [XEN_GIT_DIR]
#
# Regenerates the quilt series under patches/xen-4.1/ and patches/xen-4.4/ (and
# the alternative patches/alt/*.patch) from the upstream release trees: for
# each release it extracts the few files we touch with `git show TAG:PATH`
# into a temporary tree, makes one edit per patch (inserted text below,
# anchored on a line that must occur exactly once) and records `diff -u`.
# Nothing of Xen's is kept but the diff context.  XEN_GIT_DIR defaults to the
# fetched mirror (/work/.mirror/xen-project+xen/repo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
git_dir=${1:-/work/.mirror/xen-project+xen/repo}
[ -d "$git_dir" ] || { echo "regen: no Xen git at $git_dir" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

MAIN=tools/python/xen/xm/main.py
DEVICE=tools/python/xen/remus/device.py
DOMAIN=tools/python/xen/xend/XendDomain.py
BLKTAP=tools/python/xen/xend/server/BlktapController.py
CHECKPOINT=tools/python/xen/xend/XendCheckpoint.py
IMAGE=tools/python/xen/remus/image.py
NETLINK=tools/python/xen/remus/netlink.py

# insert FILE ANCHOR WHERE(before|after|end) TEXTFILE: edit FILE in place
# (end: FILE must end with ANCHOR; the text is appended)
insert() {
  python3 - "$@" <<'EOF'
import sys
path, anchor, where, textfile = sys.argv[1:5]
src = open(path).read()
if where == "end":
    if not src.endswith(anchor):
        sys.exit("regen: %s: expected to end with %r" % (path, anchor))
    open(path, "w").write(src + open(textfile).read())
    sys.exit(0)
if src.count(anchor) != 1:
    sys.exit("regen: %s: anchor %r found %d times, expected once" % (path, anchor, src.count(anchor)))
add = open(textfile).read()
i = src.index(anchor)
if where == "after":
    i += len(anchor)
open(path, "w").write(src[:i] + add + src[i:])
EOF
}

cat >"$tmp/xm.txt" <<'EOF'
# xen-remus-ext: register the xm remus-failback, remus-resync and
# remus-status subcommands into the tables above (xen_remus_ext/xm/
# register.py).  xm is unchanged when the package is not installed.
try:
    from xen_remus_ext.xm import register as _remus_register
except ImportError:
    _remus_register = None
if _remus_register is not None:
    try:
        _remus_register.register(sys.modules[__name__])
    except Exception, exn:
        print >>sys.stderr, 'xm: remus subcommands not loaded: %s' % exn

EOF
cat >"$tmp/domain.txt" <<'EOF'
# xen-remus-ext: add domain_remus_failback, domain_remus_resync and
# domain_remus_status, which the XML-RPC server exports as
# xend.domain.remus_* like every other domain_* method
# (xen_remus_ext/xend/domain.py).
try:
    from xen_remus_ext.xend import domain as _remus_domain
except ImportError:
    _remus_domain = None
if _remus_domain is not None:
    log.info('xen-remus-ext: added %s', ', '.join(_remus_domain.install(XendDomain)))

EOF
cat >"$tmp/blktap.txt" <<'EOF'


# xen-remus-ext: at the device-migrate steps of a tap/tap2 disk, send the
# final disk delta of a Remus failback while the domain is suspended
# (xen_remus_ext/xend/blktap.py).
try:
    from xen_remus_ext.xend import blktap as _remus_blktap
except ImportError:
    _remus_blktap = None
if _remus_blktap is not None:
    _remus_blktap.install(Blktap2Controller)
EOF
cat >"$tmp/tapdisk-list.txt" <<'EOF'
    # xen-remus-ext: this list() replaces the one above, which unpacks
    # value.split(':') into two names: the args of a remus disk are
    # remus:HOST:PORT, so with one running every tap2 destroy failed and a
    # tapdisk leaked after each migration.  Fixed upstream (commit
    # 7351bdf240, in 4.4); the fields are pid=, minor=, state=, args= (last, and it
    # may hold ':' and blanks).
    @staticmethod
    def list():
        found = []
        text = TapdiskController.exc('list')
        for line in (text or '').splitlines():
            td = TapdiskController.Tapdisk()
            for field in line.split(None, 3):
                key, _, value = field.partition('=')
                if key == 'pid':
                    td.pid = value
                elif key == 'minor':
                    td.minor = int(value)
                    if td.minor >= 0:
                        td.device = '%s%s' % (TapdiskController.TAP_DEV, td.minor)
                elif key == 'state':
                    td.state = value
                elif key == 'args' and ':' in value:
                    td.dtype, _, td.image = value.partition(':')
            found.append(td)
        return found

EOF
cat >"$tmp/remus-fifo.txt" <<'EOF'
# xen-remus-ext: ReplicatedDisk above finds a remus disk's FIFOs with the
# greedy "tap:.*(remus.*)\|", which takes every layer up to the last '|'
# (and starts at the last "remus" in the uname).  For remus:H:P|log:IMG|aio:IMG,
# the blktap2 log driver under remus that xen-remus-ext reads as its dirty
# tracker on xend, it named remus_H_P|log_IMG, which no tapdisk opens.  This
# takes the top layer of the stack, the one block-remus names its FIFOs after.
def _remus_fifo_init(self, disk, _stock_init=ReplicatedDisk.__init__):
    uname = getattr(disk, 'uname', '') or ''
    if not re.match('tap:(tapdisk:)?remus:', uname):
        return _stock_init(self, disk)
    layer = re.sub('^tap:(tapdisk:)?', '', uname).split('|')[0]
    self.ctlfd = None
    self.msgfd = None
    self.is_drbd = False
    self.ackwait = False
    self.installed = False
    absfifo = os.path.join(self.FIFODIR, layer.replace(':', '_'))
    self.ctlfd = open(absfifo, 'w+b')
    self.msgfd = open(absfifo + '.msg', 'r+b')
ReplicatedDisk.__init__ = _remus_fifo_init

EOF
cat >"$tmp/log-type.txt" <<'EOF'
    # xen-remus-ext: blktap2's log driver (a dirty tracker).  xend rebuilds
    # a tap2 disk's uname as tap:STACK on restore and on an incoming
    # migration, and sends a stack whose top driver is not listed here to
    # blktap1, which has no log driver.
    'log',
EOF
cat >"$tmp/hold-import.txt" <<'EOF'

# xen-remus-ext: the copy of a Remus stream whose config carries the field
# (xen_remus_ext_hold 1) is restored paused and stays paused when the stream
# ends, until promote unpauses it (xen_remus_ext/xend/hold.py).  Any other
# stream (a migration, Remus without a hold) is restored as before.
try:
    from xen_remus_ext.xend import hold as _remus_hold
except ImportError:
    _remus_hold = None

EOF
cat >"$tmp/hold-restoring.txt" <<'EOF'
    # xen-remus-ext: hold the copy of a marked Remus stream (see above)
    _remus_held = _remus_hold is not None and \
        _remus_hold.restoring(dominfo, vmconfig, relocating, log)
    if _remus_held:
        paused = True
EOF
cat >"$tmp/hold-restored.txt" <<'EOF'
        if _remus_held:
            _remus_hold.restored(dominfo, log)
EOF
cat >"$tmp/hold-mark.txt" <<'EOF'


# xen-remus-ext: with XEN_REMUS_EXT_HOLD=1 in the remus script's environment
# (xen-remus remus-sender start --hold) the config at the head of the stream
# gets the field (xen_remus_ext_hold 1), and the backup's patched xend keeps
# its copy paused when the stream ends (xen_remus_ext/xend/hold.py).  Without
# the variable the header is unchanged.  A hold asked where the package is
# missing stops the script rather than send an unmarked stream.
try:
    from xen_remus_ext.xend import hold as _remus_hold
except ImportError:
    _remus_hold = None
if _remus_hold is not None:
    makeheader = _remus_hold.marking(makeheader)
elif __import__('os').environ.get('XEN_REMUS_EXT_HOLD', '') not in ('', '0'):
    raise ImportError('XEN_REMUS_EXT_HOLD is set, but xen_remus_ext cannot be '
                      'imported to mark the stream for a held backup')
EOF
cat >"$tmp/getqdisc.txt" <<'EOF'


# xen-remus-ext: getqdisc above returns the first entry of the dump, of
# whichever device.  The dump request names the device (tcm_ifindex), but
# the kernel may answer it with every device's qdiscs (Linux 6.x does on
# this module's socket, lo's noqueue first), and the remus script then took
# lo's noqueue for the buffer device's qdisc and refused to install the
# buffer ("there is already a queueing discipline noqueue").  This returns
# the requested device's entry.
def _remus_getqdisc(self, dev):
    link = self.getlink(dev)
    if not link:
        raise RTNLException('device %s not found' % dev)
    return self.getqdiscs(link['index']).get(link['index'])
rtnl.getqdisc = _remus_getqdisc
EOF
printf "    'remus-failback', 'remus-resync', 'remus-status',\n" >"$tmp/imported.txt"

header() {  # header SUBJECT BODY -> patch description lines
  printf 'Subject: %s\n\n%s\n\nFrom: xen-remus-ext\nMade against: %s (regenerate with patches/regen.sh)\n---\n' "$1" "$2" "$3"
}

one() {  # one TAG OUT FILE ANCHOR WHERE TEXTFILE SUBJECT BODY
  local tag=$1 out=$2 file=$3 anchor=$4 where=$5 text=$6 subject=$7 body=$8
  rm -rf "$tmp/a" "$tmp/b"
  mkdir -p "$tmp/a/$(dirname "$file")"
  git --git-dir="$git_dir" show "$tag:$file" >"$tmp/a/$file"
  mkdir -p "$tmp/b/$(dirname "$file")"
  cp "$tmp/a/$file" "$tmp/b/$file"
  insert "$tmp/b/$file" "$anchor" "$where" "$text"
  { header "$subject" "$body" "$tag"
    (cd "$tmp" && diff -u --label "a/$file" --label "b/$file" "a/$file" "b/$file") || true
  } >"$out"
}

many() {  # many TAG OUT FILE SUBJECT BODY (ANCHOR WHERE TEXTFILE)...: several inserts, one file
  local tag=$1 out=$2 file=$3 subject=$4 body=$5
  shift 5
  rm -rf "$tmp/a" "$tmp/b"
  mkdir -p "$tmp/a/$(dirname "$file")"
  git --git-dir="$git_dir" show "$tag:$file" >"$tmp/a/$file"
  mkdir -p "$tmp/b/$(dirname "$file")"
  cp "$tmp/a/$file" "$tmp/b/$file"
  while [ $# -gt 0 ]; do
    insert "$tmp/b/$file" "$1" "$2" "$3"
    shift 3
  done
  { header "$subject" "$body" "$tag"
    (cd "$tmp" && diff -u --label "a/$file" --label "b/$file" "a/$file" "b/$file") || true
  } >"$out"
}

for rel in 4.1:RELEASE-4.1.6.1 4.4:RELEASE-4.4.4; do
  ver=${rel%%:*} tag=${rel#*:}
  dir="$here/xen-$ver"
  mkdir -p "$dir"
  one "$tag" "$dir/0001-xm-register-remus-subcommands.patch" "$MAIN" \
      $'\ndef xm_lookup_cmd(cmd):' before "$tmp/xm.txt" \
      "xm: register the remus-failback, remus-resync and remus-status subcommands" \
      "Adds xen-remus-ext's commands to commands, SUBCOMMAND_HELP, SUBCOMMAND_OPTIONS,
domain_commands and all_commands, so xm help, xm <cmd> --help and prefix
matching treat them like any xm subcommand."
  one "$tag" "$dir/0002-xend-add-remus-domain-methods.patch" "$DOMAIN" \
      $'\ndef instance():' before "$tmp/domain.txt" \
      "xend: add XendDomain.domain_remus_failback/resync/status" \
      "Added to the class before instance() runs, so the XML-RPC server exports
them as xend.domain.remus_failback, remus_resync and remus_status."
  one "$tag" "$dir/0003-xend-blktap2-migrate-hook.patch" "$BLKTAP" \
      "                                  '-m%s' % tapdisk.minor)"$'\n' end "$tmp/blktap.txt" \
      "xend: device-migrate hook for blktap2 disks" \
      "Wraps the migrate/recover_migrate that BlktapController and Blktap2Controller
share: the final disk delta of a Remus failback goes at step 2 (domain
suspended)."
  extra=""
  if [ "$ver" = 4.1 ]; then
    one "$tag" "$dir/0004-xend-tapdisk-list-remus-args.patch" "$BLKTAP" \
        $'    @staticmethod\n    def fromDevice(device):' before "$tmp/tapdisk-list.txt" \
        "xend: TapdiskController.list reads remus:HOST:PORT args" \
        "tap-ctl list prints args=remus:HOST:PORT for a remus disk; value.split(':')
cannot unpack it, so destroy failed and tapdisks leaked after each migration
(fixed upstream by 7351bdf240, in 4.4)."
    extra=0004-xend-tapdisk-list-remus-args.patch
  fi
  printf '# xen-remus-ext for Xen %s (xend/xm); apply with quilt push -a, -p1 from the top of the tree\n%s\n%s\n%s\n' \
    "$ver" 0001-xm-register-remus-subcommands.patch 0002-xend-add-remus-domain-methods.patch \
    0003-xend-blktap2-migrate-hook.patch >"$dir/series"
  [ -z "$extra" ] || echo "$extra" >>"$dir/series"
  one "$tag" "$dir/0005-remus-fifo-of-a-stacked-remus-disk.patch" "$DEVICE" \
      $'\n### Network\n\n' after "$tmp/remus-fifo.txt" \
      "remus: find the remus layer's FIFO in a stacked tapdisk uname" \
      "The greedy match named the wrong FIFO for remus:H:P|log:IMG|aio:IMG (the
blktap2 log driver under remus, which xen-remus-ext reads as its dirty-block
tracker): the remus script could not protect such a disk."
  echo 0005-remus-fifo-of-a-stacked-remus-disk.patch >>"$dir/series"
  one "$tag" "$dir/0006-xend-blktap2-log-disk-type.patch" "$BLKTAP" \
      $'    \'remus\',\n' after "$tmp/log-type.txt" \
      "xend: blktap2_disk_types lists the log driver" \
      "A tap2 disk whose stack starts with log: (log:NAME|aio:PATH) came back from
a restore or a migration as tap:log:..., which xend sent to blktap1."
  echo 0006-xend-blktap2-log-disk-type.patch >>"$dir/series"
  many "$tag" "$dir/0007-xend-hold-a-marked-remus-backup.patch" "$CHECKPOINT" \
      "xend: restore a marked Remus stream paused and keep it paused" \
"XendCheckpoint.restore unpauses a relocated domain once xc_restore returns,
which for a Remus backup is when the stream breaks.  A stream whose config
carries (xen_remus_ext_hold 1) (0008) is restored with paused set, and the
copy waits at its last committed checkpoint for promote (xm unpause).
Streams without the field are restored as before." \
      $'\ndef restore(xd, fd, dominfo = None, paused = False, relocating = False):' before "$tmp/hold-import.txt" \
      $'\n    image_cfg = dominfo.info.get(\'image\', {})\n' before "$tmp/hold-restoring.txt" \
      $'\n        if not paused:\n            dominfo.unpause()\n' before "$tmp/hold-restored.txt"
  echo 0007-xend-hold-a-marked-remus-backup.patch >>"$dir/series"
  one "$tag" "$dir/0008-remus-mark-the-stream-for-a-held-backup.patch" "$IMAGE" \
      "    return zip(pfns, pages)"$'\n' end "$tmp/hold-mark.txt" \
      "remus: mark the stream's config when the backup is to be held" \
      "With XEN_REMUS_EXT_HOLD=1 the remus script adds (xen_remus_ext_hold 1) to
the config it sends first; XendConfig reads known keys only, so a receiver
without 0007 ignores it."
  echo 0008-remus-mark-the-stream-for-a-held-backup.patch >>"$dir/series"
  one "$tag" "$dir/0009-remus-qdisc-of-the-requested-device.patch" "$NETLINK" \
      "    def talk(self, req):"$'\n'"        self._rth.talk(req)"$'\n' end "$tmp/getqdisc.txt" \
      "remus: read the buffer device's own qdisc from the dump" \
      "rtnl.getqdisc returned the dump's first entry; Linux 6.x lists every
device's qdiscs in that dump, lo's noqueue first, and the remus script
refused to install its network buffer."
  echo 0009-remus-qdisc-of-the-requested-device.patch >>"$dir/series"
  mkdir -p "$here/alt"
  one "$tag" "$here/alt/xen-$ver-xm-imported-commands.patch" "$MAIN" \
      $'    \'cpupool-new\',\n    ]\n' before "$tmp/imported.txt" \
      "xm: load remus-failback/resync/status as IMPORTED_COMMANDS (one line)" \
      "The no-registration alternative to 0001: with xen/xm/remus-*.py installed
(xen-remus xm-modules install) xm runs the commands; xm help does not list
them (see docs/xm.md)."
done
echo "regen: wrote $here/xen-4.1 $here/xen-4.4 $here/alt"
