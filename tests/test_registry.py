"""The operator registry: every entry is complete, every layer that lists operators reads it, and an
operator registered from a test runs on the CPU backend and the reference engine.

Expected values come from each entry's golden function, never from another backend.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

import offload
from offload import engine_map, golden, ops, wire
from offload.batch import as_encoded, as_numbers, as_records, as_sequences
from offload.ops import REGISTRY, OpCall, Operator, Param, WireForm, make_call

RECORDS = [b"", b"a", b"abc", bytes(range(40)), "h\u00e9llo".encode()]
KEYS = np.array([0, 1, 2**64 - 1, 0x9E3779B97F4A7C15], np.uint64)
NUMBERS = np.array([-3.0, -0.0, 0.5, 2.0, np.nan, np.inf])
INTEGERS = np.array([0, 1, -1, 2**63 - 1, -(2**63)], np.int64)
SEQUENCES = [np.array([5, 3, 3, 10]), np.array([], np.int64), np.array([-(2**63), 2**63 - 1])]


def _inputs(entry: Operator) -> list[object]:
    """Batches of the entry's input kind, in the forms the public API takes."""
    if entry.inputs == "records":
        return [RECORDS, KEYS]
    if entry.inputs == "numbers":  # floats where the operator takes them (sigrid_hash: ids)
        return [NUMBERS if _takes(entry, NUMBERS.dtype) else INTEGERS]
    if entry.inputs == "sequences":
        return [SEQUENCES]
    off, data = golden_encode(SEQUENCES)
    return [(off, data)]


def _takes(entry: Operator, dtype: np.dtype) -> bool:
    try:
        next(p for p in entry.params if p.name == "dtype").check(dtype, {})
    except TypeError:
        return False
    return True


def golden_encode(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    parts = [golden.delta_varint_encode_seq(s.tolist()) for s in seqs]
    return np.cumsum([0] + [len(p) for p in parts]), np.frombuffer(b"".join(parts), np.uint8)


def _normalised(entry: Operator, values: object):
    return {
        "records": as_records,
        "numbers": as_numbers,
        "sequences": as_sequences,
        "encoded": lambda v: as_encoded(*v),
    }[entry.inputs](values)


def _expected(call: OpCall, batch) -> list[object]:
    return [ops.golden_result(call, batch.record(i)) for i in range(batch.n)]


def _as_list(entry: Operator, res) -> list[object]:
    if entry.result_dtype is not None:
        return np.asarray(res).ravel().tolist()
    o, d = res
    seg = [d[o[i] : o[i + 1]] for i in range(len(o) - 1)]
    return [s.tobytes() if entry.result == "encoded" else s.tolist() for s in seg]


ENTRIES = list(REGISTRY.values())


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_example_runs_on_the_cpu_equal_to_its_golden_function(entry):
    cpu = offload.Runtime(backends=["cpu"], fallback=False)
    for params in entry.examples:
        for values in _inputs(entry):
            batch = _normalised(entry, values)
            extra = {"dtype": batch.values.dtype} if entry.inputs == "numbers" else {}
            call = make_call(entry.name, **params, **extra)
            assert _as_list(entry, cpu.call(entry.name, values, **params)) == _expected(call, batch)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_entry_is_reachable_from_the_public_api(entry):
    """``offload.<op>`` and ``Runtime.<op>`` exist and take exactly the registry's parameters."""
    shown = [p.name for p in entry.params if p.shown]
    for fn in (getattr(offload, entry.name), getattr(offload.Runtime, entry.name)):
        sig = inspect.signature(fn)
        names = [
            n for n, p in sig.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD and n not in ("self",)
        ]
        assert names[len(names) - len(shown) :] == shown
        assert set(names) - set(shown) <= {"values", "x", "sequences", "offsets", "data"}
        assert {"backend", "verify"} <= set(sig.parameters)
    assert entry.name in offload.__all__


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_entry_names_real_pieces(entry):
    assert callable(entry.cpu_kernel())
    for code, _ in entry.op_codes().items():
        assert ops.by_code(code)[0] is entry
        assert code in engine_map.OP_CODES.values()
    pytest.importorskip("amaranth", reason="the hw extra is not installed (pip install 'offload[hw]')")
    for path in (entry.hw_core, entry.hw_lane):
        if path is not None:
            module, _, cls = path.partition(":")
            assert inspect.isclass(getattr(importlib.import_module(module), cls))


def test_every_engine_op_code_has_one_operator():
    owners = {code: ops.by_code(code) for code in engine_map.OP_CODES.values()}
    assert all(v is not None for v in owners.values()), owners
    assert engine_map.ops_mask() == sum(1 << c for c in owners)


def test_the_cpu_backend_lists_the_registry():
    from offload.host.cpu import CpuBackend

    assert CpuBackend().capabilities().ops == frozenset(REGISTRY)


def test_registration_checks_its_pieces():
    with pytest.raises(ValueError, match=r"^operator 'xxh64' is already registered$"):
        ops.register(REGISTRY["xxh64"])
    bad = Operator(
        "t_bad",
        "",
        "records",
        (),
        "uint64",
        lambda c, r: 0,
        lambda b, c, x: None,
        WireForm({None: "no/such/code"}),
    )
    with pytest.raises(ValueError, match=r"^t_bad: op codes \['no/such/code'\] are not all in "):
        ops.register(bad)
    assert "t_bad" not in REGISTRY
    chained = Operator(
        "t_chain",
        "",
        "records",
        (
            Param("a", lambda v, _: v, 0, needs=("b",)),
            Param("b", lambda v, _: v, 0, needs=("c",)),
            Param("c", lambda v, _: v, 0),
        ),
        "uint64",
        lambda c, r: 0,
        lambda b, c, x: None,
    )
    with pytest.raises(
        ValueError,
        match=r"^t_chain: parameter 'a' needs \['b'\], which are not "
        r"parameters without needs$",
    ):
        ops.register(chained)
    with pytest.raises(ValueError, match=r"^unknown operator 'nope': expected one of xxh32, "):
        make_call("nope")
    with pytest.raises(TypeError, match=r"^xxh64\(\) got an unexpected parameter 'salt'$"):
        make_call("xxh64", salt=1)
    with pytest.raises(TypeError, match=r"^fid\(\) missing required parameter 'slot'$"):
        make_call("fid")


# -- a throwaway operator, registered here, runs on the CPU backend and the reference engine ----


def _xorfold_golden(call: OpCall, record: bytes) -> int:
    return golden.xxh64(record, call.seed) ^ call.mask


def _xorfold_cpu(backend, call: OpCall, batch) -> np.ndarray:
    return np.array([_xorfold_golden(call, batch.record(i)) for i in range(batch.n)], np.uint64)


@pytest.fixture
def xorfold(monkeypatch):
    monkeypatch.setitem(engine_map.OP_CODES, "xorfold", 32)
    entry = ops.register(
        Operator(
            "xorfold",
            "xxh64 xor a mask",
            "records",
            (
                Param(
                    "mask",
                    lambda v, _: ops.check_int("mask", v, 0, 2**64 - 1, "[0, 2**64)"),
                    registers=("NUM_BUCKETS_LO", "NUM_BUCKETS_HI"),
                ),
                Param("seed", ops.seed_check(64), 0, ("SEED_LO", "SEED_HI")),
            ),
            "uint64",
            _xorfold_golden,
            _xorfold_cpu,
            WireForm({None: "xorfold"}),
            examples=({"mask": 0xFFFF},),
        )
    )
    yield entry
    ops.unregister("xorfold")


def test_a_registered_operator_runs_on_the_cpu_backend(xorfold):
    assert "xorfold" in offload.operators()
    assert offload.call("xorfold", KEYS[:1], mask=1, backend="cpu").tolist() == [
        golden.xxh64(KEYS[:1].tobytes(), 0) ^ 1
    ]
    rt = offload.Runtime(backends=["cpu"], verify="full")
    got = rt.call("xorfold", KEYS, mask=0xFF00, seed=3)
    assert got.tolist() == [golden.xxh64(k.tobytes(), 3) ^ 0xFF00 for k in KEYS]
    assert rt.stats()["verified_records"] == KEYS.size
    with pytest.raises(ValueError, match=r"^mask must be in \[0, 2\*\*64\), got -1$"):
        rt.call("xorfold", KEYS, mask=-1)


def test_a_registered_operator_runs_on_the_reference_engine(xorfold):
    call = make_call("xorfold", mask=0xABCDEF0123456789, seed=2**40 + 5)
    for values in (KEYS, RECORDS):
        batch = as_records(values)
        job = wire.encode_request(call, batch)
        assert job.regs["OP"] == 32
        out, err = wire.reference_engine(job.regs, job.table, job.words)
        assert err == 0
        assert wire.decode_response(job, out).tolist() == _expected(call, batch)
        assert wire.call_from_regs(job.regs, job.table) == call


def test_an_unregistered_operator_is_gone_everywhere(xorfold):
    ops.unregister("xorfold")
    assert ops.by_code(32) is None
    with pytest.raises(ValueError, match=r"^unknown operator 'xorfold'"):
        make_call("xorfold", mask=1)
    ops.register(xorfold)  # the fixture unregisters it again


def test_opcall_is_a_value():
    a, b = make_call("hash_bucket", num_buckets=10, seed=1), OpCall("hash_bucket", num_buckets=10, seed=1)
    assert a == b and hash(a) == hash(b)
    assert a.describe() == "hash_bucket(num_buckets=10, seed=1, method='mod', hash='xxh64')"
    with pytest.raises(AttributeError, match=r"^OpCall is immutable$"):
        a.seed = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match=r"^hash_bucket has no parameter 'slot'$"):
        a.slot  # noqa: B018
    import pickle

    assert pickle.loads(pickle.dumps(a)) == a
    bz = make_call("bucketize", boundaries=[0.0, 1.0], dtype=np.float64)
    assert bz.describe() == "bucketize(2 boundaries, right=True)"
    assert bz == make_call("bucketize", boundaries=np.array([0.0, 1.0]), dtype=np.float64)
    assert bz != make_call("bucketize", boundaries=[0.0, 2.0], dtype=np.float64)


def test_the_differential_cases_and_the_demo_cover_the_registry():
    from offload.demo import synthetic_events, workloads
    from tests.test_differential import CASES

    assert {c.split("/")[0] for c in CASES} == set(ops.OPERATORS)
    assert {w.call.op for w in workloads(synthetic_events(2000))} == set(ops.OPERATORS)


def test_the_cocotb_plan_drives_every_op_code(monkeypatch):
    from offload.sim.cocotb import plan

    jobs = plan.stream_jobs(1, ["steady"], lengths=[0, 1, 9], fixed_n=2, build="full")
    assert {j["regs"]["OP"] for j in jobs} == set(engine_map.OP_CODES.values())
    jobs = plan.stream_jobs(1, ["steady"], lengths=[0, 1, 9], fixed_n=2)
    assert {j["regs"]["OP"] for j in jobs} == plan.built_codes(engine_map.DEFAULT_BUILD)
    monkeypatch.setitem(engine_map.OP_CODES, "xorfold", 32)
    monkeypatch.setitem(engine_map.BUILDS, "full", (*engine_map.BUILDS["full"], "xorfold"))
    with pytest.raises(ValueError, match=r"^the stream plan has no stimulus for op code\(s\) \[32\]"):
        plan.stream_jobs(1, ["steady"], lengths=[0, 1], fixed_n=2, build="full")
