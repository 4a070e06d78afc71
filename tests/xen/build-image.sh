# tests/xen/build-image.sh -- sourced by build.sh with ROOTFS, CACHE, HERE, REPO set.
# Assembles the boot files and the dom0 image: the cached Debian rootfs, plus
# this working tree's xen_remus_ext (dist-packages) and tests/ (for the
# contract checks), a `xen-remus` launcher, the lab's dom0 scripts, the PV
# guest's initramfs and kernel, an ssh key both hosts trust, /etc/hosts for
# the lab link.  Cached under $CACHE/image-<hash of all inputs>.

# The project: the working tree's files (default) or, with XRL_FROM=HEAD, the
# last commit's (a shared tree may hold someone's half-done edit).
PROJECT_PATHS="xen_remus_ext tests/__init__.py tests/conftest.py tests/adapter tests/fakes"
SRC=$(mktemp -d /tmp/xrl-src.XXXXXX); trap 'rm -rf "$SRC"' EXIT
if [ "${XRL_FROM:-worktree}" = HEAD ]; then
  (cd "$REPO" && git archive HEAD $PROJECT_PATHS) | tar -x -C "$SRC"
else
  (cd "$REPO" && find $PROJECT_PATHS -name __pycache__ -prune -o -type f ! -name '*.pyc' -print0 \
     | cpio -0 -pdm --quiet "$SRC")
fi
(cd "$REPO" && find tests/xen/dom0 tests/xen/guest -type f -print0 | cpio -0 -pdm --quiet "$SRC")
find "$SRC" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
IMAGE_KEY=$( { echo "$ROOTFS"; sha256sum "$HERE/build-image.sh";
               (cd "$SRC" && find . -type f -print0 | sort -z | xargs -0 sha256sum); } | sha)
IMG=$CACHE/image-$IMAGE_KEY
if [ -e "$IMG/.complete" ]; then
  say "image cached: $IMG"; echo "IMAGE $IMG"; exit 0
fi
rm -rf "$IMG" "$IMG.tmp"; mkdir -p "$IMG.tmp/boot"
ST=$IMG.tmp/root
say "staging (hard links into the rootfs; new files only)"
cp -al "$ROOTFS" "$ST"; rm -f "$ST/.complete"

# boot files: QEMU's multiboot loader takes Xen uncompressed
gunzip -c "$ST"/boot/xen-4.17-amd64.gz > "$IMG.tmp/boot/xen"
cp "$ST"/boot/vmlinuz-*-amd64 "$IMG.tmp/boot/vmlinuz"
cp "$ST"/boot/initrd.img-*-amd64 "$IMG.tmp/boot/initrd.img"
KVER=$(ls "$ST/lib/modules" | head -1)

# this project, from the working tree
PYDIR=$ST/usr/lib/python3/dist-packages
cp -r "$SRC/xen_remus_ext" "$PYDIR/"
mkdir -p "$ST/opt/xrl"; cp -r "$SRC/tests" "$ST/opt/xrl/"
printf '#!/usr/bin/python3\nfrom xen_remus_ext.cli.main import run\nrun()\n' > "$ST/usr/local/bin/xen-remus"
chmod 755 "$ST/usr/local/bin/xen-remus"

# dom0's PID 1 and scenario scripts
install -m 755 "$HERE/dom0/init.sh" "$ST/opt/xrl/init"

# PV guest: the dom0 kernel, a busybox initramfs with xen-blkfront
G=$IMG.tmp/guest; mkdir -p "$G"/{bin,proc,sys,dev,lib/modules}
cp "$ST/bin/busybox" "$G/bin/busybox"; ln -s busybox "$G/bin/sh"
find "$ST/lib/modules/$KVER" -name 'xen-blkfront.ko*' -exec cp {} "$G/lib/modules/" \;
install -m 755 "$HERE/guest/init" "$G/init"
(cd "$G" && find . | sort | cpio -o -H newc --quiet | gzip -1) > "$ST/opt/xrl/guest-initrd.gz"
cp "$IMG.tmp/boot/vmlinuz" "$ST/opt/xrl/guest-vmlinuz"

# ssh: one root key both hosts trust; the lab link's names
mkdir -p -m 700 "$ST/root/.ssh"
ssh-keygen -q -t ed25519 -N '' -C xen-remus-lab -f "$ST/root/.ssh/id_ed25519"
cp "$ST/root/.ssh/id_ed25519.pub" "$ST/root/.ssh/authorized_keys"
printf 'Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 10\n  ServerAliveInterval 2\n  ServerAliveCountMax 3\n' \
  > "$ST/root/.ssh/config"
rm -f "$ST/etc/hosts" "$ST/etc/hostname" "$ST/etc/fstab"
printf '127.0.0.1 localhost\n192.0.2.1 hosta\n192.0.2.2 hostb\n' > "$ST/etc/hosts"
echo xrl > "$ST/etc/hostname"
echo 'LABEL=xrl-dom0 / ext4 rw 0 1' > "$ST/etc/fstab"

say "mke2fs dom0.img"
truncate -s 3G "$IMG.tmp/dom0.img"
mke2fs -q -t ext4 -L xrl-dom0 -d "$ST" "$IMG.tmp/dom0.img"
rm -rf "$ST" "$G"
touch "$IMG.tmp/.complete"; mv "$IMG.tmp" "$IMG"
# keep only the newest few images
ls -dt "$CACHE"/image-* 2>/dev/null | tail -n +4 | xargs -r rm -rf
say "image built: $IMG"
echo "IMAGE $IMG"
