#!/usr/bin/env bash
# Install everything fabriclab needs, idempotently, on Debian 12 / Ubuntu 22.04+.
#
#   - Debian packages (apt-get, as root): Python venv support.
#   - A virtual environment in .venv, made from the system interpreter /usr/bin/python3
#     with --system-site-packages (so Debian's Python modules, e.g. mininet, are visible),
#     with fabriclab installed in it (editable) together with its test dependencies.
#
# Re-running is cheap: apt-get runs only for missing packages, pip only when
# pyproject.toml changed since the last install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY=/usr/bin/python3
APT_PACKAGES=(python3 python3-venv python3-pip)

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

[ -x "$PY" ] || die "$PY not found after installing python3"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "fabriclab needs Python >= 3.10; $PY is $("$PY" -V 2>&1)"

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PY" -m venv --system-site-packages "$VENV"
fi

stamp="$VENV/.fabriclab-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV/bin/python" -c 'import fabriclab' 2>/dev/null; then
  say "installing fabriclab and its Python dependencies into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]" >&2
  echo "$want" > "$stamp"
fi
