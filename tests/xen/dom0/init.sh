#!/bin/bash
# PID 1 of the lab's dom0 (kernel argument init=/opt/xrl/init; no systemd).
# Brings up what xl needs (xenfs, backend drivers, Debian's /etc/init.d/xen:
# xenstored, xenconsoled, the dom0 qemu for qdisk), the lab link (address from
# xrl.ip=), the persistent data disk (/dev/vdb at /var/lib/xrl, which also
# holds xen-remus's state dir so a host that is killed and booted again keeps
# its disks and generations; the disk images sit on a loop-mounted XFS with
# reflink), sshd; then runs lab.sh and powers Xen off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
exec </dev/console >/dev/console 2>&1
echo "XRL: dom0 init, uptime $(cut -d' ' -f1 /proc/uptime)"
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mountpoint -q /run || mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock /run/sshd
mount -o remount,rw /
karg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^xrl\.$1=//p" | tail -1; }
NAME=$(karg name); IP=$(karg ip)
hostname "${NAME:-xrl}"; echo "${NAME:-xrl}" > /etc/hostname
ip link set lo up
modprobe -a xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback xen-netback \
  loop dm-mod virtio_net virtio_blk 2>/dev/null
mountpoint -q /proc/xen || mount -t xenfs xenfs /proc/xen 2>/dev/null
for _ in 1 2 3 4 5; do [ -b /dev/vdb ] && break; sleep 1; done
mkdir -p /var/lib/xrl
if [ -b /dev/vdb ]; then
  blkid /dev/vdb >/dev/null 2>&1 || mke2fs -q -t ext4 -L xrl-data /dev/vdb
  mount /dev/vdb /var/lib/xrl
fi
mkdir -p /var/lib/xrl/state /var/lib/xrl/xfs
# the guests' images live on XFS with reflink (a loop file on the data disk),
# so that failback can track their writes by reflink + FIEMAP (scenario d)
if [ ! -e /var/lib/xrl/xfs.img ]; then
  truncate -s 400M /var/lib/xrl/xfs.img && mkfs.xfs -q -m reflink=1 /var/lib/xrl/xfs.img
fi
mount -o loop /var/lib/xrl/xfs.img /var/lib/xrl/xfs || echo "XRL: no XFS for the guest disks"
rm -rf /var/lib/xen-remus-ext; ln -s /var/lib/xrl/state /var/lib/xen-remus-ext
NIC=$(ls /sys/class/net | grep -v '^lo$' | head -1)
if [ -n "$IP" ] && [ -n "$NIC" ]; then
  ip addr add "$IP/24" dev "$NIC"; ip link set "$NIC" up
fi
# a dead peer must break remus's and migrate's streams (sshd's alive checks
# below, TCP keepalive: 10 + 4 x 5 s), but a live peer whose dom0 stalls
# (TCG on a loaded machine: soft lockups of 20-50 s) must not: unacknowledged
# data is retried for ~50 s (tcp_retries2=7), a silent peer dropped after 30 s
sysctl -qw net.ipv4.tcp_retries2=7 net.ipv4.tcp_keepalive_time=10 net.ipv4.tcp_keepalive_intvl=5 \
  net.ipv4.tcp_keepalive_probes=4
mkdir -p /var/log/xen/console
echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"' > /etc/default/xen
/etc/init.d/xen start >/tmp/xen-start.log 2>&1; echo "XRL: /etc/init.d/xen start rc=$?"
/usr/sbin/sshd -o PermitRootLogin=yes -o ClientAliveInterval=3 -o ClientAliveCountMax=10 \
  -o UseDNS=no -o MaxStartups=50
echo "XRL: dom0 ready, uptime $(cut -d' ' -f1 /proc/uptime)"
bash /opt/xrl/tests/xen/dom0/lab.sh "$(karg role)" "$(karg phase)"
echo "XRL: lab.sh exit $?; powering off"
sync; umount /var/lib/xrl/xfs 2>/dev/null; umount /var/lib/xrl 2>/dev/null; sync
echo o > /proc/sysrq-trigger
sleep 60
