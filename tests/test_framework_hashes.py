"""The frameworks' hashes (farmhash64, cityhash64, murmur3_32, sigrid_hash; hash_bucket and fid
by hash name) on every layer that runs them, and the routing of the layers that do not.

The golden models are checked against the real libraries' vectors in ``tests/test_cityhash.py``,
``tests/test_murmur3_sigrid.py`` and ``tests/test_compat.py``; here every backend is checked
against the golden models.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

import offload
from offload import batch as B
from offload import engine_map, ops, wire
from offload.host.sim_backend import SimBackend
from offload.host.smartnic.backend import SmartNicBackend
from offload.host.smartnic.testing import InProcessService
from offload.ops import make_call
from offload.runtime import Runtime
from tests.conftest import golden, ran_only_on, require
from tests.lengths import BOUNDARY_LENGTHS

RNG = np.random.default_rng(16)
STRINGS = [RNG.integers(0, 256, n, dtype=np.uint8).tobytes() for n in [*BOUNDARY_LENGTHS, 200, 1000]]
KEYS = np.array([0, 1, 2**64 - 1, 0x9E3779B97F4A7C15], np.uint64)
IDS = np.array([0, 1, -1, 2**63 - 1, -(2**63), 12345], np.int64)

#: (operator, parameters, values) of every new hash and hash choice.
CALLS = [
    ("farmhash64", {}, STRINGS),
    ("farmhash64", {}, KEYS),
    ("cityhash64", {}, STRINGS),
    ("cityhash64", {"seed": 0}, KEYS),
    ("cityhash64", {"seed": 2**64 - 1}, STRINGS),
    ("murmur3_32", {}, STRINGS),
    ("murmur3_32", {"seed": 42, "tail": "spark"}, STRINGS),
    ("murmur3_32", {"seed": 2**32 - 1}, KEYS.view(np.uint32)),
    ("sigrid_hash", {"salt": 0, "max_value": 100}, IDS),
    ("sigrid_hash", {"salt": -7, "max_value": 2**63 - 1}, IDS.astype(np.int32)),
    ("decimal_hash_bucket", {"num_buckets": 1000}, IDS),
    ("decimal_hash_bucket", {"num_buckets": 2**63}, IDS.astype(np.int32)),
    ("hash_bucket", {"num_buckets": 1000, "hash": "farmhash64"}, STRINGS),
    ("hash_bucket", {"num_buckets": 2**63, "hash": "cityhash64", "seed": 5, "method": "fastrange"}, KEYS),
    ("hash_bucket", {"num_buckets": 97, "hash": "murmur3_32", "seed": 42}, STRINGS),
    ("fid", {"slot": 3, "version": 1, "hash": "cityhash64"}, STRINGS),
    ("fid", {"slot": 32767, "hash": "murmur3_32"}, KEYS),
]
IDS_OF = [f"{op}-{i}" for i, (op, _, _) in enumerate(CALLS)]


def expected(op: str, params: dict, values) -> list:
    if ops.operator(op).inputs == "numbers":
        batch = B.as_numbers(values)
        return golden(make_call(op, dtype=batch.values.dtype, **params), batch)
    return golden(make_call(op, **params), B.as_records(values))


@pytest.mark.parametrize("op,params,values", CALLS, ids=IDS_OF)
def test_cpu_equals_golden(op, params, values):
    rt = Runtime(backends=["cpu"], fallback=False, verify="off")
    assert rt.call(op, values, **params).tolist() == expected(op, params, values)
    ran_only_on(rt, "cpu")


@pytest.fixture(scope="module")
def service():
    with InProcessService(warmup=False) as svc:
        yield svc


@pytest.mark.parametrize("op,params,values", CALLS, ids=IDS_OF)
def test_the_smartnic_service_equals_golden(service, op, params, values):
    """The service's runtime runs the new operators: requests carry the operator's name and
    parameters, nothing in host/smartnic names them."""
    rt = Runtime(backends=[SmartNicBackend(service.address, chunk_bytes=256)], fallback=False)
    assert rt.call(op, values, **params).tolist() == expected(op, params, values)
    ran_only_on(rt, "smartnic")


# ---------------------------------------------------------------------------------------------
# Capability routing: the PYNQ-Z2 build (sim on its model, fpga) has no FarmHash or CityHash
# ---------------------------------------------------------------------------------------------

#: Calls the default (PYNQ-Z2) build has no op code for: FarmHash and CityHash need the full build.
ENGINE_LESS = [
    ("farmhash64", {}),
    ("cityhash64", {"seed": 1}),
    ("hash_bucket", {"num_buckets": 10, "hash": "farmhash64"}),
    ("fid", {"slot": 1, "hash": "cityhash64", "seed": 5}),
]


def _built_without(op: str, params: dict, where: str = "sim") -> str:
    """The reason a PYNQ-Z2 build gives: it lacks the operator (no op code of it is built) or
    the call's op code."""
    if op in ("farmhash64", "cityhash64", "decimal_hash_bucket"):
        return f"{where} does not implement {op}"
    call = make_call(op, **params)
    return f"the engine is built without op {wire.op_code(call)} ({call.describe()})"


@pytest.fixture(scope="module")
def sim_runtime():
    """The sim backend on the default build's model (``rtl/offload_engine_sim.v``)."""
    rt = Runtime(backends=[SimBackend(flavour="behavioural"), "cpu"], verify="off")
    require(rt, "sim")
    return rt


@pytest.mark.parametrize("op,params", ENGINE_LESS, ids=[f"{o}-{i}" for i, (o, _) in enumerate(ENGINE_LESS)])
def test_auto_routes_past_the_engine_and_says_why(sim_runtime, op, params):
    why = _built_without(op, params)
    res = sim_runtime.call(op, STRINGS, **params)
    assert res.tolist() == expected(op, params, STRINGS)
    st = sim_runtime.stats()
    assert [s[0] for s in st["last_call"]["segments"]] == ["cpu"]
    (fb,) = [f for f in st["fallbacks"] if f["op"] == op][-1:]
    assert (fb["from"], fb["to"], fb["cause"]) == ("sim", "cpu", "unsupported")
    assert fb["message"] == f"backend 'sim' cannot run {op}: {why}"


@pytest.mark.parametrize("op,params", ENGINE_LESS, ids=[f"{o}-{i}" for i, (o, _) in enumerate(ENGINE_LESS)])
def test_naming_the_engine_is_an_exact_error(sim_runtime, op, params):
    why = _built_without(op, params)
    with pytest.raises(
        offload.BackendUnavailable, match="^" + re.escape(f"backend 'sim' cannot run {op}: {why}") + "$"
    ):
        sim_runtime.call(op, STRINGS, backend="sim", **params)


def test_the_fpga_backend_reports_the_same_on_the_simulated_device():
    rt = Runtime(backends=["fpga", "cpu"], fpga="sim", verify="off")
    require(rt, "fpga")
    with pytest.raises(
        offload.BackendUnavailable,
        match=r"^backend 'fpga' cannot run farmhash64: fpga does not implement farmhash64$",
    ):
        rt.farmhash64(STRINGS, backend="fpga")
    assert rt.hash_bucket(STRINGS, 10, hash="cityhash64").tolist() == expected(
        "hash_bucket", {"num_buckets": 10, "hash": "cityhash64"}, STRINGS
    )
    assert rt.stats()["fallbacks"][-1]["cause"] == "unsupported"


def test_xxh64_buckets_still_run_on_the_engine(sim_runtime):
    """hash="xxh64" (the default, or named) keeps its op code: the engine runs it."""
    for params in ({}, {"hash": "xxh64"}):
        rt = Runtime(backends=["sim"], fallback=False)
        res = rt.hash_bucket(STRINGS, 1000, **params)
        assert res.tolist() == expected("hash_bucket", {"num_buckets": 1000, **params}, STRINGS)
        ran_only_on(rt, "sim")


# ---------------------------------------------------------------------------------------------
# The public API: value forms, seeds, exact errors
# ---------------------------------------------------------------------------------------------


def test_every_value_form_gives_the_same_hashes():
    text = ["", "a", "h\u00e9llo", "\u4e2d\u6587", "x" * 100]
    want = offload.farmhash64([s.encode() for s in text], backend="cpu").tolist()
    forms = [
        text,
        np.array(text, dtype=object),
        pa.array(text),
        pa.array(text, pa.large_string()),
        pa.chunked_array([text[:2], text[2:]]),
    ]
    for form in forms:
        assert offload.farmhash64(form, backend="cpu").tolist() == want


def test_the_seed_default_is_the_hashs_own():
    """seed=None is 0 for xxh64 and murmur3_32 and the unseeded CityHash64 for cityhash64."""
    assert offload.hash_bucket(STRINGS, 99).tolist() == offload.hash_bucket(STRINGS, 99, seed=0).tolist()
    city = offload.hash_bucket(STRINGS, 2**63, hash="cityhash64")
    assert city.tolist() == (offload.cityhash64(STRINGS) % np.uint64(2**63)).astype(np.int64).tolist()
    assert city.tolist() != offload.hash_bucket(STRINGS, 2**63, seed=0, hash="cityhash64").tolist()
    assert make_call("hash_bucket", num_buckets=9, hash="murmur3_32").seed == 0
    assert make_call("hash_bucket", num_buckets=9, hash="cityhash64").seed is None


@pytest.mark.parametrize(
    "fn,exc,message",
    [
        (
            lambda: offload.fid(STRINGS, 1, seed=3, hash="farmhash64"),
            ValueError,
            "seed does not apply to hash='farmhash64' (it takes no seed), got 3",
        ),
        (
            lambda: offload.hash_bucket(STRINGS, 9, seed=-1, hash="cityhash64"),
            ValueError,
            "seed must be in [0, 2**64) for hash='cityhash64', got -1",
        ),
        (lambda: offload.hash_bucket(STRINGS, 9, hash=64), TypeError, "hash must be a str, got int"),
        (lambda: offload.cityhash64(STRINGS, seed=1.0), TypeError, "seed must be an int, got float"),
        (lambda: offload.murmur3_32(STRINGS, tail=None), TypeError, "tail must be a str, got NoneType"),
        (
            lambda: offload.sigrid_hash(np.array([1], np.uint64), 0, 10),
            TypeError,
            "sigrid_hash: unsupported x dtype uint64: expected float32, float64, int32 or int64",
        ),
        (
            lambda: offload.sigrid_hash(IDS, 2**63, 10),
            ValueError,
            "salt must be in [-2**63, 2**63), got 9223372036854775808",
        ),
    ],
)
def test_bad_parameters_are_exact_errors(fn, exc, message):
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        fn()


# ---------------------------------------------------------------------------------------------
# Every layer against the real libraries' vectors (tests/reference)
# ---------------------------------------------------------------------------------------------

#: reference set -> (operator, the group's parameters as the operator's)
REFERENCE = {"farmhash": "farmhash64", "cityhash": "cityhash64", "murmur3": "murmur3_32"}


def _reference_calls():
    from tests.reference.load import load

    for name, op in REFERENCE.items():
        for group in load(name):
            yield pytest.param(op, dict(group.params), group.cases, id=f"{op}:{group.name}")


@pytest.mark.parametrize("op,params,cases", list(_reference_calls()))
@pytest.mark.parametrize("where", ["cpu", "smartnic"])
def test_the_public_api_equals_the_real_library(service, where, op, params, cases):
    """``offload.<op>`` on the CPU backend and through the SmartNIC service gives the real
    library's value for every reference input (every length 0..300 and longer, UTF-8)."""
    rt = Runtime(backends=["cpu"] if where == "cpu" else [SmartNicBackend(service.address)], fallback=False)
    inputs = [data for data, _ in cases]
    assert rt.call(op, inputs, **params).tolist() == [want for _, want in cases]
    ran_only_on(rt, where)


def _engine_runtime(where: str) -> Runtime:
    """``sim``: the full build's model; ``fpga``: the simulated PYNQ-Z2 (the default build)."""
    rt = Runtime(
        backends=[where], fallback=False, verify="off", **({"fpga": "sim"} if where == "fpga" else {})
    )
    require(rt, where)
    return rt


def _batch(op: str, values):
    return B.as_numbers(values) if ops.operator(op).inputs == "numbers" else B.as_records(values)


def _why_not(rt: Runtime, where: str, op: str, params: dict, values) -> str | None:
    """Why the backend's engine cannot run the call (None: it can)."""
    batch = _batch(op, values)
    extra = {"dtype": batch.values.dtype} if isinstance(batch, B.Numbers) else {}
    return rt.backend(where).supports(make_call(op, **extra, **params), batch)


@pytest.mark.parametrize("where", ["sim", "fpga"])
@pytest.mark.parametrize("op,params,values", CALLS, ids=IDS_OF)
def test_the_engine_equals_golden(where, op, params, values):
    """The engine's Murmur3, SigridHash and FarmHash/CityHash cores (the sim backend's full
    build, the fpga backend on the simulated PYNQ-Z2) give the golden model's values; the
    PYNQ-Z2 build lacks exactly the FarmHash/CityHash op codes."""
    rt = _engine_runtime(where)
    why = _why_not(rt, where, op, params, values)
    if why is not None:
        assert where == "fpga" and {op, params.get("hash")} & {
            "farmhash64",
            "cityhash64",
            "decimal_hash_bucket",
        }
        assert why == _built_without(op, params, where)
        return
    assert rt.call(op, values, **params).tolist() == expected(op, params, values)
    ran_only_on(rt, where)


def _fits(data) -> bool:
    return len(data) <= engine_map.DEFAULT_RECORD_MAX


@pytest.mark.parametrize("name", ["murmur3", "farmhash", "cityhash", "sigrid"])
def test_the_sim_engine_equals_the_real_library(name):
    """Every reference vector (mmh3 and Spark's hash, pyfarmhash/tf.fingerprint, CityHash 1.1,
    TorchArrow's sigrid_hash) through the engine's full build; FarmHash/CityHash records up to
    its RECORD_MAX (longer ones: the next test)."""
    from tests.reference.load import load

    rt = _engine_runtime("sim")
    op = {**REFERENCE, "sigrid": "sigrid_hash"}[name]
    for group in load(name):
        cases = [(d, w) for d, w in group.cases if name not in ("farmhash", "cityhash") or _fits(d)]
        inputs = np.array([d for d, _ in cases], np.int64) if name == "sigrid" else [d for d, _ in cases]
        assert rt.call(op, inputs, **group.params).tolist() == [w for _, w in cases], group.name
        ran_only_on(rt, "sim")


def test_the_fpga_engine_equals_the_real_library():
    """The simulated PYNQ-Z2 (the PYNQ-Z2 build) on every murmur3 and sigrid reference vector
    (Spark's: tests/test_compat.py)."""
    from tests.reference.load import load

    rt = _engine_runtime("fpga")
    for name, op in (("murmur3", "murmur3_32"), ("sigrid", "sigrid_hash")):
        for group in load(name):
            inputs = (
                np.array([d for d, _ in group.cases], np.int64)
                if name == "sigrid"
                else [d for d, _ in group.cases]
            )
            assert rt.call(op, inputs, **group.params).tolist() == [w for _, w in group.cases], group.name
            ran_only_on(rt, "fpga")


def test_a_record_longer_than_record_max_goes_to_the_next_backend():
    """The engine's FarmHash/CityHash take records up to RECORD_MAX bytes: a batch with a
    longer one runs on the next backend, with the reason in stats(); named, the engine refuses."""
    rt = Runtime(backends=["sim", "cpu"], verify="off")
    require(rt, "sim")
    longest = engine_map.DEFAULT_RECORD_MAX
    recs = [b"a" * longest, b"b" * (longest + 1)]
    assert rt.farmhash64(recs).tolist() == golden(make_call("farmhash64"), B.as_records(recs))
    (fb,) = rt.stats()["fallbacks"][-1:]
    assert (fb["from"], fb["to"], fb["cause"]) == ("sim", "cpu", "unsupported")
    why = f"a record has {longest + 1} bytes, the engine's farmhash64 takes at most {longest}"
    assert fb["message"] == f"backend 'sim' cannot run farmhash64: {why}"
    with pytest.raises(
        offload.BackendUnavailable, match="^" + re.escape(f"backend 'sim' cannot run farmhash64: {why}")
    ):
        rt.farmhash64(recs, backend="sim")
    assert (
        rt.farmhash64(recs[:1], backend="sim").tolist()
        == [golden(make_call("farmhash64"), B.as_records(recs[:1]))][0]
    )


# ---------------------------------------------------------------------------------------------
# Throughput in cycles (the Verilator model's clock, not time): a word per cycle
# ---------------------------------------------------------------------------------------------

#: (name, record lengths) of the length mixes: short, mixed, long (up to RECORD_MAX)
MIXES = [("short 0-8", (0, 8)), ("mixed 0-64", (0, 64)), ("long 200-1000", (200, 1000))]
THROUGHPUT_CALLS = [
    ("murmur3_32", {"tail": "spark"}),
    ("murmur3_32", {}),
    ("farmhash64", {}),
    ("cityhash64", {}),
    ("cityhash64", {"seed": 7}),
    ("hash_bucket", {"num_buckets": 1000, "hash": "murmur3_32"}),
    ("hash_bucket", {"num_buckets": 1000, "hash": "cityhash64"}),
    ("fid", {"slot": 5, "hash": "farmhash64"}),
]


def _ids(calls: list[tuple[str, dict]]) -> list[str]:
    return ["-".join([op, *(f"{k}={v}" for k, v in params.items())]) for op, params in calls]


@pytest.mark.parametrize("op,params", THROUGHPUT_CALLS, ids=_ids(THROUGHPUT_CALLS))
@pytest.mark.parametrize("mix,lengths", MIXES, ids=[m[0] for m in MIXES])
def test_the_engine_takes_a_word_per_cycle_for_every_length_mix(op, params, mix, lengths):
    """10,000 records of a random length mix in one transfer: input words (headers included)
    per clock cycle of the model >= 0.95 (the batch's fixed start and drain included)."""
    sb = SimBackend()
    rt = Runtime(backends=[sb], fallback=False, verify="off")
    require(rt, "sim")
    rng = np.random.default_rng(len(op) * 100 + lengths[1])
    recs = [rng.bytes(int(n)) for n in rng.integers(lengths[0], lengths[1] + 1, 10_000)]
    call = make_call(op, **params)
    words = wire.encode_request(call, B.as_records(recs)).words.shape[0]
    before = sb.cycles
    assert rt.call(op, recs, **params).tolist() == golden(call, B.as_records(recs))
    assert words / (sb.cycles - before) >= 0.95, (words, sb.cycles - before)


KEY_CALLS = [
    ("sigrid_hash", {"salt": 1, "max_value": 97}),
    ("decimal_hash_bucket", {"num_buckets": 10}),
    ("murmur3_32", {"tail": "spark"}),
    ("farmhash64", {}),
    ("cityhash64", {}),
    ("cityhash64", {"seed": 7}),
]


@pytest.mark.parametrize("op,params", KEY_CALLS, ids=_ids(KEY_CALLS))
def test_the_engine_takes_a_key_per_cycle(op, params):
    """Fixed-width input: one 8-byte key per cycle (>= 0.95 with the batch's start and drain),
    int64 ids for the number operators, uint64 keys (8-byte records) for the hashes."""
    sb = SimBackend()
    rt = Runtime(backends=[sb], fallback=False, verify="off")
    require(rt, "sim")
    ids = np.random.default_rng(3).integers(-(1 << 63), (1 << 63) - 1, 20_000, dtype=np.int64)
    if ops.operator(op).inputs != "numbers":
        ids = ids.view(np.uint64)
    before = sb.cycles
    assert rt.call(op, ids, **params).tolist() == expected(op, params, ids)
    assert ids.shape[0] / (sb.cycles - before) >= 0.95
