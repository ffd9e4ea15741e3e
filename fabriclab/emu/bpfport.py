"""The eBPF switch-port program (``bpf/port.c``) and its Python handle.

Every switch port of the emulated fabric is the switch-side veth of a link, in the root
namespace.  HTB shapes that interface to the link rate (a bfifo under it holds the
backlog), and this program, on the interface's ``clsact`` egress hook, does what the
kernel has no qdisc for here (no ``red``, no ``netem``): RED/ECN marking, HPCC's in-band
telemetry (INT), and per-port counters cheap enough to read for every port every few
milliseconds.

Phantom-queue approximation
---------------------------
The program cannot see the HTB backlog, so it keeps its own estimate of it, a *phantom
queue*.  clsact egress runs just before the packet is enqueued to the root qdisc, so the
program counts a packet when it **enters** the port's qdisc, adding ``skb->len`` (the L2
length, which is also what HTB charges), and drains the phantom queue at **exactly** the
configured rate between packets::

    q = max(0, q - (now - last) * rate / 8e9) + len

This equals the real FIFO backlog (plus the part of the head packet HTB has not yet "paid
for") as long as

* HTB actually sends at ``rate`` whenever it has a backlog (it is the only class, with
  ``rate == ceil`` equal to the configured rate), and
* nothing is dropped after the hook: a packet dropped by a full bfifo is still counted
  (the estimate is then too high until the queue empties; bfifo drops are visible in
  ``tc -s qdisc``).

HTB's burst allowance lets it send slightly ahead of the rate after an idle period, so the
real backlog can be a little smaller than the estimate; the estimate never lags behind it.

Marking happens at **enqueue**, on the queue the packet joins (including itself), whereas
the simulator (``fabriclab.sim.fabric``) marks at dequeue on the queue left behind.  In a
steady state both see the same queue; the emulator reacts one queueing delay earlier.

Only untagged Ethernet carrying IPv4 whose ECN field is ECT(0) or ECT(1) can be marked
(set to CE, IPv4 header checksum patched).  Everything else is counted and passed
unchanged.  The program never drops a packet.

In-band telemetry (HPCC)
------------------------
A RoCEv2 data frame (UDP to port 4791, BTH opcode 0x04) with ``INT_FLAG`` set in BTH byte 8
carries an INT area after the BTH (``fabriclab.wire.roce``, "HPCC: INT"; in scapy
``fabriclab.wire.layers.IntArea``).  While the area has room (``hops < max_hops <= 5``) the
program appends one record and increments ``hops``:

* ``ts_ns``: ``bpf_ktime_get_ns()``, the CLOCK_MONOTONIC time the packet entered the port
  (``time.monotonic_ns()`` in the agents; the same clock in every namespace);
* ``tx_bytes``: the port's ``tx_bytes`` counter including this packet, mod 2^32 -- like
  the counter, it counts bytes *entering* the port, so between two records it grows at the
  arrival rate, which exceeds the shaped rate while the queue builds.  The bytes that have
  *left* the port by ``ts_ns`` are ``tx_bytes - qlen_bytes - frame length`` (the frame's
  L2 length is the same at every hop);
* ``qlen_bytes``: the phantom queue the packet finds ahead of it (drained to ``ts_ns``,
  before its own length is added), i.e. what a packet dequeued now would leave behind --
  the quantity HPCC's switches report at dequeue.  (RED marks on the queue *including*
  the packet; ``qlen_bytes`` is that minus the frame length.)  Saturates at 2^32 - 1;
* ``rate_kbps``: the configured rate / 1000.

All three port values come from the same locked update that moves the phantom queue and
the counters, so a record is consistent with ``read()``.  The frames are sent with UDP
checksum 0 (``SO_NO_CHECK``), so writing into them needs no checksum fix; an INT frame
with a non-zero UDP checksum is not stamped.  ``int_stamped`` counts stamped frames and
``int_skipped`` INT frames left as they were: non-zero UDP checksum, area full or larger
than 5 records or not inside the datagram, or a GSO super-packet.  IPv4 fragments are
never INT frames.  A frame can be both stamped and CE-marked.

How Python reaches the maps
---------------------------
``tc`` loads a fresh copy of the object's maps for every filter it adds, which gives state
per port that disappears with the interface.  The maps are not pinned (bpffs need not be
mounted); instead the program id is read from ``tc filter show`` and the maps are opened
from it with the ``bpf(2)`` syscall (program id -> program info -> map ids -> map fds).
Ids are global, so this also works for an interface in another network namespace.
Reading a port is one ``BPF_MAP_LOOKUP_ELEM`` syscall, with no subprocess.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .state import EmuError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("bpf") / "port.c"
BUILD_DIR = Path(__file__).with_name("bpf") / "build"
BPF_HELPERS_H = Path("/usr/include/bpf/bpf_helpers.h")
INSTALL_HINT = "install clang llvm libbpf-dev (apt-get install clang llvm libbpf-dev)"

# Our filter's slot on the egress hook.  A fixed preference and handle let attach/detach
# find exactly this filter even if something else is attached to the same hook.
FILTER_PREF = 49152
FILTER_HANDLE = 1

NSEC_PER_SEC = 1_000_000_000
# rate/8 is multiplied by up to 1 s of nanoseconds in the program; keep it in 64 bits.
MAX_RATE_BPS = (2**64 // NSEC_PER_SEC) * 8

# Map value layouts, mirrored from struct port_cfg / struct port_state in port.c.
MAX_ING = 16  # ingress ports a switch tells apart in PFC mode (MAX_ING in port.c)
# rate_bps, kmin, kmax, pmax_u32, ecn_enabled, pfc, prio_data, prio_ctrl, n_ing, tag_mac,
# ing_mac[MAX_ING]
CFG = struct.Struct(f"=QIIIIIIIIQ{MAX_ING}Q")
# spin lock (+pad), queue, last_ns, tx_b, tx_p, ce, ect, maxq, int_stamped, int_skipped,
# data_bytes, unknown_bytes, ing_bytes[MAX_ING], ctrl_queue, ctrl_last_ns
STATE = struct.Struct(f"=I4x11Q{MAX_ING}Q2Q")
PAUSE = struct.Struct("=Q")
PAUSED_BIT = 1 << 63


def mac_word(mac: bytes | str) -> int:
    """A MAC address as the program compares it: its 6 bytes, in memory order, in a u64."""
    if isinstance(mac, str):
        mac = bytes.fromhex(mac.replace(":", ""))
    if len(mac) != 6:
        raise ValueError(f"a MAC address has 6 bytes, got {mac!r}")
    return int.from_bytes(mac + b"\0\0", "little")


@dataclass(frozen=True)
class PfcPort:
    """A switch port's PFC-mode settings (see port.c, struct port_cfg)."""

    prio_data: int       # skb->priority of data frames: the HTB data class, e.g. 0x10020
    prio_ctrl: int       # ... of the other IPv4 frames: the control class
    tag_mac: bytes       # this port's MAC, written as the source of every frame leaving
    ing_macs: tuple      # ingress port i's peer MAC (what frames from it carry as source)

    def __post_init__(self):
        if len(self.ing_macs) > MAX_ING:
            raise BpfError(f"PFC tells apart at most {MAX_ING} ingress ports per switch, "
                           f"got {len(self.ing_macs)}")


@dataclass(frozen=True)
class PfcCounters:
    """A consistent snapshot of a PFC-mode port: data bytes that entered its queue (all,
    per ingress port, from no known port) and the data queue now."""

    data_bytes: int
    queue_bytes: int
    ing_bytes: tuple
    unknown_bytes: int


class BpfError(EmuError):
    """The port program cannot be built, attached or read (the message says why)."""


@dataclass(frozen=True)
class PortCounters:
    """One reading of a port; byte counts are L2 (Ethernet header included)."""

    tx_bytes: int
    tx_pkts: int
    ce_marks: int
    ect_pkts: int
    queue_bytes: int  # phantom queue, drained to the time of the reading
    max_queue_bytes: int
    int_stamped: int = 0  # HPCC INT frames this port appended a record to
    int_skipped: int = 0  # INT frames it left unstamped (checksum set, area full, ...)
    ctrl_queue_bytes: int = 0  # PFC mode: the control class's phantom queue, drained


# --------------------------------------------------------------------------- bpf(2)

_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "arm64": 280}
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ANY = 0
BPF_F_LOCK = 4  # copy the value under its bpf_spin_lock (consistent snapshot)

# Field offsets in struct bpf_prog_info / bpf_map_info (include/uapi/linux/bpf.h); the
# kernel accepts a shorter info_len than its own struct and fills only that much.
_PROG_INFO_LEN = 80  # up to and including name[16]
_PROG_NR_MAP_IDS, _PROG_MAP_IDS = 52, 56
_MAP_INFO_LEN = 40  # up to and including name[16]
_MAP_VALUE_SIZE, _MAP_NAME = 12, 24

_libc = None


def _sys_bpf(cmd: int, attr: ctypes.Array) -> int:
    """Call bpf(2); returns its non-negative result or raises OSError."""
    global _libc
    if _libc is None:
        nr = _BPF_SYSCALL.get(platform.machine())
        if nr is None:
            raise BpfError(f"bpf(2) syscall number unknown for {platform.machine()}")
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint)
        _libc = (lib.syscall, nr)
    fn, nr = _libc
    ret = fn(nr, cmd, ctypes.addressof(attr), len(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(cmd={cmd}): {os.strerror(err)}")
    return ret


def _fd_by_id(cmd: int, obj_id: int) -> int:
    attr = ctypes.create_string_buffer(struct.pack("=III", obj_id, 0, 0))
    return _sys_bpf(cmd, attr)


def _obj_info(fd: int, size: int, prefill: bytes = b"") -> bytes:
    info = ctypes.create_string_buffer(prefill.ljust(size, b"\0"), size)
    attr = ctypes.create_string_buffer(struct.pack("=IIQ", fd, size, ctypes.addressof(info)))
    _sys_bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info.raw


def _prog_map_ids(prog_id: int) -> list[int]:
    fd = _fd_by_id(BPF_PROG_GET_FD_BY_ID, prog_id)
    try:
        ids = (ctypes.c_uint32 * 16)()
        pre = bytearray(_PROG_INFO_LEN)
        struct.pack_into("=IQ", pre, _PROG_NR_MAP_IDS, len(ids), ctypes.addressof(ids))
        raw = _obj_info(fd, _PROG_INFO_LEN, bytes(pre))
        (n,) = struct.unpack_from("=I", raw, _PROG_NR_MAP_IDS)
        return list(ids[: min(n, len(ids))])
    finally:
        os.close(fd)


def _map_name_and_value_size(fd: int) -> tuple[str, int]:
    raw = _obj_info(fd, _MAP_INFO_LEN)
    (value_size,) = struct.unpack_from("=I", raw, _MAP_VALUE_SIZE)
    name = raw[_MAP_NAME:_MAP_NAME + 16].split(b"\0", 1)[0].decode()
    return name, value_size


class _MapEntry:
    """Key 0 of a one-entry ARRAY map, with the syscall arguments built once."""

    def __init__(self, fd: int, value_size: int):
        self.fd = fd
        self._key = ctypes.c_uint32(0)
        self._value = ctypes.create_string_buffer(value_size)
        self._lookup = ctypes.create_string_buffer(32)
        struct.pack_into("=I4xQQQ", self._lookup, 0, fd, ctypes.addressof(self._key),
                         ctypes.addressof(self._value), 0)

    def read(self, flags: int = 0) -> bytes:
        struct.pack_into("=Q", self._lookup, 24, flags)
        _sys_bpf(BPF_MAP_LOOKUP_ELEM, self._lookup)
        return self._value.raw

    def write(self, value: bytes) -> None:
        buf = ctypes.create_string_buffer(value, len(self._value))
        attr = ctypes.create_string_buffer(struct.pack(
            "=I4xQQQ", self.fd, ctypes.addressof(self._key), ctypes.addressof(buf), BPF_ANY))
        _sys_bpf(BPF_MAP_UPDATE_ELEM, attr)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --------------------------------------------------------------------------- compile

def _clang() -> str:
    clang = shutil.which("clang")
    if clang is None:
        raise BpfError(f"clang not found: {INSTALL_HINT}")
    if not BPF_HELPERS_H.exists():
        raise BpfError(f"{BPF_HELPERS_H} not found (libbpf headers): {INSTALL_HINT}")
    return clang


@functools.cache
def _clang_version(clang: str) -> str:
    # Part of the cache key; asked once per process (attach compiles for every port).
    res = subprocess.run([clang, "--version"], check=False, capture_output=True, text=True)
    return res.stdout


def _cflags() -> list[str]:
    flags = ["-O2", "-g", "-Wall", "-target", "bpf"]
    # linux/types.h includes asm/types.h, which Debian keeps in the multiarch directory.
    arch = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
        platform.machine(), platform.machine())
    multiarch = Path(f"/usr/include/{arch}-linux-gnu")
    if multiarch.is_dir():
        flags.append(f"-I{multiarch}")
    return flags


def compile_program(force: bool = False) -> Path:
    """Compile ``bpf/port.c`` with clang; return the object file.

    The object is cached under ``bpf/build/port-<key>.o``, where the key hashes the source,
    the clang version and the flags, so an edit or a new compiler rebuilds it and an
    unchanged tree never runs clang again.  ``force`` rebuilds regardless.
    """
    clang = _clang()
    flags = _cflags()
    try:
        source = SOURCE.read_bytes()
    except OSError as e:
        raise BpfError(f"cannot read the port program source {SOURCE}: {e}") from e
    key = hashlib.sha256(b"\0".join(
        [source, _clang_version(clang).encode(), " ".join(flags).encode()])).hexdigest()[:16]
    obj = BUILD_DIR / f"port-{key}.o"
    if obj.exists() and not force:
        return obj
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    ignore = BUILD_DIR / ".gitignore"
    if not ignore.exists():  # build products never belong in the repository
        ignore.write_text("*\n")
    # Compile to a temporary name and rename: concurrent builders (parallel test runs,
    # several emulations) never see a half-written object.
    fd, tmp = tempfile.mkstemp(prefix=".port-", suffix=".o", dir=BUILD_DIR)
    os.close(fd)
    try:
        cmd = [clang, *flags, "-c", str(SOURCE), "-o", tmp]
        log.debug("compiling the port program: %s", " ".join(cmd))
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if res.returncode != 0:
            raise BpfError(f"clang failed on {SOURCE}:\n{res.stderr.strip()}\n"
                           f"(if headers are missing: {INSTALL_HINT})")
        os.replace(tmp, obj)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    # Objects of earlier sources are never used again (tc has already loaded whatever
    # they were built for), so they are pruned rather than left to pile up.
    for old in BUILD_DIR.glob("port-*.o"):
        if old != obj:
            old.unlink(missing_ok=True)
    log.info("compiled the port program to %s", obj)
    return obj


# --------------------------------------------------------------------------- the port

def _pmax_u32(pmax: float) -> int:
    return max(0, min(2**32 - 1, int(pmax * 2**32)))


def _validate(ifname: str, rate_bps: int, kmin_bytes: int, kmax_bytes: int,
              pmax: float) -> None:
    if not 0 < rate_bps <= MAX_RATE_BPS:
        raise BpfError(f"{ifname}: rate_bps must be in (0, {MAX_RATE_BPS}], got {rate_bps}")
    if not 0 <= kmin_bytes <= kmax_bytes < 2**32:
        raise BpfError(f"{ifname}: need 0 <= kmin_bytes <= kmax_bytes < 2^32, "
                       f"got {kmin_bytes}, {kmax_bytes}")
    if not 0.0 <= pmax <= 1.0:
        raise BpfError(f"{ifname}: pmax must be in [0, 1], got {pmax}")


class PortProgram:
    """The port program attached to one interface's egress, and its maps."""

    def __init__(self, ifname: str, netns: str | None, prog_id: int, added_clsact: bool,
                 cfg: _MapEntry, state: _MapEntry, pause: _MapEntry, owner: bool = True):
        self.ifname = ifname
        self.netns = netns
        self.prog_id = prog_id
        self._added_clsact = added_clsact
        self._cfg = cfg
        self._state = state
        self._pause = pause
        self._owner = owner  # attach()ed here (detach removes it), or only opened
        self._bytes_per_s = 0
        self._pfc: PfcPort | None = None
        self._attached = True

    def __repr__(self) -> str:
        where = f" in {self.netns}" if self.netns else ""
        return f"PortProgram({self.ifname}{where}, prog {self.prog_id})"

    # ---- tc

    @staticmethod
    def _tc(netns: str | None, *args: str) -> subprocess.CompletedProcess:
        cmd = ["tc", *args]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        log.debug("%s", " ".join(cmd))
        return subprocess.run(cmd, check=False, capture_output=True, text=True)

    @classmethod
    def _tc_ok(cls, netns: str | None, ifname: str, *args: str) -> str:
        res = cls._tc(netns, *args)
        if res.returncode != 0:
            where = f" (netns {netns})" if netns else ""
            raise BpfError(f"{ifname}{where}: `tc {' '.join(args)}` failed: "
                           f"{(res.stderr or res.stdout).strip()}")
        return res.stdout

    @classmethod
    def _has_clsact(cls, netns: str | None, ifname: str) -> bool:
        out = cls._tc(netns, "-j", "qdisc", "show", "dev", ifname)
        if out.returncode != 0:
            where = f" in netns {netns}" if netns else ""
            raise BpfError(f"cannot attach the port program: interface {ifname!r} not "
                           f"found{where} ({(out.stderr or out.stdout).strip()})")
        return any(q.get("kind") == "clsact" for q in json.loads(out.stdout or "[]"))

    @classmethod
    def _find_prog_id(cls, netns: str | None, ifname: str) -> int:
        out = cls._tc_ok(netns, ifname, "-j", "filter", "show", "dev", ifname, "egress",
                         "pref", str(FILTER_PREF))
        try:
            for f in json.loads(out or "[]"):
                prog = f.get("options", {}).get("prog", {})
                if "id" in prog:
                    return int(prog["id"])
        except (ValueError, AttributeError):
            pass
        # Older tc without JSON for bpf filters: "... direct-action not_in_hw id 42 ..."
        text = cls._tc_ok(netns, ifname, "filter", "show", "dev", ifname, "egress",
                          "pref", str(FILTER_PREF))
        m = re.search(r"\bid (\d+)\b", text)
        if not m:
            raise BpfError(f"{ifname}: loaded the port program but found no program id "
                           f"in `tc filter show`:\n{text}")
        return int(m.group(1))

    # ---- life cycle

    @staticmethod
    def _open_maps(ifname: str, prog_id: int, obj: str) -> dict:
        """The program's maps cfg, st and pause, checked against the layouts here."""
        maps: dict[str, _MapEntry] = {}
        try:
            for map_id in _prog_map_ids(prog_id):
                fd = _fd_by_id(BPF_MAP_GET_FD_BY_ID, map_id)
                name, size = _map_name_and_value_size(fd)
                entry = _MapEntry(fd, size)
                if name in ("cfg", "st", "pause"):
                    maps[name] = entry
                else:
                    entry.close()
            for name, layout in (("cfg", CFG), ("st", STATE), ("pause", PAUSE)):
                if name not in maps or len(maps[name]._value) != layout.size:
                    raise BpfError(f"{ifname}: program {prog_id} has no map {name!r} of "
                                   f"{layout.size} bytes (maps: {sorted(maps)}); "
                                   f"is {obj} stale? try compile_program(force=True)")
        except BaseException:
            for m in maps.values():
                m.close()
            raise
        return maps

    @classmethod
    def open(cls, ifname: str, prog_id: int, rate_bps: int,
             pfc: PfcPort | None = None) -> PortProgram:
        """The maps of a program another process attached (e.g. pfcd's view of a port);
        :meth:`detach` only closes them."""
        try:
            m = cls._open_maps(ifname, prog_id, "the object")
        except OSError as e:
            raise BpfError(f"{ifname}: cannot open program {prog_id}'s maps: {e}") from e
        port = cls(ifname, None, prog_id, False, m["cfg"], m["st"], m["pause"], owner=False)
        port._bytes_per_s = rate_bps // 8
        port._pfc = pfc
        return port

    @classmethod
    def attach(cls, ifname: str, rate_bps: int, kmin_bytes: int, kmax_bytes: int,
               pmax: float, ecn_enabled: bool = True,
               netns: str | None = None, pfc: PfcPort | None = None) -> PortProgram:
        """Load the program on ``ifname``'s clsact egress and configure it.

        ``rate_bps`` must be the rate HTB shapes the interface to: the phantom queue
        drains at it.  ``netns`` runs tc inside that namespace; the maps are opened from
        here (ids are global).  Raises BpfError on any failure, leaving nothing behind.
        """
        _validate(ifname, rate_bps, kmin_bytes, kmax_bytes, pmax)
        obj = compile_program()
        added = not cls._has_clsact(netns, ifname)
        if added:
            cls._tc_ok(netns, ifname, "qdisc", "add", "dev", ifname, "clsact")
        maps: dict[str, _MapEntry] = {}
        try:
            # "replace" (not "add") so a filter left by a crashed run is simply replaced.
            cls._tc_ok(netns, ifname, "filter", "replace", "dev", ifname, "egress",
                       "pref", str(FILTER_PREF), "handle", str(FILTER_HANDLE),
                       "bpf", "direct-action", "object-file", str(obj), "section", "tc")
            prog_id = cls._find_prog_id(netns, ifname)
            maps = cls._open_maps(ifname, prog_id, str(obj))
            port = cls(ifname, netns, prog_id, added, maps["cfg"], maps["st"], maps["pause"])
            port._pfc = pfc
            port.set_config(rate_bps, kmin_bytes, kmax_bytes, pmax, ecn_enabled)
        except OSError as e:  # from bpf(2): ids vanish if the interface went meanwhile
            for m in maps.values():
                m.close()
            cls._remove(netns, ifname, added)
            raise BpfError(f"{ifname}: cannot open the port program's maps: {e}") from e
        except BaseException:
            for m in maps.values():
                m.close()
            cls._remove(netns, ifname, added)
            raise
        log.debug("attached the port program to %s%s (prog %d, %.3g bit/s, K %d..%d B, "
                 "pmax %g, ecn %s)", ifname, f" in {netns}" if netns else "", prog_id,
                 rate_bps, kmin_bytes, kmax_bytes, pmax, "on" if ecn_enabled else "off")
        return port

    def set_config(self, rate_bps: int, kmin_bytes: int, kmax_bytes: int, pmax: float,
                   ecn_enabled: bool = True) -> None:
        """Change the port's rate and RED parameters (takes effect at the next packet).

        The program reads the config without a lock, so a packet racing this write can
        see a mix of old and new fields once; that is harmless for a settings change.
        """
        _validate(self.ifname, rate_bps, kmin_bytes, kmax_bytes, pmax)
        if not self._attached:
            raise BpfError(f"{self.ifname}: the port program is detached")
        p = self._pfc
        if p is None:
            pfc = (0, 0, 0, 0, 0, *([0] * MAX_ING))
        else:
            macs = [mac_word(m) for m in p.ing_macs] + [0] * (MAX_ING - len(p.ing_macs))
            pfc = (1, p.prio_data, p.prio_ctrl, len(p.ing_macs), mac_word(p.tag_mac), *macs)
        self._cfg.write(CFG.pack(rate_bps, kmin_bytes, kmax_bytes, _pmax_u32(pmax),
                                 1 if ecn_enabled else 0, *pfc))
        self._bytes_per_s = rate_bps // 8
        self._settings = (kmin_bytes, kmax_bytes, pmax, ecn_enabled)

    def set_rate(self, rate_bps: int) -> None:
        """Change the port's rate only (a degraded link: HTB was changed to it)."""
        self.set_config(rate_bps, *self._settings)

    def read(self) -> PortCounters:
        """The port's counters now: one map lookup, no subprocess.

        The phantom queue is stored as of the last packet; it is drained here to the
        present with the program's own formula (CLOCK_MONOTONIC is bpf_ktime_get_ns).
        The syscall buffers are reused, so one port must not be read from two threads
        at once.
        """
        if not self._attached:
            raise BpfError(f"{self.ifname}: the port program is detached")
        v = STATE.unpack_from(self._state.read(BPF_F_LOCK))
        _, q, last, tx_b, tx_p, ce, ect, maxq, int_st, int_sk = v[:10]
        q = self._drained(q, last)
        cq, clast = v[-2:]  # the control class drains in real time (never paused)
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if cq and now > clast:
            cq = max(0, cq - min(now - clast, NSEC_PER_SEC) * self._bytes_per_s // NSEC_PER_SEC)
        return PortCounters(tx_bytes=tx_b, tx_pkts=tx_p, ce_marks=ce, ect_pkts=ect,
                            queue_bytes=q, max_queue_bytes=maxq, int_stamped=int_st,
                            int_skipped=int_sk, ctrl_queue_bytes=cq)

    def _clock(self) -> int:
        """The clock the queue drains by: CLOCK_MONOTONIC, or in PFC mode the active clock
        (time while the data class is not paused; port.c, map pause)."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if self._pfc is None:
            return now
        (w,) = PAUSE.unpack_from(self._pause.read())
        return w & ~PAUSED_BIT if w & PAUSED_BIT else now - w

    def _drained(self, q: int, last: int) -> int:
        """The queue stored as of ``last``, drained to now with the program's formula."""
        now = self._clock()
        if now > last and q:
            q = max(0, q - min(now - last, NSEC_PER_SEC) * self._bytes_per_s // NSEC_PER_SEC)
        return q

    def paused_real_ns(self) -> int:
        """PFC mode: the real time the data class has been paused so far (now minus the
        active clock); 0 otherwise."""
        if self._pfc is None:
            return 0
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self._clock()

    def read_pfc(self) -> PfcCounters:
        """The PFC-mode counters: one locked map lookup."""
        v = STATE.unpack_from(self._state.read(BPF_F_LOCK))
        return PfcCounters(data_bytes=v[10], queue_bytes=self._drained(v[1], v[2]),
                           ing_bytes=v[12:12 + MAX_ING], unknown_bytes=v[11])

    def set_pause_word(self, word: int) -> None:
        """The active clock's word (port.c, map pause): pfcd writes it at pause and resume."""
        self._pause.write(PAUSE.pack(word))

    @classmethod
    def _remove(cls, netns: str | None, ifname: str, clsact: bool) -> None:
        """Delete our filter, and the clsact qdisc if we added it; ignore what is gone."""
        if clsact:  # deleting clsact deletes its filters with it
            cls._tc(netns, "qdisc", "del", "dev", ifname, "clsact")
        else:
            cls._tc(netns, "filter", "del", "dev", ifname, "egress",
                    "pref", str(FILTER_PREF), "handle", str(FILTER_HANDLE), "bpf")

    def detach(self) -> None:
        """Remove the program (and the clsact qdisc if attach added it); close the maps.

        Idempotent, and quiet if the interface (or its namespace) is already gone.
        """
        if not self._attached:
            return
        self._attached = False
        if self._owner:
            self._remove(self.netns, self.ifname, self._added_clsact)
        self._cfg.close()
        self._state.close()
        self._pause.close()
        log.debug("detached the port program from %s", self.ifname)

    def __enter__(self) -> PortProgram:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()
