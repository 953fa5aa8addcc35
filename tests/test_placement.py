"""Placement (``Runtime(placement=...)``), the cost model it reads, and ``out=``.

Devices of a known rate are :class:`~offload.host.modelled.ModelledDevice` instances (exact
results, time held to ``latency + records / rate``); each test gives its Runtime its own
:class:`~offload.costmodel.CostModel`, so no test learns from another.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import offload
from offload.backend import Availability, Backend, BackendError, Capabilities, Result
from offload.costmodel import PRIORS, CostModel, costs_path, op_key
from offload.host.cpu import CpuBackend
from offload.host.modelled import ModelledDevice
from offload.ops import REGISTRY, OpCall
from offload.runtime import PLACEMENTS, Runtime

KEYS = np.arange(1, 50_001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def cpu_xxh64(keys: np.ndarray, seed: int = 0) -> np.ndarray:
    return Runtime(["cpu"], cost_model=CostModel()).xxh64(keys, seed)


def taught(model: CostModel, backend: str, key: str, fixed: float, per_record: float) -> CostModel:
    """``model`` with observations of an exact ``fixed + per_record * n`` cost at 1k..1M records."""
    for n in (1_000, 4_000, 16_000, 64_000, 256_000, 1_000_000):
        model.observe(backend, key, n, 8 * n, fixed + per_record * n)
    return model


# -- the cost model ------------------------------------------------------------------------------


def test_a_fit_recovers_a_linear_cost_from_its_observations() -> None:
    model = taught(CostModel(), "sim", "xxh64/fixed", 2e-3, 5e-8)
    for n in (1_000, 50_000, 3_000_000):
        assert model.predict("sim", "xxh64/fixed", n, 8 * n) == pytest.approx(2e-3 + 5e-8 * n, rel=0.05)


def test_a_fit_follows_a_cost_per_record_that_changes_with_size() -> None:
    """The CPU goes parallel at 64k records: per-record cost halves there."""
    model = CostModel()
    sizes = (1_000, 4_000, 16_000, 262_144, 1 << 20, 1 << 22)
    cost = {n: 1e-5 + (2e-9 if n < 65_536 else 1e-9) * n for n in sizes}
    for n, s in cost.items():
        model.observe("cpu", "xxh64/fixed", n, 8 * n, s)
    for n, s in cost.items():
        assert model.predict("cpu", "xxh64/fixed", n, 8 * n) == pytest.approx(s, rel=0.25)


def test_a_fit_keeps_to_its_own_side_of_a_break() -> None:
    """A cost that jumps at 100k records (a backend going parallel): fitted across the jump the
    prediction just above it is far off; each side apart, it is the cost."""

    def cost(n: float) -> float:
        return 5e-6 + 0.4e-9 * n if n < 100_000 else 80e-6 + 0.2e-9 * n

    model = CostModel()
    for n in (25_000, 50_000, 70_000, 100_000, 140_000, 200_000, 400_000):
        for _ in range(2):
            model.observe("cpu", "xxh64/fixed", n, 8 * n, cost(n))
    across = model.predict("cpu", "xxh64/fixed", 120_000)
    generation = model.generation
    model.set_breaks("cpu", "fixed", (100_000,))
    assert model.generation == generation + 1 and model.breaks("cpu", "fixed") == (100_000,)
    assert abs(across - cost(120_000)) / cost(120_000) > 0.1
    for n in (30_000, 90_000, 120_000, 300_000):
        assert model.predict("cpu", "xxh64/fixed", n) == pytest.approx(cost(n), rel=0.02)
    assert model.breaks("cpu", "var") == ()
    model.set_breaks("cpu", "fixed", (100_000,))
    assert model.generation == generation + 1  # the same breaks again: nothing refitted


def test_refit_takes_in_observations_made_since_the_last_fit(monkeypatch: Any) -> None:
    import offload.costmodel

    monkeypatch.setattr(offload.costmodel, "REFIT_S", 1e9)  # no refit by time in this test
    model = CostModel()
    for _ in range(64):  # past the early refits: the model now refits only by time
        model.observe("cpu", "xxh64/fixed", 100_000, 800_000, 1e-4)
    before = model.predict("cpu", "xxh64/fixed", 100_000)
    for _ in range(8):  # the machine got three times slower
        model.observe("cpu", "xxh64/fixed", 100_000, 800_000, 3e-4)
    assert model.predict("cpu", "xxh64/fixed", 100_000) == before
    generation = model.generation
    model.refit()
    assert model.generation == generation + 1
    assert model.predict("cpu", "xxh64/fixed", 100_000) == pytest.approx(3e-4, rel=0.02)


def test_the_runtime_tells_the_model_where_the_cpu_goes_parallel() -> None:
    from offload.host.cpu.backend import LIGHT_FACTOR, LIGHTEST_FACTOR

    rt = Runtime(["cpu"], cost_model=CostModel(), options={"cpu": {"threads": 2, "parallel_threshold": 1000}})
    rt.xxh64(KEYS[:10])
    assert rt.costs.breaks("cpu", "fixed") == (1000 * LIGHT_FACTOR, 1000 * LIGHTEST_FACTOR)
    assert rt.costs.breaks("cpu", "numbers") == (1000 * LIGHT_FACTOR,)
    assert rt.costs.breaks("cpu", "var") == (1000, 1000 * LIGHT_FACTOR)
    assert rt.costs.breaks("cpu", "sequences") == ()
    one = CpuBackend(threads=1)
    rt1 = Runtime([one], cost_model=CostModel())
    assert rt1.costs.breaks(f"cpu@{id(one):x}", "fixed") == ()


def test_a_backend_never_seen_costs_its_prior_and_coefficients_stay_non_negative() -> None:
    model = CostModel()
    fixed, per_record, _ = PRIORS["fpga"]
    assert model.predict("fpga", "xxh64/fixed", 1000, 8000) == pytest.approx(fixed + per_record * 1000)
    model.observe("fpga", "xxh64/fixed", 1000, 8000, 1e-9)  # faster than any fixed cost allows
    fit = model.fit("fpga", "xxh64/fixed", 1000, 8000)
    assert min(fit.fixed, fit.per_record, fit.per_byte) >= 0.0


def test_variable_length_batches_have_a_per_byte_cost() -> None:
    model = CostModel()
    for n, width in [(1000, 8), (1000, 64), (10_000, 8), (10_000, 64), (100_000, 8), (100_000, 64)]:
        model.observe("cpu", "xxh64/var", n, n * width, 1e-5 + 1e-9 * n + 5e-10 * n * width)
    assert model.predict("cpu", "xxh64/var", 50_000, 50_000 * 32) == pytest.approx(
        1e-5 + 1e-9 * 50_000 + 5e-10 * 50_000 * 32, rel=0.15
    )


def test_the_model_persists_per_machine_and_ignores_a_broken_file(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("OFFLOAD_COSTS", raising=False)
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path))
    path = costs_path()
    assert path is not None and path.parent == tmp_path / "costs"
    model = taught(CostModel(path), "sim", "xxh64/fixed", 2e-3, 5e-8)
    model.observe("cpu@1234", "xxh64/fixed", 10, 80, 1.0, persist=False)  # a caller's instance
    model.save()
    again = CostModel(path)
    assert again.predict("sim", "xxh64/fixed", 10_000) == model.predict("sim", "xxh64/fixed", 10_000)
    assert again.observations("cpu@1234", "xxh64/fixed") == []
    path.write_text("{not json")
    assert CostModel(path).observations("sim", "xxh64/fixed") == []
    monkeypatch.setenv("OFFLOAD_COSTS", "none")
    assert costs_path() is None
    monkeypatch.setenv("OFFLOAD_COSTS", str(tmp_path / "elsewhere.json"))
    assert costs_path() == tmp_path / "elsewhere.json"


def test_a_cost_model_pickles_with_its_observations() -> None:
    model = taught(CostModel(), "sim", "xxh64/fixed", 2e-3, 5e-8)
    again = pickle.loads(pickle.dumps(model))
    assert again.predict("sim", "xxh64/fixed", 5000) == model.predict("sim", "xxh64/fixed", 5000)


def test_the_runtime_learns_from_its_own_calls_after_the_first() -> None:
    rt = Runtime(["cpu"], cost_model=CostModel())
    for _ in range(4):
        rt.xxh64(KEYS[:1000])
    assert len(rt.costs.observations("cpu", "xxh64/fixed")) == 3
    model = rt.stats()["cost_model"]
    assert model["cpu"]["xxh64/fixed"]["observations"] == 3
    assert op_key("hash_bucket", "var", "farmhash64") == "hash_bucket:farmhash64/var"


# -- placement -----------------------------------------------------------------------------------


def test_placement_is_one_of_four_and_defaults_by_whether_backends_are_given() -> None:
    assert PLACEMENTS == ("fastest", "balanced", "offload", "ordered")
    expected = r"unknown placement 'quick': expected 'fastest', 'balanced', 'offload' or 'ordered'"
    with pytest.raises(ValueError, match=expected):
        Runtime(placement="quick")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cost_model must be a CostModel or None, got dict"):
        Runtime(cost_model={})  # type: ignore[arg-type]
    assert Runtime().placement == "fastest"
    assert Runtime(["cpu"]).placement == "ordered"
    assert Runtime(["cpu"], placement="balanced").placement == "balanced"


def test_fastest_sends_a_small_batch_to_the_cpu_and_a_large_one_to_a_faster_device() -> None:
    device = ModelledDevice(rate=5e9, latency=2e-3, name="fast")  # 2 ms a call, then 5 G records/s
    model = taught(CostModel(), f"fast@{id(device):x}", "xxh64/fixed", 2e-3, 2e-10)
    taught(model, "cpu", "xxh64/fixed", 5e-6, 2e-9)
    rt = Runtime([device, "cpu"], placement="fastest", cost_model=model)
    assert (rt.xxh64(KEYS[:100]) == cpu_xxh64(KEYS[:100])).all()
    assert rt.last_call()["segments"] == [("cpu", 0, 100)]
    big = np.resize(KEYS, 2_000_000)
    assert (rt.xxh64(big) == cpu_xxh64(big)).all()
    assert rt.last_call()["segments"] == [("fast", 0, big.shape[0])]
    decision = rt.stats()["decisions"][-1]
    assert decision["placement"] == "fastest" and decision["records"] == big.shape[0]
    predicted = decision["predicted_s"]
    assert decision["predicted_chosen_s"] == predicted["fast"] == min(predicted.values())
    assert decision["measured_s"] > 0


def test_ordered_follows_the_list_and_offload_puts_devices_first() -> None:
    device = ModelledDevice(rate=1e9, name="dev")
    rt = Runtime(["cpu", device], cost_model=CostModel())
    rt.xxh64(KEYS[:10])
    assert rt.last_call()["segments"] == [("cpu", 0, 10)]
    rt = Runtime(["cpu", device], placement="offload", cost_model=CostModel())
    rt.xxh64(KEYS[:10])
    assert rt.last_call()["segments"] == [("dev", 0, 10)]


def test_balanced_splits_across_devices_of_the_same_rate_and_stitches_in_order() -> None:
    a, b = ModelledDevice(rate=2e7, name="a"), ModelledDevice(rate=2e7, name="b")
    model = taught(CostModel(), f"a@{id(a):x}", "xxh64/fixed", 1e-4, 5e-8)
    taught(model, f"b@{id(b):x}", "xxh64/fixed", 1e-4, 5e-8)
    taught(model, "cpu", "xxh64/fixed", 5e-6, 1e-6)  # a slow CPU: not worth a part
    rt = Runtime([a, b, "cpu"], placement="balanced", cost_model=model)
    got = rt.xxh64(KEYS, 3)
    assert (got == cpu_xxh64(KEYS, 3)).all()
    segs = rt.last_call()["segments"]
    assert sorted(s[0] for s in segs) == ["a", "b"]
    assert [s[1:] for s in sorted(segs, key=lambda s: s[1])][0][0] == 0
    assert sum(hi - lo for _, lo, hi in segs) == KEYS.shape[0]
    assert abs((segs[0][2] - segs[0][1]) - KEYS.shape[0] / 2) < 0.05 * KEYS.shape[0]
    decision = rt.stats()["decisions"][-1]
    assert (
        decision["predicted_chosen_s"]
        == decision["predicted_s"]["balanced"]
        < min(v for k, v in decision["predicted_s"].items() if k != "balanced")
    )
    assert rt.stats()["calls"] == 1 and rt.stats()["records"] == KEYS.shape[0]


def test_balanced_keeps_a_small_batch_or_a_lopsided_pair_on_one_backend() -> None:
    a, b = ModelledDevice(rate=2e7, name="a"), ModelledDevice(rate=2e5, name="b")
    model = taught(CostModel(), f"a@{id(a):x}", "xxh64/fixed", 1e-4, 5e-8)
    taught(model, f"b@{id(b):x}", "xxh64/fixed", 1e-4, 5e-6)
    taught(model, "cpu", "xxh64/fixed", 5e-6, 1e-6)
    rt = Runtime([a, b, "cpu"], placement="balanced", cost_model=model)
    rt.xxh64(KEYS[:1000])
    assert rt.last_call()["segments"] == [("a", 0, 1000)]
    rt.xxh64(KEYS)
    assert [s[0] for s in rt.last_call()["segments"]] == ["a"]


class _Counted(ModelledDevice):
    """A modelled device that counts the runtime's probes of it (``supports``)."""

    def __init__(self, *args: Any, up: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.up, self.probes = up, 0

    def availability(self) -> Availability:
        return Availability(self.up, "" if self.up else "switched off")

    def supports(self, call: OpCall, batch: Any) -> str | None:
        self.probes += 1
        return super().supports(call, batch)


def test_balanced_probes_only_the_backends_its_plan_names() -> None:
    a, slow = ModelledDevice(rate=2e7, name="a"), _Counted(rate=2e5, name="slow")
    model = taught(CostModel(), f"a@{id(a):x}", "xxh64/fixed", 1e-4, 5e-8)
    taught(model, f"slow@{id(slow):x}", "xxh64/fixed", 1e-4, 5e-6)
    rt = Runtime([a, slow], placement="balanced", cost_model=model)
    for _ in range(3):
        assert (rt.xxh64(KEYS, 1) == cpu_xxh64(KEYS, 1)).all()
    assert rt.last_call()["segments"] == [("a", 0, KEYS.shape[0])]
    assert slow.probes == 0


def test_balanced_runs_a_batch_no_split_gains_from_like_fastest_with_its_fallback() -> None:
    down, b = _Counted(rate=2e7, name="down", up=False), ModelledDevice(rate=2e5, name="b")
    model = taught(CostModel(), f"down@{id(down):x}", "xxh64/fixed", 1e-4, 5e-8)
    taught(model, f"b@{id(b):x}", "xxh64/fixed", 1e-4, 5e-6)
    rt = Runtime([down, b], placement="balanced", cost_model=model)
    with pytest.warns(RuntimeWarning, match="backend 'down' is unavailable: switched off; running on b"):
        assert (rt.xxh64(KEYS, 6) == cpu_xxh64(KEYS, 6)).all()
    assert rt.last_call()["segments"] == [("b", 0, KEYS.shape[0])]
    assert [(f["from"], f["to"], f["cause"]) for f in rt.stats()["fallbacks"]] == [
        ("down", "b", "unavailable")
    ]


def test_balanced_plans_again_over_the_backends_that_are_up() -> None:
    a, b = ModelledDevice(rate=2e7, name="a"), ModelledDevice(rate=2e7, name="b")
    down = _Counted(rate=2e7, name="down", up=False)
    model = CostModel()
    for dev in (a, b, down):
        taught(model, f"{dev.name}@{id(dev):x}", "xxh64/fixed", 1e-4, 5e-8)
    taught(model, "cpu", "xxh64/fixed", 5e-6, 1e-6)
    rt = Runtime([a, b, down, "cpu"], placement="balanced", cost_model=model)
    assert (rt.xxh64(KEYS, 4) == cpu_xxh64(KEYS, 4)).all()
    assert sorted(s[0] for s in rt.last_call()["segments"]) == ["a", "b"]
    assert sum(hi - lo for _, lo, hi in rt.last_call()["segments"]) == KEYS.shape[0]


class _Failing(Backend):
    """A device that completes the first half of every batch and then loses the rest."""

    name = "flaky"

    def availability(self) -> Availability:
        return Availability(True, "")

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=frozenset(REGISTRY))

    def run(self, call: OpCall, batch: Any) -> Result:
        res = CpuBackend(threads=1).run(call, batch)
        half = batch.n // 2
        raise BackendError("lost", cause="device_lost", completed=half, partial=res[:half])


@pytest.mark.parametrize("verify", ["off", "full"])
def test_balanced_parts_fall_back_and_verify_like_any_call(verify: str) -> None:
    flaky, dev = _Failing(), ModelledDevice(rate=2e7, name="dev")
    model = taught(CostModel(), f"flaky@{id(flaky):x}", "xxh64/fixed", 1e-4, 5e-8)
    taught(model, f"dev@{id(dev):x}", "xxh64/fixed", 1e-4, 5e-8)
    taught(model, "cpu", "xxh64/fixed", 5e-6, 1e-6)
    rt = Runtime([flaky, dev, "cpu"], placement="balanced", verify=verify, cost_model=model)  # type: ignore[arg-type]
    out = np.empty(KEYS.shape, np.uint64)
    assert rt.xxh64(KEYS, 5, out=out) is out
    assert (out == cpu_xxh64(KEYS, 5)).all()
    st = rt.stats()
    assert [f["cause"] for f in st["fallbacks"]] == ["device_lost"]
    assert st["fallbacks"][0]["from"] == "flaky" and st["fallbacks"][0]["to"] == "cpu"
    assert sorted({s[0] for s in st["last_call"]["segments"]}) == ["cpu", "dev", "flaky"]
    if verify == "full":
        assert st["verified_records"] == KEYS.shape[0]


def test_a_named_backend_overrides_placement() -> None:
    rt = Runtime(placement="balanced", cost_model=CostModel())
    rt.xxh64(KEYS, backend="cpu")
    assert rt.last_call()["segments"] == [("cpu", 0, KEYS.shape[0])]


def test_a_runtime_pickles_with_its_placement() -> None:
    rt = pickle.loads(pickle.dumps(Runtime(["cpu"], placement="balanced", cost_model=CostModel())))
    assert rt.placement == "balanced" and isinstance(rt.costs, CostModel)


def test_a_modelled_device_takes_its_modelled_time_and_refuses_bad_rates() -> None:
    dev = ModelledDevice(rate=1e6, latency=1e-3)
    rt = Runtime([dev], cost_model=CostModel())
    rt.xxh64(KEYS[:10_000])
    assert rt.stats()["by_backend"]["modelled"]["seconds"] >= 0.011
    with pytest.raises(ValueError, match=r"rate must be a finite number > 0, got 0"):
        ModelledDevice(rate=0)
    with pytest.raises(ValueError, match=r"latency must be a finite number >= 0, got -1"):
        ModelledDevice(rate=1, latency=-1)


# -- out= ----------------------------------------------------------------------------------------

FIXED_WIDTH = {
    "xxh32": ({"seed": 1}, "keys"),
    "xxh64": ({"seed": 1}, "keys"),
    "hash_bucket": ({"num_buckets": 1000, "hash": "cityhash64"}, "keys"),
    "fid": ({"slot": 3}, "keys"),
    "farmhash64": ({}, "keys"),
    "cityhash64": ({"seed": 9}, "keys"),
    "murmur3_32": ({"seed": 2}, "strings"),
    "sigrid_hash": ({"salt": 4, "max_value": 10_000}, "ints"),
    "decimal_hash_bucket": ({"num_buckets": 77}, "ints"),
    "bucketize": ({"boundaries": [0.5, 10.0, 1e5]}, "floats"),
}
INPUTS = {
    "keys": KEYS[:5000].reshape(50, 100),
    "strings": np.array([b"x" * (i % 40) for i in range(3000)], dtype=object),
    "ints": np.arange(-2000, 2000, dtype=np.int64) * 7919,
    "floats": np.linspace(-5.0, 2e5, 4000),
}


def test_out_is_on_every_fixed_width_operator_and_nowhere_else() -> None:
    assert sorted(FIXED_WIDTH) == sorted(n for n, e in REGISTRY.items() if e.result_dtype is not None)


@pytest.mark.parametrize("op", sorted(FIXED_WIDTH))
@pytest.mark.parametrize("backend", ["cpu", "sim-like"])
def test_out_holds_the_result_of_every_fixed_width_operator(op: str, backend: str) -> None:
    params, inp = FIXED_WIDTH[op]
    values = INPUTS[inp]
    rt = Runtime(["cpu"] if backend == "cpu" else [ModelledDevice(1e9)], cost_model=CostModel())
    want = getattr(Runtime(["cpu"], cost_model=CostModel()), op)(values, **params)
    out = np.full(want.shape, 7, want.dtype)
    assert getattr(rt, op)(values, **params, out=out) is out
    assert (out == want).all()
    out2 = np.zeros_like(want)
    assert getattr(offload, op)(values, **params, out=out2) is out2 and (out2 == want).all()


def test_out_writes_in_place_over_its_own_input_and_into_strided_views() -> None:
    keys = KEYS[:1000].copy()
    want = cpu_xxh64(keys)
    rt = Runtime(["cpu"], cost_model=CostModel())
    assert (rt.xxh64(keys, out=keys) == want).all() and (keys == want).all()
    wide = np.zeros((1000, 2), np.uint64)
    rt.xxh64(KEYS[:1000], out=wide[:, 1])
    assert (wide[:, 1] == want).all() and (wide[:, 0] == 0).all()
    col = pa.array([b"a", b"b", b"a"]).dictionary_encode()
    out = np.empty(3, np.uint64)
    assert (rt.xxh64(col, out=out) == rt.xxh64(np.array([b"a", b"b", b"a"], dtype=object))).all()


def test_out_errors_are_exact() -> None:
    rt = Runtime(["cpu"], cost_model=CostModel())
    keys = KEYS[:10]
    with pytest.raises(TypeError, match=r"out must be a numpy array, got list"):
        rt.xxh64(keys, out=[0] * 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"out has dtype int64, xxh64 returns uint64"):
        rt.xxh64(keys, out=np.empty(10, np.int64))
    with pytest.raises(ValueError, match=r"out has shape \(9,\), the result of xxh64 has shape \(10,\)"):
        rt.xxh64(keys, out=np.empty(9, np.uint64))
    ro = np.empty(10, np.uint64)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"out is read-only"):
        rt.xxh64(keys, out=ro)
    with pytest.raises(ValueError, match=r'out= writes numpy results: it cannot be used with output="arrow"'):
        rt.xxh64(keys, output="arrow", out=np.empty(10, np.uint64))
    with pytest.raises(ValueError, match=r'out= cannot hold nulls: use nulls="error" or a replacement value'):
        rt.xxh64(keys, nulls="null", out=np.empty(10, np.uint64))
    pair = r"out= is for operators with one result per record: delta_varint_encode returns a pair"
    with pytest.raises(ValueError, match=pair):
        rt.call("delta_varint_encode", [[1, 2]], out=np.empty(1, np.uint8))


# -- offload calibrate and offload backends ------------------------------------------------------


def test_calibrate_teaches_every_workload_and_saves_the_model(tmp_path: Any) -> None:
    from offload.calibrate import SHORT_RUNS, calibrate, workloads

    assert {(w.op, w.kind) for w in workloads(["xxh64", "bucketize", "delta_varint_decode"])} == {
        ("xxh64", "fixed"),
        ("xxh64", "var"),
        ("bucketize", "numbers"),
        ("delta_varint_decode", "encoded"),
    }
    with pytest.raises(ValueError, match=r"unknown operator 'xxh65': expected one of xxh32, xxh64, "):
        workloads(["xxh65"])
    model = CostModel(tmp_path / "costs.json")
    rt = Runtime(["cpu"], cost_model=model, fallback=False)
    res = calibrate(rt, ops=["xxh64", "delta_varint_decode"], sizes=[1000, 4000], budget_s=5.0)
    assert list(res["backends"]) == ["cpu"] and res["saved"] == str(tmp_path / "costs.json")
    for key in ("xxh64/fixed", "xxh64/var", "delta_varint_decode/encoded"):
        # 2 sizes x 8 runs (short batches run SHORT_RUNS times; the warm-up run teaches nothing)
        assert len(model.observations("cpu", key)) == 2 * SHORT_RUNS
        assert res["model"]["cpu"][key]["observations"] == 2 * SHORT_RUNS
    assert CostModel(tmp_path / "costs.json").observations("cpu", "xxh64/fixed") == model.observations(
        "cpu", "xxh64/fixed"
    )


def test_calibrate_stops_before_a_size_that_would_overrun_its_budget() -> None:
    from offload.calibrate import calibrate

    # 1 us a record: 1,024 records take 1 ms (9 runs: 8 short ones and the warm-up), 2,048 eight
    # (25.6 ms so far); 4,096 would take 9 x 4.1 ms more: past 50 ms
    device = ModelledDevice(rate=1e6, name="dev")
    rt = Runtime([device], cost_model=CostModel(), fallback=False)
    calibrate(rt, ops=["xxh64"], sizes=[1 << k for k in range(10, 16)], budget_s=0.05, save=False)
    (learnt,) = {b for b, key in rt.costs.summary().items() if "xxh64/fixed" in key}  # "dev@<id>"
    sizes = {int(o[0]) for o in rt.costs.observations(learnt, "xxh64/fixed")}
    assert min(sizes) == 1024 and max(sizes) <= 2048


def test_the_cli_calibrates_and_backends_shows_what_was_learnt(
    tmp_path: Any, monkeypatch: Any, capsys: Any
) -> None:
    import offload.costmodel as costmodel
    from offload.cli import main

    path = tmp_path / "machine.json"
    monkeypatch.setenv("OFFLOAD_COSTS", str(path))
    monkeypatch.setattr(costmodel, "_MACHINE", None)  # this process's model, read from the new file
    assert main(["calibrate", "--backends", "cpu", "--ops", "xxh64", "--quick", "--budget", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "cpu\n    xxh64/fixed " in out and f"saved to {path}" in out
    assert path.is_file()
    monkeypatch.setattr(costmodel, "_MACHINE", None)
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "    xxh64/fixed " in out and "1k:" in out and "1M:" in out
    with pytest.raises(SystemExit):
        main(["calibrate", "--backends", "gpu"])
    assert "unknown backend 'gpu': expected one of cpu, sim, fpga, smartnic" in capsys.readouterr().err


def test_the_placement_bench_measures_every_target_as_a_ratio_or_a_bound() -> None:
    from offload.bench_placement import rows

    got = rows(quick=True)
    assert [r["name"].split(",")[0] for r in got] == [
        "placement fastest",
        "placement fastest",
        "placement balanced",
        "placement balanced",
        "cost model error",
        "cpu threads",
    ]
    for r in got:
        assert r["value"] is not None and r["target"] is not None
        assert r["target_kind"] == ("max" if r["name"].startswith("cost model") else "ratio")
        assert r["ratio"] is not None or r["target_kind"] == "max"
    assert "picked " in got[1]["note"] and "split: " in got[2]["note"]


def test_the_default_runtime_takes_its_placement_from_the_environment(monkeypatch: Any) -> None:
    import offload.runtime as runtime

    monkeypatch.setattr(runtime, "_DEFAULT", None)
    monkeypatch.setenv("OFFLOAD_PLACEMENT", "offload")
    assert runtime.default_runtime().placement == "offload"
    monkeypatch.setattr(runtime, "_DEFAULT", None)
    monkeypatch.setenv("OFFLOAD_PLACEMENT", "nearest")
    with pytest.raises(ValueError, match=r"OFFLOAD_PLACEMENT='nearest': expected 'fastest', 'balanced', "):
        runtime.default_runtime()
    monkeypatch.setattr(runtime, "_DEFAULT", None)
    monkeypatch.delenv("OFFLOAD_PLACEMENT")
    assert runtime.default_runtime().placement == "fastest"


@pytest.mark.parametrize("placement", ["fastest", "offload", "ordered"])
def test_every_placement_falls_back_without_losing_a_record(placement: str) -> None:
    flaky = _Failing()
    model = taught(CostModel(), f"flaky@{id(flaky):x}", "xxh64/fixed", 1e-6, 1e-12)  # predicted fastest
    rt = Runtime([flaky, "cpu"], placement=placement, verify="sample", cost_model=model)  # type: ignore[arg-type]
    assert (rt.xxh64(KEYS, 2) == cpu_xxh64(KEYS, 2)).all()
    half = KEYS.shape[0] // 2
    assert rt.last_call()["segments"] == [("flaky", 0, half), ("cpu", half, KEYS.shape[0])]
    assert [(f["from"], f["to"], f["cause"]) for f in rt.stats()["fallbacks"]] == [
        ("flaky", "cpu", "device_lost")
    ]
