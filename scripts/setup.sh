#!/usr/bin/env bash
# Install everything fabriclab needs, idempotently, on Debian 12 / Ubuntu 22.04+.
#
#   - Debian packages (apt-get, as root): Python venv support, and for the Mininet engine
#     Mininet, Open vSwitch, iperf3, ethtool, tcpdump, clang/llvm/libbpf-dev (eBPF).
#   - Open vSwitch started if it is not running (userspace datapath where the kernel has
#     no openvswitch module).
#   - A virtual environment in .venv, made from the system interpreter /usr/bin/python3
#     with --system-site-packages (so Debian's Python modules, e.g. mininet, are visible),
#     with fabriclab installed in it (editable) together with its test dependencies.
#   - The simulator's compiled core (`fabriclab build-core`: its hot modules compiled with
#     Cython, gcc and python3-dev; same results, about 1.5 x faster), rebuilt when they change.
#
# Re-running is cheap: apt-get runs only for missing packages, pip only when
# pyproject.toml changed since the last install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY=/usr/bin/python3
APT_PACKAGES=(python3 python3-venv python3-pip
              mininet openvswitch-switch iperf3 ethtool iputils-ping iproute2 tcpdump
              tshark clang llvm libbpf-dev gcc python3-dev)

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "Debian packages missing (${missing[*]}); run as root, or: sudo apt-get install -y ${missing[*]}"
  command -v apt-get >/dev/null || die "apt-get not found: fabriclab's set-up supports Debian 12 and Ubuntu 22.04+"
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# Open vSwitch's userspace datapath sends every switch port's packets through one AF_PACKET
# socket, created with the default send buffer (net.core.wmem_default, 208 KB on Debian).
# Packets queued in the ports' qdiscs count against it, so a small buffer silently drops
# whatever does not fit: raise the default (never lower it) before Open vSwitch opens it.
WMEM=67108864
if [ "$(id -u)" = 0 ] && [ "$(sysctl -n net.core.wmem_default)" -lt "$WMEM" ]; then
  say "raising net.core.wmem_default to $WMEM (Open vSwitch's packet socket holds the switch queues)"
  sysctl -q -w net.core.wmem_default=$WMEM
fi
# It reads each port through an AF_PACKET socket made with the default receive buffer
# (net.core.rmem_default): GSE's GSP daemon (gse.placement: leaf) hands a leaf's bridge what a
# grant releases at once, hundreds of frames, more than 208 KB holds.  Ports are opened per
# run, so no restart is needed.
RMEM=8388608
if [ "$(id -u)" = 0 ] && [ "$(sysctl -n net.core.rmem_default)" -lt "$RMEM" ]; then
  say "raising net.core.rmem_default to $RMEM (Open vSwitch reads each port through a packet socket)"
  sysctl -q -w net.core.rmem_default=$RMEM
fi
if [ "$(id -u)" = 0 ] && [ "$(sysctl -n net.core.rmem_max)" -lt "$RMEM" ]; then
  sysctl -q -w net.core.rmem_max=$RMEM
fi
ovs_tb() { ss -0 -m -p 2>/dev/null | awk '/ovs-vswitchd/ { if (match($0, /tb[0-9]+/)) print substr($0, RSTART+2, RLENGTH-2) }' | head -1; }
if ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
  tb="$(ovs_tb)"
  if [ -n "$tb" ] && [ "$tb" -lt "$WMEM" ] && [ "$(id -u)" = 0 ]; then
    if [ -z "$(ovs-vsctl --timeout=5 list-br | grep -v '^flb')" ]; then
      say "restarting Open vSwitch so that its packet socket gets the larger send buffer"
      /usr/share/openvswitch/scripts/ovs-ctl restart --system-id=random --no-monitor >&2 || true
    else
      say "warning: Open vSwitch runs other bridges, so it was not restarted; its packet socket's send buffer ($tb bytes) limits emulated queues until it is"
    fi
  fi
fi
if ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "Open vSwitch is not running; start it as root: /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random --no-monitor"
  say "starting Open vSwitch"
  # ovs-ctl warns that it cannot raise ulimit in containers; that is harmless.
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random --no-monitor >&2 || true
  ovs-vsctl --timeout=10 show >/dev/null || die "Open vSwitch did not start (see /var/log/openvswitch/)"
fi

[ -x "$PY" ] || die "$PY not found after installing python3"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "fabriclab needs Python >= 3.10; $PY is $("$PY" -V 2>&1)"

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PY" -m venv --system-site-packages "$VENV"
fi

stamp="$VENV/.fabriclab-installed"
want="$(cat "$ROOT/pyproject.toml" "$0" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV/bin/python" -c 'import fabriclab' 2>/dev/null; then
  say "installing fabriclab and its Python dependencies into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test,emu,native]" >&2
  echo "$want" > "$stamp"
fi

# The simulator's compiled core (fabriclab/native.py): nothing to do when it is current.
"$VENV/bin/python" -m fabriclab.cli -q build-core >&2 \
  || die "compiling the simulator's core failed (needs gcc and python3-dev); fabriclab still runs it as Python with FABRICLAB_PURE_PYTHON=1"

# The eBPF switch-port program, compiled now so that a run does not wait for clang.
"$VENV/bin/python" -c 'from fabriclab.emu.bpfport import compile_program; compile_program()' >&2 \
  || die "compiling the eBPF switch-port program failed (needs clang, llvm, libbpf-dev)"
