"""DCQCN's reaction point, driven directly (no engine): each rule against the paper's formula."""

import pytest

from fabriclab.cc_algorithms.dcqcn import Dcqcn, DcqcnParams

G = 100_000_000_000  # 100 Gb/s


def rp(**kw) -> Dcqcn:
    return Dcqcn(DcqcnParams.defaults(G, **kw))


def test_starts_at_line_rate_without_timer():
    """No slow start: line rate, no window, nothing scheduled until the first CNP."""
    d = rp()
    assert d.rate_bps == G and d.window_bytes is None and d.next_timer_ns is None


def test_cnp_cut_and_alpha_update():
    """On CNP: R_T = R_C, R_C = R_C(1 - alpha/2), alpha = (1-g) alpha + g (paper §3.2)."""
    d = rp(g=1 / 16)
    d.on_cnp(1000)
    assert d.target_bps == G
    assert d.rate_bps == G // 2  # alpha starts at 1
    assert d.alpha == pytest.approx((1 - 1 / 16) * 1 + 1 / 16)
    a = d.alpha
    r = d.rate_bps
    d.on_cnp(2000)  # within one alpha period: no decay
    assert d.rate_bps == int(r * (1 - a / 2))
    assert d.target_bps == r
    assert d.next_timer_ns == 2000 + 55_000


def test_alpha_decays_once_per_period_without_cnp():
    """alpha = (1-g) alpha per K without a CNP; applied when the next CNP arrives."""
    g = 1 / 256
    d = rp(g=g)
    d.on_cnp(0)
    a0 = d.alpha
    assert d.alpha_at(10 * 55_000 + 5) == pytest.approx(a0 * (1 - g) ** 10)
    r = d.rate_bps
    d.on_cnp(10 * 55_000 + 5)
    assert d.rate_bps == int(r * (1 - a0 * (1 - g) ** 10 / 2))


def test_fast_recovery_halves_the_gap_each_timer_event():
    """First F increase events: R_C = (R_T + R_C)/2, so the gap halves each time."""
    d = rp()
    d.on_cnp(0)
    gap = d.target_bps - d.rate_bps
    t = 0
    for k in range(1, 6):
        t = d.next_timer_ns
        assert d.stage() == "fast_recovery"
        d.on_timer(t)
        assert d.target_bps == G
        assert abs((d.target_bps - d.rate_bps) - gap / 2 ** k) <= 2
    assert d.timer_count == 5


def test_additive_then_hyper_increase():
    """After F timer events the target grows by R_AI per event; once both counters pass F,
    by R_HAI."""
    d = rp(rate_ai_bps=40_000_000, rate_hai_bps=200_000_000, byte_counter_bytes=1_000_000)
    d.on_cnp(0)
    d.on_cnp(1)  # second cut: target now below line rate
    for _ in range(5):
        d.on_timer(d.next_timer_ns)
    assert d.stage() == "additive"
    t0 = d.target_bps
    d.on_timer(d.next_timer_ns)
    assert d.target_bps == t0 + 40_000_000
    # drive the byte counter past F as well
    for _ in range(7):
        d.on_send(d.next_timer_ns - 1, 1_000_000)
    assert d.byte_count > 5
    while d.timer_count <= 5:
        d.on_timer(d.next_timer_ns)
    assert d.stage() == "hyper"
    t1 = d.target_bps
    d.on_timer(d.next_timer_ns)
    assert d.target_bps == min(G, t1 + 200_000_000)


def test_byte_counter_triggers_increase():
    """Every B bytes sent is an increase event (paper §3.3)."""
    d = rp(byte_counter_bytes=10_000)
    d.on_cnp(0)
    r = d.rate_bps
    d.on_send(10, 9_999)
    assert d.rate_bps == r
    d.on_send(11, 1)
    assert d.rate_bps > r and d.byte_count == 1


def test_rate_floor_and_recovery_to_line_rate():
    """Rate never drops below the minimum, and with no more CNPs returns to line rate,
    after which the timer stops."""
    d = rp(min_rate_bps=1_000_000_000)
    for i in range(40):
        d.on_cnp(i)
    assert d.rate_bps == 1_000_000_000
    t = d.next_timer_ns
    for _ in range(100_000):
        if d.next_timer_ns is None:
            break
        t = d.next_timer_ns
        d.on_timer(t)
    assert d.rate_bps == G and d.next_timer_ns is None


def test_early_timer_call_is_ignored():
    d = rp()
    d.on_cnp(0)
    r = d.rate_bps
    d.on_timer(d.next_timer_ns - 1)
    assert d.rate_bps == r


def test_params_are_checked():
    with pytest.raises(ValueError):
        DcqcnParams.defaults(0)
    with pytest.raises(ValueError):
        DcqcnParams.defaults(G, g=1.5)


def _cut_to(d: Dcqcn, n: int) -> None:
    for k in range(n):  # n cuts in a row: a deep cut, as in a congested permutation
        d.on_cnp(k)


def test_mlx_counts_stages_by_the_timer_alone():
    """The HPCC simulator's Mellanox model (RateIncEventMlx): F fast-recovery events, one
    additive increase, then hyper increase on every timer event, with no byte sent."""
    d = rp(variant="mlx", rate_ai_bps=40_000_000, rate_hai_bps=200_000_000)
    assert not d.wants_sends  # no byte counter
    _cut_to(d, 2)
    seen = []
    for _ in range(8):
        t0, r0 = d.target_bps, d.rate_bps
        st = d.stage()
        d.on_timer(d.next_timer_ns)
        seen.append(st)
        step = {"fast_recovery": 0, "additive": 40_000_000, "hyper": 200_000_000}[st]
        assert d.target_bps == min(G, t0 + step)
        assert d.rate_bps == min(G, (d.target_bps + r0) // 2)
    assert seen == ["fast_recovery"] * 5 + ["additive"] + ["hyper"] * 2


def test_paper_variant_never_hypers_without_the_byte_counter():
    """At a low rate the 10 MB byte counter does not expire: the paper's stage stays
    additive however many timer events pass (what the k=8 permutation showed); mlx is in
    hyper increase after F + 2."""
    paper, mlx = rp(), rp(variant="mlx")
    for d in (paper, mlx):
        _cut_to(d, 12)
        for _ in range(40):
            d.on_send(d.next_timer_ns - 1, 1058)  # a frame per period: far from 10 MB
            d.on_timer(d.next_timer_ns)
    assert paper.stage() == "additive" and mlx.stage() == "hyper"
    # from the same cut, 40 timer periods raise paper's target by 35 x R_AI at most, mlx's
    # by 33 x R_HAI
    assert mlx.target_bps - paper.target_bps >= 33 * (200_000_000 - 40_000_000) - 1


def test_variant_comes_from_the_spec():
    from fabriclab import spec as S
    s = S.validate({"name": "x", "workload": [{"kind": "permutation", "bytes": 1}],
                    "dcqcn": {"variant": "mlx"}}, "test")
    assert DcqcnParams.from_spec(s.dcqcn, G).variant == "mlx"
    with pytest.raises(S.SpecError):
        S.validate({"name": "x", "workload": [{"kind": "permutation", "bytes": 1}],
                    "dcqcn": {"variant": "fast"}}, "test")
