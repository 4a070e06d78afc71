#!/usr/bin/env bash
# tools/test-deb.sh [--no-build] -- `make test-deb`: builds the .deb, installs
# it on this machine with dpkg, checks the commands, manual pages and
# completion, runs lintian, then purges it and checks nothing is left.
# Needs root.  Prints one PASS/FAIL line per check and "N passed, N failed".
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
pkg=xen-remus-ext
out=$top/dist/deb
pass=0
fail=0
ok()  { echo "PASS: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit $?
}

if [ "$(id -u)" != 0 ]; then
  echo "test-deb: needs root (dpkg -i, purge)"; exit 1
fi
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
  echo "test-deb: $pkg is already installed here; purge it first (dpkg --purge $pkg)"; exit 1
fi

# --- build -------------------------------------------------------------------
if [ "${1:-}" = --no-build ]; then
  deb=$(ls "$out/${pkg}"_*_all.deb 2>/dev/null | head -n 1)
else
  t0=$(date +%s)
  deb=$(tools/build-deb.sh "$out") || { bad "make deb"; finish; }
  ok "make deb ($(( $(date +%s) - t0 )) s)"
fi
[ -n "$deb" ] && [ -f "$deb" ] || { bad "a .deb in $out"; finish; }
version=$(dpkg-deb -f "$deb" Version)

# --- what the checks need: the Depends, lintian, bash-completion ------------
deps=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -e 's/([^)]*)//' -e 's/|.*//' -e 's/:any//' \
       -e 's/ //g' | grep -v '^python3$' | grep -v '^$')
need=()
for p in $deps lintian bash-completion resource-agents libxml2-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "test-deb: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; } \
    || { bad "apt-get install ${need[*]}"; finish; }
fi

# --- lintian -------------------------------------------------------------------
lint=$(mktemp)
lintian_as=()
command -v runuser >/dev/null && lintian_as=(runuser -u nobody --)   # lintian dislikes root
if ! "${lintian_as[@]}" true 2>/dev/null || ! "${lintian_as[@]}" test -r "$deb"; then lintian_as=(); fi
"${lintian_as[@]}" lintian --pedantic --display-info --fail-on error,warning "$deb" >"$lint" 2>&1
lrc=$?
errors=$(grep -c '^E:' "$lint")
warnings=$(grep -c '^W:' "$lint")
infos=$(grep -c -E '^(I|P):' "$lint")
overridden=$("${lintian_as[@]}" lintian --pedantic --display-info --show-overrides "$deb" 2>/dev/null | grep -c '^O:')
if [ "$lrc" -eq 0 ] && [ "$errors" -eq 0 ] && [ "$warnings" -eq 0 ]; then
  ok "lintian: $errors errors, $warnings warnings, $infos info/pedantic, $overridden overridden"
else
  bad "lintian (rc $lrc): $errors errors, $warnings warnings"
fi
grep -E '^(E|W|I|P):' "$lint" | sed 's/^/    /'
rm -f "$lint"

# --- install -------------------------------------------------------------------
# Files named *remus* outside the package's own list, before and after:
# purge must leave the same set.
# (the log and the state directory are checked on their own: any xen-remus
# run as root, such as one from the work tree, writes them)
scan() {
  find /usr/bin /usr/sbin /usr/lib/python3 /usr/share/man /usr/share/doc /usr/share/bash-completion \
       /etc /var/lib /var/log -xdev \( -iname '*remus*' -o -iname 'xen_remus_ext*' \) \
       ! -path '/var/log/xen/remus-ext.log*' ! -path '/var/lib/xen-remus-ext' ! -path '/var/lib/xen-remus-ext/*' \
       2>/dev/null | sort
}
# State and log left by runs from the work tree would be removed by the purge
# and would hide what postinst creates: set them aside, put them back at exit.
stash=$(mktemp -d /tmp/test-deb-stash.XXXXXX)
for p in /var/lib/xen-remus-ext /var/log/xen/remus-ext.log; do
  if [ -e "$p" ]; then
    echo "test-deb: setting $p aside until the end"
    mkdir -p "$stash$(dirname "$p")" && mv "$p" "$stash$p"
  fi
done
before=$(scan)
installed=0
cleanup() {
  [ "$installed" = 1 ] && dpkg --purge "$pkg" >/dev/null 2>&1
  for p in /var/lib/xen-remus-ext /var/log/xen/remus-ext.log; do
    [ -e "$stash$p" ] || continue
    if [ ! -e "$p" ]; then
      mkdir -p "$(dirname "$p")" && mv "$stash$p" "$p"
    elif [ -d "$p" ]; then      # recreated meanwhile by another run: merge
      cp -an "$stash$p/." "$p/" && rm -rf "${stash:?}$p"
    else                        # a log: the old lines first
      cat "$p" >>"$stash$p" && mv "$stash$p" "$p"
    fi
  done
  if [ -n "$(find "$stash" ! -type d 2>/dev/null)" ]; then
    echo "test-deb: could not put back what is left in $stash"
  else
    rm -rf "$stash"
  fi
}
trap cleanup EXIT

if dpkg -i "$deb" >/tmp/test-deb-dpkg.log 2>&1; then
  installed=1
  ok "dpkg -i $(basename "$deb")"
else
  sed 's/^/    /' /tmp/test-deb-dpkg.log
  installed=1
  bad "dpkg -i $(basename "$deb")"
  finish
fi
rm -f /tmp/test-deb-dpkg.log
files=$(dpkg -L "$pkg")

check "every module byte-compiled by dh-python at install" \
  sh -c 'cd /usr/lib/python3/dist-packages/xen_remus_ext &&
         for f in $(find . -name "*.py"); do
           ls "$(dirname "$f")/__pycache__/$(basename "$f" .py)".cpython-3*.pyc >/dev/null 2>&1 || exit 1
         done'
work=$(mktemp -d)
export XEN_REMUS_LOG=   # the checks below write no log; one run at the end does
check "xen-remus is /usr/bin/xen-remus" test "$(command -v xen-remus)" = /usr/bin/xen-remus
check "every command of the package has its man page" \
  sh -c 'for f in $(dpkg -L '"$pkg"' | grep -E "^/usr/s?bin/."); do
           [ -f "$f" ] || continue
           man -w "$(basename "$f")" >/dev/null 2>&1 || { echo "    no man page: $f"; exit 1; }
         done'
check "xen-remus --help" sh -c 'xen-remus --help 2>&1 | grep -q "usage: xen-remus"'
check "xen-remus --version says $version" sh -c "xen-remus --version 2>&1 | grep -qx 'xen-remus $version'"
check "the module comes from /usr/lib/python3/dist-packages" \
  sh -c 'cd / && /usr/bin/python3 -c "import xen_remus_ext; print(xen_remus_ext.__file__)" \
         | grep -q "^/usr/lib/python3/dist-packages/xen_remus_ext/"'
check "every module imports with Debian's Python 3 packages" \
  sh -c 'cd / && /usr/bin/python3 -c "
import importlib, pkgutil, xen_remus_ext
for m in pkgutil.walk_packages(xen_remus_ext.__path__, \"xen_remus_ext.\"):
    if not m.name.endswith(\"__main__\"):
        importlib.import_module(m.name)
"'
check "the package ships the product only (no fault injectors, no test code)" \
  sh -c '! dpkg -L '"$pkg"' | grep -E "/xen_remus_ext/(chaos|tests?)(/|$)|/tests/"'
check "python3 -m xen_remus_ext.xend.hook_tool (the lean hook entry) answers a bad call with exit 2" \
  sh -c 'cd / && /usr/bin/python3 -m xen_remus_ext.xend.hook_tool -bogus >/dev/null 2>&1; [ $? = 2 ]'
check "/var/lib/xen-remus-ext exists, mode 700" test "$(stat -c %a /var/lib/xen-remus-ext 2>/dev/null)" = 700
touch /var/lib/xen-remus-ext/.test-deb

# The remus-fu HVM cfg: ASCII quotes (check passes, maybe with warnings) and
# verbatim from the blog post (typographic quotes: error on line 3).
seed=tests/data/cfg/remus-fu-hvm.cfg   # the cfg with ASCII quotes (tests/data/cfg/README)
[ -f "$seed" ] || { echo "FAIL: $seed missing"; exit 1; }
verbatim=$work/hvmdomu-verbatim.cfg
qline=$(grep -n "re.search('64'" "$seed" | head -n 1 | cut -d: -f1)
qline=${qline:-3}
# the quotes of the blog post: right single quotation mark and prime
sed -e "${qline}s/'64'/\xe2\x80\x9964\xe2\x80\xb2/" "$seed" >"$verbatim"
xen-remus config check "$seed" >"$work/check.out" 2>&1
rc=$?
check "xen-remus config check $(basename "$seed") exits 0" test "$rc" = 0
[ "$rc" = 0 ] || sed 's/^/    /' "$work/check.out"
xen-remus config check "$verbatim" >"$work/check.out" 2>&1
rc=$?
check "config check on the verbatim cfg (typographic quotes) exits 1" test "$rc" = 1
check "... naming line $qline, without a traceback" \
  sh -c "grep -q ':$qline' '$work/check.out' && ! grep -q Traceback '$work/check.out'"
[ "$rc" = 1 ] || sed 's/^/    /' "$work/check.out"

for page in xen-remus xm-remus-failback xm-remus-resync xm-remus-status; do
  check "man -w $page" test "$(man -w "$page" 2>/dev/null)" = "/usr/share/man/man1/$page.1.gz"
done
check "man xm-remus-failback renders" \
  sh -c 'MANWIDTH=80 man -P cat xm-remus-failback 2>/dev/null | grep -q "xm remus-failback"'
check "man pages render without warnings" \
  sh -c 'for p in xen-remus xm-remus-failback xm-remus-resync xm-remus-status; do
           w=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -Tutf8 -Z "$p" 2>&1 >/dev/null)
           [ -z "$w" ] || { echo "    $p: $w"; exit 1; }; done'

# bash completion, loaded on demand by bash-completion as in a login shell
complete_words() {
  bash --norc --noprofile -c '
    . /usr/share/bash-completion/bash_completion
    line=$1; COMP_LINE=$line; COMP_POINT=${#line}
    read -r -a COMP_WORDS <<<"$line"; [[ $line == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    _completion_loader "${COMP_WORDS[0]}" 2>/dev/null
    spec=$(complete -p "${COMP_WORDS[0]}" 2>/dev/null) || exit 3
    fn=${spec#*-F }; fn=${fn%% *}
    "$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf "%s\n" "${COMPREPLY[@]}"' _ "$1"
}
check "completion: 'xen-remus con<TAB>' -> config" sh -c '[ "$(cat)" = config ]' <<<"$(complete_words 'xen-remus con')"
check "completion: 'xen-remus config <TAB>' offers check" grep -qx check <<<"$(complete_words 'xen-remus config ')"
check "completion: 'xen-remus --<TAB>' offers --version" grep -qx -- --version <<<"$(complete_words 'xen-remus --')"
check "completion: 'xm remus-f<TAB>' -> remus-failback" \
  sh -c '[ "$(cat)" = remus-failback ]' <<<"$(complete_words 'xm remus-f')"

check "completion: 'xen-remus resync --mode <TAB>' offers checksum" \
  grep -qx checksum <<<"$(complete_words 'xen-remus resync --mode ')"

# the Pacemaker agent, installed where Pacemaker looks, tested by ocf-tester
# against two simulated hosts run from the installed package
ocf_agent=/usr/lib/ocf/resource.d/xen-remus/remus
check "the OCF agent $ocf_agent, mode 755" test "$(stat -c %a "$ocf_agent" 2>/dev/null)" = 755
if command -v ocf-tester >/dev/null && command -v xmllint >/dev/null; then
  ocfdir=$(mktemp -d)
  cp tests/pacemaker/simpair.py tests/pacemaker/ocf_tester_run.py "$ocfdir/"
  (cd / && XEN_REMUS_LOG= /usr/bin/python3 "$ocfdir/ocf_tester_run.py" "$ocf_agent") >"$work/ocf.out" 2>&1
  rc=$?
  check "ocf-tester passes on the installed agent ($(tail -n 1 "$work/ocf.out" | sed 's/^ocf-tester: //'))" \
    test "$rc" = 0
  [ "$rc" = 0 ] || sed 's/^/    /' "$work/ocf.out"
  rm -rf "$ocfdir"
else
  bad "ocf-tester and xmllint (resource-agents, libxml2-utils) not installed"
fi

# the resync engine with Debian's xxhash: a local resync, then verify
head -c 3145728 /dev/urandom >"$work/src.img"
cp "$work/src.img" "$work/dst.img"
printf 'changed' | dd of="$work/src.img" bs=1 seek=1048576 conv=notrunc status=none
XEN_REMUS_STATE_DIR=$work/state xen-remus verify "$work/src.img" "$work/dst.img" >/dev/null 2>&1
check "xen-remus verify: two different copies exit 1" test $? = 1
XEN_REMUS_STATE_DIR=$work/state xen-remus resync --mode checksum --verify --no-progress \
  "$work/src.img" "$work/dst.img" >"$work/resync.out" 2>&1
rc=$?
check "xen-remus resync --mode checksum --verify exits 0" test "$rc" = 0
[ "$rc" = 0 ] || sed 's/^/    /' "$work/resync.out"
check "... and the copies are identical" cmp -s "$work/src.img" "$work/dst.img"

# one logged run, so that purge has a log file to remove
XEN_REMUS_STATE_DIR=$work/state XEN_REMUS_LOG=/var/log/xen/remus-ext.log \
  xen-remus verify "$work/src.img" "$work/dst.img" >/dev/null 2>&1
check "xen-remus verify: identical copies exit 0, with /var/log/xen/remus-ext.log open" \
  sh -c "[ $? = 0 ] && [ -f /var/log/xen/remus-ext.log ]"
echo "test-deb marker" >>/var/log/xen/remus-ext.log
rm -rf "$work"

# --- purge -------------------------------------------------------------------------
purged_at=$(mktemp)
dpkg --purge "$pkg" >/tmp/test-deb-dpkg.log 2>&1
rc=$?
installed=0
check "dpkg --purge $pkg" test "$rc" = 0
[ "$rc" = 0 ] || sed 's/^/    /' /tmp/test-deb-dpkg.log
rm -f /tmp/test-deb-dpkg.log
check "dpkg -L $pkg: no longer known" sh -c "! dpkg -L $pkg >/dev/null 2>&1"
left=$(while IFS= read -r f; do
         [ -n "$f" ] && [ -e "$f" ] && [ ! -d "$f" ] && echo "$f"; done <<<"$files")
check "no file of the package left" test -z "$left"
[ -z "$left" ] || echo "$left" | sed 's/^/    /'
check "no /usr/lib/python3/dist-packages/xen_remus_ext" test ! -e /usr/lib/python3/dist-packages/xen_remus_ext
check "no /usr/lib/ocf/resource.d/xen-remus" test ! -e /usr/lib/ocf/resource.d/xen-remus
# The marker put there after the install must be gone with the directory; a
# directory without it was made anew by another process after the purge
# (e.g. a test run from the work tree on a shared machine).
if [ -e /var/lib/xen-remus-ext ] && [ ! -e /var/lib/xen-remus-ext/.test-deb ]; then
  ok "no /var/lib/xen-remus-ext of the package (one was recreated since by another process:" \
     "$(find /var/lib/xen-remus-ext -newer "$purged_at" | head -n 3 | tr '\n' ' '))"
else
  check "no /var/lib/xen-remus-ext" test ! -e /var/lib/xen-remus-ext
fi
rm -f "$purged_at"
if [ -e /var/log/xen/remus-ext.log ] && ! grep -q 'test-deb marker' /var/log/xen/remus-ext.log; then
  ok "no /var/log/xen/remus-ext.log of the package (one was written since by another process)"
else
  check "no /var/log/xen/remus-ext.log" test ! -e /var/log/xen/remus-ext.log
fi
after=$(scan)
new=$(comm -13 <(echo "$before") <(echo "$after"))
check "no new *remus* path under /usr /etc /var" test -z "$new"
[ -z "$new" ] || echo "$new" | sed 's/^/    /'
finish
