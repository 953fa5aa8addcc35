"""cocotb benches of the exported RTL (rtl/offload_axi.v + rtl/offload_engine.v).

Verilator runs the whole plan: every operator (every bucketize dtype and side,
delta_varint_encode) on the boundary lengths of tests/lengths.py, crossed with idle gaps and
backpressure, random parameters from two seeds, malformed framing and bad parameters.
Icarus runs a smaller plan (it simulates the engine ~20x slower). Expectations come from
offload.wire.reference_engine (the golden models), never from another backend. The mutation
checks assert that a corrupted expectation makes the bench FAIL.

Seeds: ``OFFLOAD_COCOTB_SEED`` (default 1) is the base seed; the failing job's name and seed are
in the assertion message.
"""

from __future__ import annotations

import importlib
import os

import pytest

from offload.engine_map import FARMHASH_CODES, OP_CODES
from offload.sim.cocotb import plan as P
from offload.sim.cocotb import runner as R

pytestmark = [pytest.mark.verilator]

BASE_SEED = int(os.environ.get("OFFLOAD_COCOTB_SEED", "1"))


def _need(sim: str) -> None:
    why = R.unavailable_reason(sim)
    if why:
        pytest.skip(reason=f"{sim} not usable: {why}")


def _run(sim: str, jobs, tmp_path, testcases="test_plan", mutate=None, **env) -> R.RunResult:
    path = P.write_plan(tmp_path / "plan.json", jobs, mutate=mutate)
    return R.run(
        sim, testcases, env={"OFFLOAD_COCOTB_PLAN": str(path), "OFFLOAD_COCOTB_SEED": str(BASE_SEED), **env}
    )


def _check(res: R.RunResult) -> None:
    assert res.passed, res.summary()


# ------------------------------------------------------------------------------------ Verilator


def test_registers_verilator(tmp_path):
    _need("verilator")
    _check(_run("verilator", [], tmp_path, testcases="test_registers"))


@pytest.mark.parametrize("flow", list(P.FLOWS))
@pytest.mark.parametrize("seed_offset", [0, 1])
def test_stream_verilator(flow, seed_offset, tmp_path):
    """All operators x boundary lengths under one flow setting, parameters from one seed."""
    _need("verilator")
    seed = BASE_SEED * 1000 + seed_offset
    jobs = P.stream_jobs(seed, flows=[flow])
    _check(_run("verilator", jobs, tmp_path))


def test_malformed_verilator(tmp_path):
    """Early/missing tlast, bad headers (incl. SEQ_MAX + 1), bad tkeep, data without START:
    trailer, ERR, STATUS, DONE_COUNT checked and no hang, each with and without gaps."""
    _need("verilator")
    _check(_run("verilator", P.malformed_jobs(BASE_SEED), tmp_path))


def test_params_verilator(tmp_path):
    """BAD_PARAM combinations, legal parameter extremes (full table, SEQ_MAX values), SOFT_RESET."""
    _need("verilator")
    jobs = P.param_jobs(BASE_SEED) + [P.soft_reset_job(BASE_SEED)]
    _check(_run("verilator", jobs, tmp_path))


def test_num_buckets_edges_verilator(tmp_path):
    """Register-level edges beyond the API's range: fastrange with 0 buckets and mod by a divisor
    above 2**63 are computed (docs/wire_format.md: only mod by 0 is BAD_PARAM)."""
    _need("verilator")
    base = {
        "OP": 4,
        "FORMAT": 0,
        "DTYPE": 0,
        "COUNT": 3,
        "SEED_LO": 0,
        "SEED_HI": 0,
        "NUM_BUCKETS_LO": 0,
        "NUM_BUCKETS_HI": 0,
        "SLOT": 0,
        "NUM_BOUNDARIES": 0,
    }
    jobs = [
        P.batch_job("fastrange_zero_buckets", base, [], [[1, 2, 3]]),
        P.batch_job(
            "mod_over_2pow63",
            {**base, "OP": 3, "NUM_BUCKETS_HI": 0x80000000, "NUM_BUCKETS_LO": 1},
            [],
            [[1, 2, 3]],
        ),
    ]
    _check(_run("verilator", jobs, tmp_path))


# ------------------------------------------------------------------------------------ mutation


def _mutation_jobs():
    return P.stream_jobs(BASE_SEED, flows=["steady"], ops=["xxh64"], fixed_n=6)[:2]


def test_mutation_scoreboard_flip_fails(tmp_path):
    """One flipped bit in one expected word: the bench must report the mismatch and FAIL."""
    _need("verilator")
    jobs = _mutation_jobs()
    res = _run("verilator", jobs, tmp_path, mutate="flip")
    assert not res.passed, "a corrupted scoreboard went unnoticed:\n" + res.summary()
    assert any("output differs" in t.message for t in res.failures), res.summary()


def test_mutation_golden_prime_fails(tmp_path, monkeypatch):
    """A wrong XXH64 prime in the golden model (so every expectation is wrong): FAIL."""
    _need("verilator")
    from offload import golden

    p = list(golden.XXH64_PRIMES)
    p[1] ^= 1 << 17
    monkeypatch.setattr(golden, "XXH64_PRIMES", tuple(p))
    jobs = _mutation_jobs()  # expectations computed with the bad prime
    monkeypatch.undo()
    res = _run("verilator", jobs, tmp_path)
    assert not res.passed, "a corrupted golden model went unnoticed:\n" + res.summary()
    assert any("output differs" in t.message for t in res.failures), res.summary()


def test_mutation_control_passes(tmp_path):
    """The same jobs, uncorrupted, pass (so the two checks above fail for the right reason)."""
    _need("verilator")
    _check(_run("verilator", _mutation_jobs(), tmp_path))


# -------------------------------------------------- the full build (FarmHash, CityHash): Verilator, Icarus


def _full_jobs(seed: int, flows, **kw):
    """The stream jobs of the op codes only the full build has (FarmHash, CityHash,
    hash_bucket/fid over them, decimal_hash_bucket)."""
    limited = {OP_CODES[k] for k in FARMHASH_CODES}
    return [j for j in P.stream_jobs(seed, flows, build="full", **kw) if j["regs"]["OP"] in limited]


def _run_full(sim: str, jobs, tmp_path, testcases="test_plan") -> R.RunResult:
    path = P.write_plan(tmp_path / "plan.json", jobs, build="full")
    env = {"OFFLOAD_COCOTB_PLAN": str(path), "OFFLOAD_COCOTB_SEED": str(BASE_SEED)}
    return R.run(sim, testcases, env=env, flavour="full")


@pytest.mark.timeout(1200)
def test_full_build_verilator(tmp_path):
    """rtl/offload_engine_full_sim.v: its registers (OPS, RECORD_MAX), and every FarmHash/CityHash
    op code on every boundary length, 8- and 4-byte keys, and decimal_hash_bucket on int32/int64,
    crossed with every flow."""
    _need("verilator")
    _check(_run_full("verilator", [], tmp_path, testcases="test_registers"))
    _check(_run_full("verilator", _full_jobs(BASE_SEED * 1000 + 11, list(P.FLOWS), fixed_n=6), tmp_path))


@pytest.mark.timeout(1200)
def test_mutation_golden_farmhash_fails(tmp_path, monkeypatch):
    """The full build's bench against expectations from a corrupted FarmHash constant (k2 of
    offload.golden_cityhash): FAIL with an output mismatch, so those benches can fail."""
    _need("verilator")
    from offload import golden_cityhash

    monkeypatch.setattr(golden_cityhash, "CITY_K2", golden_cityhash.CITY_K2 ^ (1 << 9))
    jobs = [
        j for j in _full_jobs(BASE_SEED, ["steady"], fixed_n=3, lengths=[5, 40]) if "farmhash64" in j["name"]
    ]
    monkeypatch.undo()
    assert jobs
    res = _run_full("verilator", jobs, tmp_path)
    assert not res.passed, "a corrupted FarmHash constant went unnoticed:\n" + res.summary()
    assert any("output differs" in t.message for t in res.failures), res.summary()


#: A wrong constant or step of each framework hash's golden model while the expectations are
#: computed, so those expectations are wrong: (build, the jobs' labels, module of offload,
#: attribute, its wrong value from the right one). The FarmHash constant: the test above.
GOLDEN_MUTATIONS = {
    "murmur3_c1": (
        "pynq-z2",
        ["murmur3", "murmur3_spark"],
        "golden_murmur3",
        "MURMUR3_C1",
        lambda c: c ^ 1 << 5,
    ),
    "sigrid_kmul": ("pynq-z2", ["sigrid_hash"], "golden_sigrid", "HASH128_KMUL", lambda c: c ^ 1 << 40),
    "cityhash_k2": (
        "full",
        ["cityhash64", "cityhash64_seeded"],
        "golden_cityhash",
        "CITY_K2",
        lambda c: c ^ 1 << 9,
    ),
    # the decimal text of a negative value without its sign, a fault of the decimal stage alone
    "decimal_sign": (
        "full",
        ["decimal_hash_bucket"],
        "golden",
        "farmhash64",
        lambda f: lambda d: f(d.lstrip(b"-")),
    ),
}


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mutation", list(GOLDEN_MUTATIONS))
def test_mutation_golden_framework_hash_fails(tmp_path, monkeypatch, mutation):
    """The engine's bench against expectations from a corrupted Murmur3, SigridHash, CityHash or
    decimal-text golden model: FAIL with an output mismatch, so each of those benches can fail
    (and the same jobs with the right expectations pass)."""
    _need("verilator")
    build, labels, module, name, wrong = GOLDEN_MUTATIONS[mutation]
    make = _full_jobs if build == "full" else P.stream_jobs
    run = _run_full if build == "full" else _run
    right = make(BASE_SEED, ["steady"], ops=labels, fixed_n=3, lengths=[5, 40])
    mod = importlib.import_module(f"offload.{module}")
    monkeypatch.setattr(mod, name, wrong(getattr(mod, name)))
    jobs = make(BASE_SEED, ["steady"], ops=labels, fixed_n=3, lengths=[5, 40])
    monkeypatch.undo()
    # the mutation changes some expectation (a max_value or num_buckets of 1 drawn for every
    # job would hide it), and the same jobs with the right expectations pass
    assert [j["expect_out"] for j in jobs] != [j["expect_out"] for j in right]
    _check(run("verilator", right, tmp_path))
    res = run("verilator", jobs, tmp_path)
    assert not res.passed, f"a corrupted {module}.{name} went unnoticed:\n" + res.summary()
    assert any("output differs" in t.message for t in res.failures), res.summary()


@pytest.mark.timeout(1200)
def test_full_build_icarus(tmp_path):
    """The same under Icarus Verilog, short lengths, gaps and backpressure together."""
    _need("icarus")
    lengths = [0, 1, 7, 8, 9, 16, 17, 32, 33, 64, 65, 129]
    _check(
        _run_full("icarus", _full_jobs(BASE_SEED * 1000 + 13, ["both"], fixed_n=3, lengths=lengths), tmp_path)
    )


# ------------------------------------------------------------------------------------ Icarus


def test_icarus(tmp_path):
    """The same benches under Icarus Verilog (apt-get install -y iverilog), a smaller plan:
    registers; every operator on short boundary lengths with gaps and backpressure together;
    the framing errors and bad parameters."""
    _need("icarus")
    seed = BASE_SEED * 1000 + 7
    lengths = [0, 1, 7, 8, 9, 31, 32, 33, 64, 65]
    jobs = (
        P.stream_jobs(seed, flows=["both"], fixed_n=4, lengths=lengths)
        + P.malformed_jobs(BASE_SEED, flows=["steady"])
        + P.param_jobs(BASE_SEED)[:12]
    )
    _check(_run("icarus", jobs, tmp_path, testcases=None))
