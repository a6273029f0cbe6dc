#!/usr/bin/env bash
# Tier-3 lab image builder (see /work/shared/guide/TESTING.md, "Tier 3 — lab VM").
#
# Builds a Debian 12 (bookworm) root filesystem with debootstrap and packs it for
# test/lab/labHost.ts, which boots it with qemu-system-x86_64 (TCG, q35 + intel-iommu).
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
#   but disabled, as on a stock Debian host;
# - no machine-id (labHost passes systemd.machine_id= per boot), serial getty on
#   ttyS0 autologs root in (debug only: the serial line is a log file);
# - fstab with pass 0 (no fsck under TCG), empty resolv.conf (no DNS in the lab).
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
  local f uri suites
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

# eth0 must be the slirp NIC (virtio-net, lowest PCI slot): make e1000 (a passthrough
# candidate) always load after virtio_net, so it never registers first. The initramfs
# carries modprobe.d, so rebuild it.
cat >"$ROOT/etc/modprobe.d/kvmnet-lab.conf" <<'EOF2'
softdep e1000 pre: virtio_net
EOF2
mount -t proc proc "$ROOT/proc"
chroot "$ROOT" update-initramfs -u -k all >&2
umount "$ROOT/proc"

chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/debootstrap

# --- kernel, initrd ------------------------------------------------------------------
kernel="$(ls -1 "$ROOT"/boot/vmlinuz-* | sort -V | tail -n1)"
initrd="$(ls -1 "$ROOT"/boot/initrd.img-* | sort -V | tail -n1)"
[ -f "$kernel" ] && [ -f "$initrd" ] || die "no kernel/initrd in $ROOT/boot"
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
