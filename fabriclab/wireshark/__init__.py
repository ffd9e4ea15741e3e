"""Wireshark / tshark support: ``fabriclab.lua``, a Lua dissector for fabriclab's own
headers (the INT area, GSE container tag and SACK of RoCEv2 frames on UDP 4791, GSE REQUEST
and GRANT on UDP 4792 and 4793; see :mod:`fabriclab.wire.roce`), installed with the package.

    subprocess.run(["tshark", *tshark_args(), "-r", "h0.pcap", "-V"])

For Wireshark, copy :data:`LUA` into ``~/.local/lib/wireshark/plugins/``."""

from __future__ import annotations

from pathlib import Path

#: the dissector script
LUA = Path(__file__).with_name("fabriclab.lua")


def tshark_args() -> list[str]:
    """The tshark options that load the dissector: ``["-X", "lua_script:<LUA>"]``."""
    return ["-X", f"lua_script:{LUA}"]
