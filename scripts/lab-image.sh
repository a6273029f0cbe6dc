#!/usr/bin/env bash
# Tier-3 lab image builder (see docs/TESTING.md, "Tier 3 — lab host").
#
# Builds a Debian 12 (bookworm) root filesystem with debootstrap and packs it for
# testbed/labHost.ts, which boots it with qemu-system-x86_64 (TCG, q35 + intel-iommu).
#
# Output: a cache dir keyed by a hash of the recipe (this script's text + the package
# list + the mirror), printed as the LAST line of stdout (progress goes to stderr):
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/kvmnet/lab/<hash>/
#     rootfs.img                 raw ext4 made with `mkfs.ext4 -d` (sparse); boot it
#                                through a per-boot qcow2 overlay, never write to it
#     vmlinuz, initrd.img        booted directly (-kernel/-initrd), no bootloader
#     ssh_host_ed25519_key.pub   the guest's only host key, so tests pin it
#     id_ed25519, id_ed25519.pub client key; the .pub is root's authorized_keys
#     recipe.txt                 what the hash covers, for humans
#
# A cache hit does nothing but print the dir. A build happens in a temp dir next to
# the cache dir and is renamed into place atomically; concurrent builders serialise
# on a flock, so parallel jest workers build once. Needs root (debootstrap, chroot).
#
# Tools: if debootstrap, qemu-system-x86_64, qemu-img or mkfs.ext4 are missing, this
# script runs `apt-get install -y debootstrap qemu-system-x86 qemu-utils e2fsprogs`
# (.ci/run should install those packages up front).
#
# Mirror: the Debian mirror apt on this machine already uses (from
# /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list); override with
# KVMNET_LAB_MIRROR=<url>. No other host is contacted.
#
# What is configured inside the image:
# - hostname kvmnet-lab; root login by key only (sshd drop-in), ed25519 host key only;
# - eth0 (net.ifnames=0 on the kernel command line) static 10.0.2.15/24 gw 10.0.2.2 via
#   /etc/network/interfaces (ifupdown) — QEMU slirp's defaults; slirp runs with
#   restrict=on, so the guest reaches nothing outside, the host only reaches it through
#   the forwarded loopback port;
# - NetworkManager installed but leaves ifupdown's eth0 alone (ifupdown plugin,
#   managed=false) and never auto-creates DHCP profiles (no-auto-default=*), so the
#   passthrough-candidate NICs stay untouched; systemd-networkd is present (systemd)
#   but disabled, as on a stock Debian host. So a fresh boot has BOTH networking.service
#   and NetworkManager.service active (NM holding the extra NICs, eth0 unmanaged);
#   test/lab/stacks.ts switches a guest to exactly one stack (ifupdown, networkd or
#   NetworkManager) and reboots it;
# - eth0 is pinned by MAC: kvmnet-lab-nic-names.service (before any network stack)
#   gives the NIC whose MAC labHost passes as kvmnet_lab.eth0_mac= on the kernel
#   command line the name eth0, swapping names with whichever NIC the kernel named
#   eth0 when the drivers' probe order put another NIC first (see below);
# - no machine-id (labHost passes systemd.machine_id= per boot), serial getty on
#   ttyS0 autologs root in (debug only: the serial line is a log file);
# - fstab with pass 0 (no fsck under TCG), empty resolv.conf (no DNS in the lab);
# - libvirt (libvirtd, virsh, qemu-system-x86) as most KVM hosts have it, but quiet
#   until asked: libvirtd starts on its socket (the first virsh), not at boot, and
#   libvirt's own `default` network is defined but not autostarted, so a lab boot has
#   no virbr0 and no libvirt firewall rules unless a test asks for them.
set -euo pipefail
umask 022

log() { printf '[lab-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mkfs -d ownership)"

SUITE=bookworm
PACKAGES=(
  systemd systemd-sysv libpam-systemd dbus udev kmod
  linux-image-amd64
  openssh-server
  iproute2 nftables dnsmasq-base ifupdown network-manager
  tcpdump procps pciutils iputils-ping sudo
  libvirt-daemon-system libvirt-clients qemu-system-x86
)

# --- tools -------------------------------------------------------------------------
need_install=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need_install+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_install+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need_install+=(qemu-utils)
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || need_install+=(e2fsprogs)
if [ ${#need_install[@]} -gt 0 ]; then
  log "installing missing tools: apt-get install -y ${need_install[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${need_install[@]}" >&2; then
    apt-get update >&2
    apt-get install -y --no-install-recommends "${need_install[@]}" >&2
  fi
fi
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

# --- mirror: the one apt on this machine uses -------------------------------------------
find_mirror() {
  local f
  # deb822 sources: a stanza with URIs: and a Suites: line naming bookworm.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      BEGIN { RS=""; FS="\n" }
      {
        uri=""; ok=0; deb=0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^[ \t]*#/) continue
          if ($i ~ /^Types:.*(^|[ \t])deb([ \t]|$)/) deb=1
          if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri=a[2] }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok=1 }
        }
        if (deb && ok && uri != "") { print uri; exit }
      }' "$f"
  done
  # one-line sources
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '$1 == "deb" { u=""; for (i = 2; i <= NF; i++) { if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; continue } ; if (u == "") { u=$i; continue } ; if ($i == suite) { print u; exit } ; break } }' "$f"
  done
}
MIRROR="${KVMNET_LAB_MIRROR:-$(find_mirror | head -n1)}"
[ -n "$MIRROR" ] || die "no Debian $SUITE mirror found in /etc/apt/sources.list*; set KVMNET_LAB_MIRROR"

# --- cache key ---------------------------------------------------------------------
SCRIPT_PATH="$(readlink -f "${BASH_SOURCE[0]}")"
RECIPE="$(printf 'script-sha256 %s\nsuite %s\nmirror %s\npackages %s\n' \
  "$(sha256sum "$SCRIPT_PATH" | cut -d' ' -f1)" "$SUITE" "$MIRROR" "${PACKAGES[*]}")"
HASH="$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)"
LAB_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/kvmnet/lab"
OUT="$LAB_ROOT/$HASH"

if [ -f "$OUT/rootfs.img" ] && [ -f "$OUT/.complete" ]; then
  log "cache hit: $OUT"
  printf '%s\n' "$OUT"
  exit 0
fi

mkdir -p "$LAB_ROOT"
exec 9>"$LAB_ROOT/.build.lock"
log "waiting for the build lock $LAB_ROOT/.build.lock"
flock 9
if [ -f "$OUT/rootfs.img" ] && [ -f "$OUT/.complete" ]; then
  log "cache hit (built by another process): $OUT"
  printf '%s\n' "$OUT"
  exit 0
fi

TMP="$(mktemp -d "$LAB_ROOT/.tmp-$HASH-XXXXXX")"
ROOT="$TMP/rootfs"
cleanup() {
  local rc=$?
  # Unmount anything debootstrap/chroot left mounted inside the temp dir (deepest
  # first), then remove it without ever crossing into another filesystem.
  if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
    awk -v p="$TMP/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T0=$(date +%s)
log "building $OUT (mirror $MIRROR)"
log "debootstrap --variant=minbase $SUITE (+${#PACKAGES[@]} packages)"
include="$(IFS=,; echo "${PACKAGES[*]}")"
debootstrap --variant=minbase --include="$include" "$SUITE" "$ROOT" "$MIRROR" >&2 \
  || { [ -f "$ROOT/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2; die "debootstrap failed"; }
log "debootstrap done in $(( $(date +%s) - T0 )) s"

# --- keys ----------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C "kvmnet-lab-host" -f "$TMP/ssh_host_ed25519_key"
ssh-keygen -q -t ed25519 -N '' -C "kvmnet-lab-client" -f "$TMP/id_ed25519"
rm -f "$ROOT"/etc/ssh/ssh_host_*
install -m 600 "$TMP/ssh_host_ed25519_key" "$ROOT/etc/ssh/ssh_host_ed25519_key"
install -m 644 "$TMP/ssh_host_ed25519_key.pub" "$ROOT/etc/ssh/ssh_host_ed25519_key.pub"
install -d -m 700 "$ROOT/root/.ssh"
install -m 600 "$TMP/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
rm -f "$TMP/ssh_host_ed25519_key"

# --- configuration -----------------------------------------------------------------
echo kvmnet-lab >"$ROOT/etc/hostname"
cat >"$ROOT/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	kvmnet-lab
::1		localhost ip6-localhost ip6-loopback
EOF
cat >"$ROOT/etc/fstab" <<'EOF'
/dev/vda	/	ext4	rw,errors=remount-ro	0	0
EOF
: >"$ROOT/etc/resolv.conf"
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOT/etc/apt/sources.list"

cat >"$ROOT/etc/network/interfaces" <<'EOF'
# kvmnet lab: eth0 is QEMU's user-mode (slirp) NIC; the host reaches sshd through a
# forwarded loopback port.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
	address 10.0.2.15/24
	gateway 10.0.2.2
EOF

install -d "$ROOT/etc/ssh/sshd_config.d"
cat >"$ROOT/etc/ssh/sshd_config.d/10-kvmnet-lab.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxSessions 32
MaxStartups 64:30:128
EOF

install -d "$ROOT/etc/NetworkManager/conf.d"
cat >"$ROOT/etc/NetworkManager/conf.d/10-kvmnet-lab.conf" <<'EOF'
[main]
no-auto-default=*
[ifupdown]
managed=false
EOF

# Serial console: root autologin (debug aid; the serial line is a log file on the host).
install -d "$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d"
cat >"$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
EOF
passwd_out="$(chroot "$ROOT" passwd -l root 2>&1)" || log "passwd -l root: $passwd_out"

# Nothing in the lab waits for a network that never comes (no DHCP, no outside).
chroot "$ROOT" systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
chroot "$ROOT" systemctl disable NetworkManager-wait-online.service >/dev/null 2>&1 || true
# Boot work a lab host has no use for. Under TCG the guest's one vCPU is ~98% busy from
# the kernel's start until SSH answers, so every unit at boot adds to every boot and
# reboot of the suite (≈ 45 per run): e2scrub_reap (LVM snapshot scrub, no LVM here)
# alone showed 9-10 s in systemd-analyze blame; modprobe@ units for drm, efi_pstore and
# fuse, the debug/tracing/hugepages/fuse mounts and a getty on a console qemu does not
# have (-nodefaults) ~1 s each; timers that would fire during a test. Userspace boot went
# from 16.2-17.1 s to 13.4-15.3 s (systemd-analyze, same guest, before and after).
chroot "$ROOT" systemctl mask e2scrub_reap.service e2scrub_all.timer fstrim.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer \
  modprobe@drm.service modprobe@efi_pstore.service modprobe@fuse.service \
  dev-hugepages.mount sys-kernel-debug.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount getty@tty1.service >/dev/null

# libvirt, quiet until asked. `systemctl disable libvirtd.service` takes its sockets
# with it (Also=), so they are enabled again: virsh starts libvirtd through them.
# libvirt-guests.service would start libvirtd at every boot to resume guests; the lab
# has none. The default network (libvirt-daemon-config-network) keeps its definition
# but loses autostart: tests that want libvirt's own virbr0 start it.
chroot "$ROOT" systemctl disable libvirtd.service libvirt-guests.service >/dev/null 2>&1 || true
chroot "$ROOT" systemctl enable libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket >&2
[ -L "$ROOT/etc/systemd/system/sockets.target.wants/libvirtd.socket" ] || die "libvirtd.socket not enabled"
[ ! -e "$ROOT/etc/systemd/system/multi-user.target.wants/libvirtd.service" ] || die "libvirtd.service still enabled at boot"
rm -f "$ROOT/etc/libvirt/qemu/networks/autostart/default.xml"
[ -f "$ROOT/etc/libvirt/qemu/networks/default.xml" ] || die "libvirt's default network definition is missing"

# eth0 must be the slirp NIC, whatever order the NIC drivers probe in. With
# net.ifnames=0 the kernel names NICs eth0, eth1, ... in the order they register, and
# that order races: udev loads virtio_pci, virtio_net and e1000 from parallel workers,
# and virtio_net may register while virtio_pci is still adding devices. Two layers:
#
# 1. make the usual order right: e1000 (a passthrough candidate) loads after
#    virtio_pci AND virtio_net, so the virtio-net on the lowest PCI slot (slirp)
#    normally registers first. The initramfs carries modprobe.d (rebuilt below).
#    This narrows the race but cannot close it (kmod treats a module that is still
#    initialising as loaded and does not wait for it).
# 2. pin eth0 by MAC, before any network stack reads a name. A systemd .link file
#    (Name=eth0) cannot do this: when the race hands eth0 to another NIC, udev's
#    rename fails with EEXIST, marks the event failed ("Failed to process device,
#    ignoring: File exists", measured on this image's udev 252) and never retries;
#    it cannot swap two names. So a oneshot unit does the swap after udev has
#    settled and before network-pre.target (networking.service, systemd-networkd
#    and NetworkManager all start after it): it finds the NIC with the MAC given as
#    kvmnet_lab.eth0_mac= on the kernel command line (labHost passes the slirp
#    NIC's), and when that NIC is not eth0 it renames eth0's holder to a temporary
#    name, the slirp NIC to eth0, and the other NIC to the slirp NIC's old name.
#    Other NICs keep the kernel's names (the PCI passthrough tests rely on the
#    kernel's "lowest free ethN" when a NIC comes back from vfio-pci). What it did
#    goes to the kernel log, i.e. the serial console.
cat >"$ROOT/etc/modprobe.d/kvmnet-lab.conf" <<'EOF2'
softdep e1000 pre: virtio_pci virtio_net
EOF2
install -d "$ROOT/usr/local/sbin"
cat >"$ROOT/usr/local/sbin/kvmnet-lab-nic-names" <<'EOF2'
#!/bin/sh
# Give the NIC whose MAC is kvmnet_lab.eth0_mac= (kernel command line) the name eth0,
# swapping names with the NIC that has it. Runs before any network stack (see
# kvmnet-lab-nic-names.service); both NICs are still down then, so renames work.
set -eu
log() {
  echo "kvmnet-lab-nic-names: $*"
  echo "kvmnet-lab-nic-names: $*" >/dev/kmsg 2>/dev/null || true
}
mac=
for w in $(cat /proc/cmdline); do
  case "$w" in kvmnet_lab.eth0_mac=*) mac="${w#*=}" ;; esac
done
[ -n "$mac" ] || { log "no kvmnet_lab.eth0_mac= on the kernel command line; names left as they are"; exit 0; }
mac="$(printf '%s' "$mac" | tr 'A-F' 'a-f')"
udevadm settle --timeout=60 || true
nic_of_mac() {
  for d in /sys/class/net/*; do
    [ -e "$d/device" ] || continue # physical NICs only
    if [ "$(cat "$d/address" 2>/dev/null)" = "$1" ]; then echo "${d##*/}"; return 0; fi
  done
  return 1
}
i=0
until cur="$(nic_of_mac "$mac")"; do
  i=$((i + 1))
  [ "$i" -lt 120 ] || { log "no NIC with MAC $mac after 60 s"; exit 1; }
  sleep 0.5
done
if [ "$cur" = eth0 ]; then
  log "eth0 is $mac (kernel order was right)"
  exit 0
fi
other=
if [ -e /sys/class/net/eth0 ]; then
  other="$(cat /sys/class/net/eth0/address)"
  ip link set dev eth0 down
  ip link set dev eth0 name kvlnicswap
fi
ip link set dev "$cur" down
ip link set dev "$cur" name eth0
[ -z "$other" ] || ip link set dev kvlnicswap name "$cur"
log "swapped: $mac was $cur, now eth0${other:+; $other was eth0, now $cur}"
EOF2
chmod 755 "$ROOT/usr/local/sbin/kvmnet-lab-nic-names"
cat >"$ROOT/etc/systemd/system/kvmnet-lab-nic-names.service" <<'EOF2'
[Unit]
Description=kvmnet lab: the slirp NIC (by MAC) is eth0
DefaultDependencies=no
Wants=systemd-udevd.service network-pre.target
After=systemd-udevd.service systemd-udev-trigger.service
Before=network-pre.target ifupdown-pre.service networking.service systemd-networkd.service NetworkManager.service
Before=shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/kvmnet-lab-nic-names

[Install]
WantedBy=sysinit.target
EOF2
chroot "$ROOT" systemctl enable kvmnet-lab-nic-names.service >&2
[ -L "$ROOT/etc/systemd/system/sysinit.target.wants/kvmnet-lab-nic-names.service" ] || die "kvmnet-lab-nic-names.service not enabled"
# A small initramfs. Debian's MODULES=most packs every storage, filesystem and NIC driver
# (a 36 MB initrd here) that the kernel unpacks and udev walks at every boot, under TCG.
# MODULES=list with the root disk's drivers (loaded explicitly), and a hook that adds the
# NIC drivers without loading them: udev loads those by modalias, as it did with "most",
# so blacklist= on the kernel command line still keeps one out (pciPersistence.test.ts
# boots once with e1000 bound from the initramfs and once with blacklist=e1000).
sed -i 's/^MODULES=.*/MODULES=list/' "$ROOT/etc/initramfs-tools/initramfs.conf"
grep -qx 'MODULES=list' "$ROOT/etc/initramfs-tools/initramfs.conf" || die "initramfs.conf: no MODULES= line to set"
printf '%s\n' virtio_pci virtio_blk ext4 >>"$ROOT/etc/initramfs-tools/modules"
cat >"$ROOT/etc/initramfs-tools/hooks/kvmnet-lab-nics" <<'EOF2'
#!/bin/sh
# The lab's NIC drivers in the initramfs, loaded by udev (modalias), not by name.
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
manual_add_modules virtio_net e1000
EOF2
chmod 755 "$ROOT/etc/initramfs-tools/hooks/kvmnet-lab-nics"
mount -t proc proc "$ROOT/proc"
chroot "$ROOT" update-initramfs -u -k all >&2
umount "$ROOT/proc"

chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/debootstrap

# --- kernel, initrd ------------------------------------------------------------------
kernel="$(printf '%s\n' "$ROOT"/boot/vmlinuz-* | sort -V | tail -n1)"
initrd="$(printf '%s\n' "$ROOT"/boot/initrd.img-* | sort -V | tail -n1)"
if [ ! -f "$kernel" ] || [ ! -f "$initrd" ]; then die "no kernel/initrd in $ROOT/boot"; fi
cp "$kernel" "$TMP/vmlinuz"
cp "$initrd" "$TMP/initrd.img"
chmod 644 "$TMP/vmlinuz" "$TMP/initrd.img"

# --- raw ext4 image --------------------------------------------------------------------
used_mb=$(du -s -m --one-file-system "$ROOT" | cut -f1)
size_mb=$(( used_mb * 13 / 10 + 1024 ))
log "rootfs uses ${used_mb} MiB; making a ${size_mb} MiB ext4 image"
truncate -s "${size_mb}M" "$TMP/rootfs.img"
mkfs.ext4 -q -F -L kvmnet-lab -E root_owner=0:0 -d "$ROOT" "$TMP/rootfs.img" >&2
rm -rf --one-file-system "$ROOT"

printf '%s' "$RECIPE" >"$TMP/recipe.txt"
echo "built $(date -u +%FT%TZ) in $(( $(date +%s) - T0 )) s" >"$TMP/.complete"
chmod 755 "$TMP"
rm -rf --one-file-system "$OUT" # a partial dir without .complete (cannot happen via rename, but be safe)
mv -T "$TMP" "$OUT"
TMP=""
log "built $OUT in $(( $(date +%s) - T0 )) s ($(du -sh --apparent-size "$OUT/rootfs.img" | cut -f1) apparent, $(du -sh "$OUT/rootfs.img" | cut -f1) on disk)"
printf '%s\n' "$OUT"
