"""Integer time and rate helpers (htsim style: named units, no float seconds in the core).

Simulated time is an integer number of nanoseconds everywhere in fabriclab; rates are
integer bits per second.  Convert at the edges with these helpers.
"""

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
#: bits per byte x ns per second: ``nbytes * BIT_NS / rate_bps`` is the time, in ns, that
#: ``nbytes`` take on a link of ``rate_bps`` (exact as a fraction; round it where it meets
#: a clock)
BIT_NS = 8 * NS_PER_S


def us(x: float) -> int:
    """Microseconds -> integer nanoseconds."""
    return round(x * NS_PER_US)


def ms(x: float) -> int:
    """Milliseconds -> integer nanoseconds."""
    return round(x * NS_PER_MS)


def gbps(x: float) -> int:
    """Gigabits per second -> integer bits per second."""
    return round(x * 1_000_000_000)


def mbps(x: float) -> int:
    """Megabits per second -> integer bits per second."""
    return round(x * 1_000_000)


def serialization_ns(nbytes: int, rate_bps: int) -> int:
    """Time to put ``nbytes`` on a link of ``rate_bps``, rounded up to whole nanoseconds."""
    return -(-nbytes * BIT_NS // rate_bps)


def bytes_in_ns(duration_ns: int, rate_bps: int) -> int:
    """Bytes a link of ``rate_bps`` carries in ``duration_ns`` (rounded down)."""
    return duration_ns * rate_bps // BIT_NS


def wire_bytes(message_bytes: int, mtu_bytes: int, header_bytes: int) -> int:
    """W(S): bytes on the wire for a message of S payload bytes, ceil(S/MTU) headers added."""
    return message_bytes + -(-message_bytes // mtu_bytes) * header_bytes
