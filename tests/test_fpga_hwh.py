"""The simulated PYNQ device's .hwh is generated, not hand-edited: it must match its generator."""

from offload.sim import make_hwh


def test_checked_in_hwh_matches_the_generator():
    assert make_hwh.OUT.read_text() == make_hwh.hwh, (
        "sim/offload_engine.hwh drifted: run python -m offload.sim.make_hwh"
    )
