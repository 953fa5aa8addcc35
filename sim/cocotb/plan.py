"""Stimulus and expectations for the cocotb benches, computed on the host.

A *plan* is a JSON file of *jobs*. A ``batch`` job is: the registers to write (and the
bucketize boundary table), whether to write ``START``, the input transfers (``frames``: each is
sent as one AXI-Stream packet, ``tlast`` on its last word; ``bad_tkeep`` lists beat indices of
the first frame sent with ``tkeep != 0xFF``), the flow settings (``idle``: probability of an idle
cycle on ``s_axis``; ``backpressure``: probability of ``m_axis_tready`` low) and the expected
output words and ``ERR`` register. A ``soft_reset`` job aborts a batch with ``CTRL.SOFT_RESET``
while the output is stalled and expects the engine idle with nothing sent.

The expectation is always :func:`offload.wire.reference_engine` (the golden models) on the
first frame, plus what the page says for what the reference does not model:

* a later frame arrives while the engine is idle: ``EXTRA_DATA``;
* a ``SEQ`` header above ``SEQ_MAX``: ``BAD_HEADER`` (the header is presented to the reference
  as a bad header at the same position);
* a beat with ``tkeep != 0xFF`` during a batch: ``BAD_TKEEP`` in the trailer and ``ERR``;
* no ``START`` (the bench writes ``SOFT_RESET`` first to clear old flags): no output,
  ``EXTRA_DATA``.

Never compared with another backend.
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offload.engine_map import (
    BUILDS,
    DEFAULT_BUILD,
    DEFAULT_RECORD_MAX,
    ENGINE_ID,
    ENGINE_VERSION,
    ERR_FLAGS,
    FORMATS,
    NO_RECORD_MAX,
    OP_CODES,
    RECORD_LIMITED,
    TRAILER_MAGIC,
)
from offload.wire import encode_request, reference_engine

__all__ = [
    "FLOWS",
    "ENGINE",
    "expected",
    "batch_job",
    "stream_jobs",
    "malformed_jobs",
    "param_jobs",
    "register_expectations",
    "write_plan",
    "boundary_lengths",
]

#: Flow settings every stream job is crossed with: (idle-cycle probability on the input,
#: probability of m_axis_tready low).
FLOWS = {"steady": (0.0, 0.0), "idle": (0.35, 0.0), "backpressure": (0.0, 0.5), "both": (0.3, 0.4)}

#: The default build's parameters (rtl/offload_engine.v is OffloadEngine() with defaults).
ENGINE: dict[str, Any] = {
    "table_depth": 256,
    "seq_max": 1024,
    "lanes": 1,
    "id": ENGINE_ID,
    "version": ENGINE_VERSION,
    "build": DEFAULT_BUILD,
}


def built_codes(build: str = ENGINE["build"]) -> set[int]:
    """The op codes of an engine build (``offload.engine_map.BUILDS``)."""
    return {OP_CODES[k] for k in BUILDS[build]}


def record_max_of(build: str = ENGINE["build"]) -> int:
    """``RECORD_MAX`` of a build with the default ``record_max``."""
    limited = any(k in RECORD_LIMITED for k in BUILDS[build])
    return DEFAULT_RECORD_MAX if limited else NO_RECORD_MAX


M64 = (1 << 64) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def boundary_lengths() -> list[int]:
    """tests/lengths.py's list (the one list of boundary lengths)."""
    try:
        from tests.lengths import BOUNDARY_LENGTHS
    except ImportError:  # running outside the repo root: load the file next to the package
        import importlib.util

        p = Path(__file__).resolve().parents[2] / "tests" / "lengths.py"
        spec = importlib.util.spec_from_file_location("_offload_lengths", p)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        BOUNDARY_LENGTHS = mod.BOUNDARY_LENGTHS
    return list(BOUNDARY_LENGTHS)


# ---------------------------------------------------------------------------------------------
# expectation
# ---------------------------------------------------------------------------------------------


def _seq_max_fixup(regs: dict[str, int], words: np.ndarray, seq_max: int) -> np.ndarray:
    """Present a SEQ header above SEQ_MAX to the reference as a bad header (same position)."""
    if regs.get("FORMAT") != FORMATS["SEQ"] or regs.get("OP") != OP_CODES["delta_varint_encode"]:
        return words
    words = words.copy()
    pos, n = 0, words.shape[0]
    for _ in range(regs.get("COUNT", 0)):
        if pos >= n:
            break
        h = int(words[pos])
        if h >> 32:
            break
        if h > seq_max:
            words[pos] = np.uint64(h | (1 << 32))
            break
        pos += 1 + h
    return words


def expected(
    regs: dict[str, int],
    table: Sequence[int],
    frames: Sequence[Sequence[int]],
    *,
    start: bool = True,
    bad_tkeep: Sequence[int] = (),
    seq_max: int = ENGINE["seq_max"],
    table_depth: int = ENGINE["table_depth"],
    record_max: int | None = None,
) -> tuple[list[int], int]:
    """``(output words, ERR)`` the engine must produce for this job."""
    later = sum(len(f) for f in frames[1:])
    if not start:
        return [], ERR_FLAGS["EXTRA_DATA"] if sum(len(f) for f in frames) else 0
    first = np.array(frames[0] if frames else [], dtype=np.uint64)
    words = _seq_max_fixup(regs, first, seq_max)
    out_words, err = reference_engine(
        regs,
        np.array(table, dtype=np.uint64),
        words,
        table_depth=table_depth,
        record_max=record_max_of() if record_max is None else record_max,
    )
    out = [int(w) for w in out_words]
    if bad_tkeep and not err & ERR_FLAGS["BAD_PARAM"]:
        consumed = _consumed_in_batch(regs, first, err)
        if any(i < consumed for i in bad_tkeep):
            err |= ERR_FLAGS["BAD_TKEEP"]
            out[-1] |= ERR_FLAGS["BAD_TKEEP"] << 32
    if later:
        err |= ERR_FLAGS["EXTRA_DATA"]
    return out, err


def _consumed_in_batch(regs: dict[str, int], words: np.ndarray, err: int) -> int:
    """How many leading words of the first frame the engine takes while running the batch."""
    if not err & (ERR_FLAGS["EXTRA_DATA"] | ERR_FLAGS["MISSING_TLAST"] | ERR_FLAGS["BAD_HEADER"]):
        return words.shape[0]
    fmt, count = regs["FORMAT"], regs["COUNT"]
    if fmt in (FORMATS["FIXED8"], FORMATS["FIXED4"]):
        return min(count, words.shape[0])
    pos = 0
    for _ in range(count):
        if pos >= words.shape[0]:
            break
        h = int(words[pos])
        if h >> 32:
            return pos + 1
        pos += 1 + ((h + 7) // 8 if fmt == FORMATS["VAR"] else h)
    return min(pos, words.shape[0])


def batch_job(
    name: str,
    regs: dict[str, int],
    table: Sequence[int],
    frames: Sequence[Sequence[int]],
    flow: str = "steady",
    *,
    start: bool = True,
    bad_tkeep: Sequence[int] = (),
    seed: int = 0,
) -> dict[str, Any]:
    frames = [[int(w) for w in f] for f in frames]
    table = [int(t) for t in table]
    out, err = expected(regs, table, frames, start=start, bad_tkeep=bad_tkeep)
    idle, bp = FLOWS[flow]
    return {
        "kind": "batch",
        "name": f"{name}/{flow}",
        "regs": dict(regs),
        "table": table,
        "start": start,
        "frames": frames,
        "bad_tkeep": list(bad_tkeep),
        "idle": idle,
        "backpressure": bp,
        "seed": seed,
        "expect_out": out,
        "expect_err": err,
    }


def _job_from_call(name: str, call_name: str, values: Any, flow: str, job_seed: int, **params):
    from offload import batch as _batch
    from offload.backend import Batch
    from offload.ops import make_call, operator

    b: Batch
    kind = operator(call_name).inputs
    if kind == "numbers":
        b = _batch.as_numbers(values)
        call = make_call(call_name, dtype=b.values.dtype, **params)
    elif kind == "sequences":
        b = _batch.as_sequences(values)
        call = make_call(call_name, **params)
    else:
        b = _batch.as_records(values)
        call = make_call(call_name, **params)
    job = encode_request(call, b)
    return batch_job(name, job.regs, job.table.tolist(), [job.words.tolist()], flow, seed=job_seed)


# ---------------------------------------------------------------------------------------------
# stimulus
# ---------------------------------------------------------------------------------------------


def _records(rng: random.Random, lengths: Iterable[int]) -> list[bytes]:
    return [rng.randbytes(n) for n in lengths]


def _seed64(rng: random.Random) -> int:
    return rng.choice([0, 1, M64, 0x9E3779B185EBCA87, rng.getrandbits(64)])


def _hash_variants(rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, operator, params) for the hash operators (each op code of theirs), parameters
    drawn from ``rng``."""
    nb = lambda: rng.choice(
        [
            1,
            2,
            3,
            1000003,
            1 << 63,
            rng.getrandbits(63) + 1,  # noqa: E731
            rng.getrandbits(20) + 1,
        ]
    )
    return [
        ("xxh32", "xxh32", {"seed": rng.choice([0, 0xFFFFFFFF, rng.getrandbits(32)])}),
        ("xxh64", "xxh64", {"seed": _seed64(rng)}),
        ("bucket_mod", "hash_bucket", {"num_buckets": nb(), "seed": _seed64(rng), "method": "mod"}),
        (
            "bucket_fastrange",
            "hash_bucket",
            {"num_buckets": nb(), "seed": _seed64(rng), "method": "fastrange"},
        ),
        (
            "fid1",
            "fid",
            {"slot": rng.choice([0, 1023, rng.randrange(1024)]), "version": 1, "seed": _seed64(rng)},
        ),
        (
            "fid2",
            "fid",
            {"slot": rng.choice([0, 32767, rng.randrange(32768)]), "version": 2, "seed": _seed64(rng)},
        ),
        ("murmur3", "murmur3_32", {"seed": _seed32(rng), "tail": "standard"}),
        ("murmur3_spark", "murmur3_32", {"seed": _seed32(rng), "tail": "spark"}),
        (
            "bucket_mod_murmur3",
            "hash_bucket",
            {"num_buckets": nb(), "seed": _seed32(rng), "method": "mod", "hash": "murmur3_32"},
        ),
        (
            "fid1_murmur3",
            "fid",
            {"slot": rng.randrange(1024), "version": 1, "seed": _seed32(rng), "hash": "murmur3_32"},
        ),
        (
            "fid2_murmur3",
            "fid",
            {"slot": rng.randrange(32768), "version": 2, "seed": _seed32(rng), "hash": "murmur3_32"},
        ),
        *_city_farm_variants(rng, nb),
    ]


def _city_farm_variants(rng: random.Random, nb: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, operator, params) of every FarmHash/CityHash op code (the ``"full"`` build's)."""
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("farmhash64", "farmhash64", {}),
        ("cityhash64", "cityhash64", {}),
        ("cityhash64_seeded", "cityhash64", {"seed": _seed64(rng)}),
    ]
    for h, seeds in (("farmhash64", [None]), ("cityhash64", [None, _seed64(rng)])):
        for seed in seeds:
            tag = f"{h}{'' if seed is None else '_seeded'}"
            for method in ("mod", "fastrange"):
                params = {"num_buckets": nb(), "seed": seed, "method": method, "hash": h}
                out.append((f"bucket_{method}_{tag}", "hash_bucket", params))
            for v, slots in ((1, 1024), (2, 32768)):
                params = {"slot": rng.randrange(slots), "version": v, "seed": seed, "hash": h}
                out.append((f"fid{v}_{tag}", "fid", params))
    return out


def _seed32(rng: random.Random) -> int:
    return rng.choice([0, 0xFFFFFFFF, rng.getrandbits(32)])


def _sigrid_case(rng: random.Random, dtype: np.dtype, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Ids of ``dtype`` (the extremes, 0, -1 and random) and a salt and max_value, extremes included."""
    info = np.iinfo(dtype)
    pool = [int(info.min), int(info.max), 0, -1, 1]
    ids = np.array(
        [rng.choice(pool) if rng.random() < 0.3 else rng.randint(info.min, info.max) for _ in range(n)], dtype
    )
    salt = rng.choice([0, INT64_MIN, INT64_MAX, rng.randint(INT64_MIN, INT64_MAX)])
    max_value = rng.choice([1, 2, 1000003, INT64_MAX, rng.randint(1, INT64_MAX)])
    return ids, {"salt": salt, "max_value": max_value}


_SPECIAL_F = [0.0, -0.0, 1.0, -1.0, 0.5, math.inf, -math.inf, math.nan, 1e-30, -3.25e10]


def _bucketize_case(rng: random.Random, dtype: np.dtype, n: int, table_depth: int):
    dtype = np.dtype(dtype)
    info_int = dtype.kind == "i"
    nb = rng.choice([0, 1, 2, 7, rng.randrange(3, min(40, table_depth) + 1)])
    if info_int:
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
        pool = (
            {lo, hi, 0, -1, 1}
            | {rng.randint(-1000, 1000) for _ in range(nb)}
            | {rng.randint(lo, hi) for _ in range(nb)}
        )
        b = np.array(sorted(rng.sample(sorted(pool), min(nb, len(pool)))), dtype)
        cand = list(pool) + [int(x) for x in b] + [int(x) + 1 for x in b if x < hi]
        x = np.array(
            [rng.choice(cand) if rng.random() < 0.6 else rng.randint(lo, hi) for _ in range(n)], dtype
        )
    else:
        fpool = sorted(
            {
                float(dtype.type(v))
                for v in _SPECIAL_F + [rng.uniform(-100, 100) for _ in range(nb)]
                if not math.isnan(v)
            }
            - {-0.0}
        )
        b = np.array(sorted(rng.sample(fpool, min(nb, len(fpool)))), dtype)
        fcand = _SPECIAL_F + [float(v) for v in b] + [rng.uniform(-200, 200) for _ in range(4)]
        x = np.array([rng.choice(fcand) for _ in range(n)], dtype)
    return x, b


def _sequences(rng: random.Random, lengths: Iterable[int]) -> list[np.ndarray]:
    out = []
    for k in lengths:
        style = rng.randrange(3)
        vals: np.ndarray | list[int]
        if style == 0:  # timestamps: small positive deltas
            base = rng.randint(0, 1 << 40)
            vals = np.cumsum([base] + [rng.randint(0, 300) for _ in range(k - 1)])[:k]
        elif style == 1:  # anything, extremes included
            vals = [
                rng.choice([INT64_MIN, INT64_MAX, 0, -1, rng.randint(INT64_MIN, INT64_MAX)]) for _ in range(k)
            ]
        else:
            vals = [rng.randint(-(1 << rng.randrange(1, 63)), 1 << rng.randrange(1, 63)) for _ in range(k)]
        out.append(np.array(vals, dtype=np.int64))
    return out


def stream_jobs(
    seed: int,
    flows: Iterable[str] = FLOWS,
    *,
    lengths: Sequence[int] | None = None,
    fixed_n: int = 12,
    ops: Iterable[str] | None = None,
    build: str = ENGINE["build"],
) -> list[dict[str, Any]]:
    """Every op code of the engine ``build`` (every bucketize dtype, both sides;
    delta_varint_encode) on the boundary lengths, crossed with ``flows``; parameters and data
    drawn from ``seed``."""
    rng = random.Random(seed)
    lengths = boundary_lengths() if lengths is None else list(lengths)
    want = set(ops) if ops is not None else None
    built = built_codes(build)
    jobs = []
    for flow in flows:
        for label, op, params in _hash_variants(rng):
            if want is not None and label not in want or _op_code(op, params) not in built:
                continue
            recs = _records(rng, rng.sample(lengths, len(lengths)) if rng.random() < 0.5 else lengths)
            jobs.append(_job_from_call(f"{label}/VAR", op, recs, flow, seed, **params))
            k8 = np.array([rng.getrandbits(64) for _ in range(fixed_n)], np.uint64)
            jobs.append(_job_from_call(f"{label}/FIXED8", op, k8, flow, seed, **params))
            k4 = np.array([rng.getrandbits(32) for _ in range(fixed_n)], np.uint32)
            j4 = _job_from_call(f"{label}/FIXED4", op, k4, flow, seed, **params)
            # The high half of a FIXED4 word is "written 0 and ignored": put garbage there.
            garbage = [w | (rng.getrandbits(32) << 32) if rng.random() < 0.5 else w for w in j4["frames"][0]]
            jobs.append(
                batch_job(
                    j4["name"].rsplit("/", 1)[0] + "+hi", j4["regs"], j4["table"], [garbage], flow, seed=seed
                )
            )
        for dt in (np.int32, np.int64, np.float32, np.float64):
            for right in (True, False):
                label = f"bucketize_{'right' if right else 'left'}_{np.dtype(dt).name}"
                if want is not None and "bucketize" not in want and label not in want:
                    continue
                x, b = _bucketize_case(rng, np.dtype(dt), fixed_n + 4, ENGINE["table_depth"])
                jobs.append(_job_from_call(label, "bucketize", x, flow, seed, boundaries=b, right=right))
        for dt in (np.int32, np.int64):
            label = f"sigrid_hash_{np.dtype(dt).name}"
            if want is None or "sigrid_hash" in want or label in want:
                ids, params = _sigrid_case(rng, np.dtype(dt), fixed_n + 4)
                jobs.append(_job_from_call(label, "sigrid_hash", ids, flow, seed, **params))
            label = f"decimal_hash_bucket_{np.dtype(dt).name}"
            built_here = OP_CODES["decimal_hash_bucket"] in built
            if built_here and (want is None or "decimal_hash_bucket" in want or label in want):
                ids, _ = _sigrid_case(rng, np.dtype(dt), fixed_n + 4)  # the same extremes
                nbk = rng.choice([1, 10, 1000003, 1 << 63])
                jobs.append(_job_from_call(label, "decimal_hash_bucket", ids, flow, seed, num_buckets=nbk))
        if want is None or "delta_varint_encode" in want:
            seqs = _sequences(rng, [k for k in lengths if k <= ENGINE["seq_max"]])
            jobs.append(_job_from_call("delta_varint_encode/SEQ", "delta_varint_encode", seqs, flow, seed))
    if want is None:
        _check_covers_every_op_code(jobs, built)
    return jobs


def _op_code(op: str, params: dict[str, Any]) -> int:
    from offload.ops import make_call
    from offload.wire import op_code

    return op_code(make_call(op, **params))


def _check_covers_every_op_code(jobs: list[dict[str, Any]], built: set[int]) -> None:
    """A full plan drives every op code of the build (a new operator needs its stimulus)."""
    missing = sorted(built - {job["regs"]["OP"] for job in jobs})
    if missing:
        raise ValueError(
            f"the stream plan has no stimulus for op code(s) {missing}: add them to sim/cocotb/plan.py"
        )


def _var_words(recs: Sequence[bytes]) -> list[int]:
    out = []
    for r in recs:
        out.append(len(r))
        padded = r + bytes(-len(r) % 8)
        out.extend(struct.unpack(f"<{len(padded) // 8}Q", padded))
    return out


def _seq_words(seqs: Iterable[np.ndarray]) -> list[int]:
    out = []
    for s in seqs:
        out.append(len(s))
        out.extend(int(v) & M64 for v in s)
    return out


def malformed_jobs(seed: int, flows: Iterable[str] = ("steady", "both")) -> list[dict[str, Any]]:
    """Broken framing and parameters: early/missing tlast, bad headers (incl. SEQ_MAX + 1),
    BAD_PARAM combinations, bad tkeep, data without START. Each checks trailer + ERR + no hang."""
    rng = random.Random(seed ^ 0x5EED)
    jobs = []
    lengths = boundary_lengths()
    for flow in flows:
        s = rng.getrandbits(64)
        base = {
            "OP": OP_CODES["xxh64"],
            "DTYPE": 0,
            "SEED_LO": s & 0xFFFFFFFF,
            "SEED_HI": s >> 32,
            "NUM_BUCKETS_LO": 0,
            "NUM_BUCKETS_HI": 0,
            "SLOT": 0,
            "NUM_BOUNDARIES": 0,
        }
        recs = _records(rng, rng.sample(lengths, 12))
        var = _var_words(recs)
        vregs = {**base, "FORMAT": FORMATS["VAR"], "COUNT": len(recs)}
        # -- early tlast: in the middle of a record's data, then the rest as a second transfer
        hdr_pos = [0]
        for r in recs[:-1]:
            hdr_pos.append(hdr_pos[-1] + 1 + (len(r) + 7) // 8)
        mid = next((p + 2 for p, r in zip(hdr_pos, recs) if len(r) > 8 and p > 0), 3)
        jobs.append(batch_job("early_tlast/mid_record", vregs, [], [var[:mid], var[mid:]], flow))
        # -- early tlast on a header word
        jobs.append(batch_job("early_tlast/on_header", vregs, [], [var[: hdr_pos[4] + 1]], flow))
        # -- early tlast at a record boundary (COUNT larger than what is sent)
        k8 = [rng.getrandbits(64) for _ in range(9)]
        f8 = {**base, "FORMAT": FORMATS["FIXED8"], "COUNT": 14}
        jobs.append(batch_job("early_tlast/fixed8_short", f8, [], [k8], flow))
        # -- missing tlast: COUNT records, then more words in the same transfer
        jobs.append(
            batch_job("missing_tlast/var", vregs, [], [var + [rng.getrandbits(64) for _ in range(3)]], flow)
        )
        f4 = {**base, "OP": OP_CODES["xxh32"], "FORMAT": FORMATS["FIXED4"], "COUNT": 5}
        jobs.append(
            batch_job("missing_tlast/fixed4", f4, [], [[rng.getrandbits(32) for _ in range(7)]], flow)
        )
        seqs = _sequences(rng, [3, 0, 17, 1])
        sregs = {**base, "OP": OP_CODES["delta_varint_encode"], "FORMAT": FORMATS["SEQ"], "COUNT": len(seqs)}
        sw = _seq_words(seqs)
        jobs.append(batch_job("missing_tlast/seq", sregs, [], [sw + [5, 6]], flow))
        jobs.append(batch_job("early_tlast/seq", sregs, [], [sw[:-3]], flow))
        # -- bad headers
        bad = list(var)
        bad[hdr_pos[5]] |= 1 << (32 + rng.randrange(32))
        jobs.append(batch_job("bad_header/var_high_bits", vregs, [], [bad], flow))
        bad = list(sw)
        bad[4] |= 1 << 63  # header of the second sequence (K=0 at word 4)
        jobs.append(batch_job("bad_header/seq_high_bits", sregs, [], [bad], flow))
        over = (
            _seq_words(_sequences(rng, [2]))
            + [ENGINE["seq_max"] + 1]
            + [rng.getrandbits(64) for _ in range(6)]
        )
        jobs.append(batch_job("bad_header/seq_over_seq_max", {**sregs, "COUNT": 2}, [], [over], flow))
        # -- words while idle (no START)
        jobs.append(batch_job("extra_data/no_start", f8, [], [k8[:4]], flow, start=False))
        # -- bad tkeep on one beat (processed as if it were a full beat)
        full8 = {**f8, "COUNT": len(k8)}
        jobs.append(batch_job("bad_tkeep/fixed8", full8, [], [k8], flow, bad_tkeep=[rng.randrange(len(k8))]))
    return jobs


def param_jobs(seed: int) -> list[dict[str, Any]]:
    """``BAD_PARAM`` cases (the trailer with 0 records at once, the data discarded) and the
    parameter extremes that are legal."""
    rng = random.Random(seed ^ 0xBAD)
    k8 = [rng.getrandbits(64) for _ in range(4)]
    base = {
        "OP": OP_CODES["xxh64"],
        "FORMAT": FORMATS["FIXED8"],
        "DTYPE": 0,
        "COUNT": 4,
        "SEED_LO": 0,
        "SEED_HI": 0,
        "NUM_BUCKETS_LO": 0,
        "NUM_BUCKETS_HI": 0,
        "SLOT": 0,
        "NUM_BOUNDARIES": 0,
    }
    cases = [
        ("op0", {"OP": 0}),
        ("op10", {"OP": 10}),
        ("op15", {"OP": 15}),
        ("bucketize_var", {"OP": 7, "FORMAT": FORMATS["VAR"]}),
        ("bucketize_fixed8_int32", {"OP": 8, "FORMAT": FORMATS["FIXED8"], "DTYPE": 0}),
        ("bucketize_fixed4_float64", {"OP": 7, "FORMAT": FORMATS["FIXED4"], "DTYPE": 3}),
        ("varint_fixed8", {"OP": 9}),
        ("xxh64_seq", {"OP": 2, "FORMAT": FORMATS["SEQ"]}),
        ("mod_zero_buckets", {"OP": 3}),
        ("fid1_slot1024", {"OP": 5, "SLOT": 1024}),
        ("fid2_slot32768", {"OP": 6, "SLOT": 32768}),
        ("bucketize_nb_over_depth", {"OP": 7, "DTYPE": 1, "NUM_BOUNDARIES": ENGINE["table_depth"] + 1}),
    ]
    jobs = [batch_job(f"bad_param/{n}", {**base, **r}, [], [k8], "steady") for n, r in cases]
    legal = [
        ("fid1_slot1023", {"OP": 5, "SLOT": 1023}),
        ("fid2_slot32767", {"OP": 6, "SLOT": 32767}),
        ("mod_one_bucket", {"OP": 3, "NUM_BUCKETS_LO": 1}),
        ("mod_2pow63", {"OP": 3, "NUM_BUCKETS_HI": 1 << 31}),
        ("fastrange_2pow63", {"OP": 4, "NUM_BUCKETS_HI": 1 << 31}),
    ]
    jobs += [batch_job(f"param_edge/{n}", {**base, **r}, [], [k8], "steady") for n, r in legal]
    # A full boundary table (TABLE_DEPTH entries) and the longest legal SEQ (SEQ_MAX values).
    x = np.array([rng.randint(-(1 << 40), 1 << 40) for _ in range(12)], np.int64)
    b = np.array(sorted(rng.sample(range(-(1 << 40), 1 << 40), ENGINE["table_depth"])), np.int64)
    x[:4] = b[[0, 1, -1, 100]]
    jobs.append(
        _job_from_call("param_edge/full_table", "bucketize", x, "steady", seed, boundaries=b, right=False)
    )
    seqs = _sequences(rng, [ENGINE["seq_max"], 1])
    jobs.append(_job_from_call("param_edge/seq_max", "delta_varint_encode", seqs, "both", seed))
    return jobs


def soft_reset_job(seed: int) -> dict[str, Any]:
    rng = random.Random(seed ^ 0x50F7)
    k8 = [rng.getrandbits(64) for _ in range(40)]
    regs = {
        "OP": OP_CODES["xxh64"],
        "FORMAT": FORMATS["FIXED8"],
        "DTYPE": 0,
        "COUNT": 40,
        "SEED_LO": 7,
        "SEED_HI": 0,
        "NUM_BUCKETS_LO": 0,
        "NUM_BUCKETS_HI": 0,
        "SLOT": 0,
        "NUM_BOUNDARIES": 0,
    }
    return {
        "kind": "soft_reset",
        "name": "soft_reset/stalled_output",
        "regs": regs,
        "table": [],
        "frames": [k8],
        "seed": seed,
    }


def register_expectations(build: str = ENGINE["build"]) -> dict[str, Any]:
    caps = ENGINE["table_depth"] | (ENGINE["lanes"] << 16) | ((8 * ENGINE["lanes"]) << 24)
    return {
        "ID": ENGINE["id"],
        "VERSION": ENGINE["version"],
        "CAPS": caps,
        "OPS": sum(1 << k for k in built_codes(build)) & 0xFFFFFFFF,
        "OPS_HI": sum(1 << k for k in built_codes(build)) >> 32,
        "SEQ_MAX": ENGINE["seq_max"],
        "RECORD_MAX": record_max_of(build),
        "TRAILER_MAGIC": TRAILER_MAGIC,
    }


def write_plan(
    path: str | Path, jobs: list[dict[str, Any]], *, mutate: str | None = None, build: str = ENGINE["build"]
) -> Path:
    """Write ``jobs`` (and the register expectations of the engine ``build``) as the plan file a
    bench reads.

    ``mutate="flip"`` corrupts the scoreboard (bit 0 of the first expected result word): a
    bench run on such a plan must FAIL (the mutation check)."""
    jobs = [dict(j) for j in jobs]
    if mutate == "flip":
        for j in jobs:
            if j.get("kind") == "batch" and len(j.get("expect_out", [])) > 1:
                j["expect_out"] = [j["expect_out"][0] ^ 1] + j["expect_out"][1:]
                break
    elif mutate is not None:
        raise ValueError(f"unknown mutation {mutate!r}")
    path = Path(path)
    path.write_text(json.dumps({"registers": register_expectations(build), "jobs": jobs}))
    return path


def total_words(jobs: Iterable[dict[str, Any]]) -> int:
    return sum(sum(len(f) for f in j["frames"]) + len(j.get("expect_out", [])) for j in jobs)
