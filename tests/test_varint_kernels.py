"""The varint kernels (host/cpu/kernels_varint.py) against the golden model, on both code paths.

Each equation is checked with the kernels as compiled for this CPU (``pdep``/``pext`` where it has
BMI2) and with the portable shift-and-mask paths (``bmi2=False``), and through the CPU backend
(serial one-pass kernels and the parallel two-pass ones). Inputs put 1- to 10-byte varints at
every position near the end of a buffer and of a sequence (the loads' last 8 bytes take the
byte loop), and the lanes of the decoder over many sequences of uneven lengths.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from offload import golden
from offload.batch import as_encoded, as_sequences
from offload.host.cpu import CpuBackend
from offload.host.cpu import intrinsics as intr
from offload.host.cpu import kernels_varint as kv
from offload.ops import OpCall

SER = CpuBackend(threads=1)
PAR = CpuBackend(threads=2, parallel_threshold=0)
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
PATHS = [pytest.param(True, id="bmi2"), pytest.param(False, id="portable")]
_SOFT_DECODER = kv._decoder(False)

Seqs = list[list[int]]
Decoded = tuple[np.ndarray, np.ndarray] | str


# ---------------------------------------------------------------------------------------------
# The kernels on one path, and the golden model
# ---------------------------------------------------------------------------------------------


def _paths(bmi2: bool) -> None:
    if bmi2 and not intr.HAS_BMI2:
        pytest.skip("this CPU has no BMI2: its kernels take the portable path (the other param)")


def _pair(seqs: Seqs) -> tuple[np.ndarray, np.ndarray]:
    vo = np.zeros(len(seqs) + 1, np.int64)
    vo[1:] = np.cumsum([len(s) for s in seqs])
    return vo, np.array([v for s in seqs for v in s], np.int64)


def encode(seqs: Seqs, bmi2: bool) -> tuple[np.ndarray, bytes]:
    """The one-pass encoder on one path (the kernel :func:`kv.encode_ser` runs on this CPU's)."""
    vo, vals = _pair(seqs)
    if bmi2:
        offsets, data = kv.encode_ser(vo, vals)
        return offsets, data.tobytes()
    offsets = np.empty(len(seqs) + 1, np.int64)
    data = np.empty(10 * len(vals) + 8, np.uint8)
    size = kv._encode_one_pass(vo, vals, offsets, data, False)
    return offsets, data[:size].tobytes()


def encode_two_pass(seqs: Seqs, bmi2: bool) -> tuple[np.ndarray, bytes]:
    """Sizes, then fill in two halves (the chunked path's kernels): the halves' last bytes take
    the byte loop."""
    vo, vals = _pair(seqs)
    n = len(seqs)
    offsets = np.zeros(n + 1, np.int64)
    kv.encode_sizes_ser(vo, vals, offsets)
    np.cumsum(offsets, out=offsets)
    data = np.full(int(offsets[-1]), 0xAA, np.uint8)
    for lo, hi in ((0, n // 2), (n // 2, n)):
        kv._encode_fill_range(vo, vals, offsets, data, lo, hi, bmi2)
    return offsets, data.tobytes()


def decode(offsets: np.ndarray, data: bytes, bmi2: bool) -> Decoded:
    """(value offsets, values), or the error message, from the one-pass decoder on one path."""
    buf = np.frombuffer(data, np.uint8)
    err = np.zeros(3, np.int64)
    if bmi2:
        vo, out = kv.decode_ser(offsets, buf, err)
    else:
        vo = np.empty(offsets.shape[0], np.int64)
        out = np.empty(kv.count_ends_ser(offsets, buf), np.int64)
        starts = np.empty(kv._LANES + 1, np.int64)
        ks = np.empty(kv._LANES + 1, np.int64)
        lane_err = np.zeros((kv._LANES, 3), np.int64)
        kv._lane_bounds(offsets, buf, 0, starts, ks)
        _SOFT_DECODER(offsets, buf, vo, out, starts, ks, lane_err)
        kv._first_error(lane_err, err)
    if err[0]:
        return str(kv.decode_error(int(err[0]), int(err[1]), int(err[2]), buf))
    return vo, out


def golden_encode(seqs: Seqs) -> tuple[np.ndarray, bytes]:
    parts = [golden.delta_varint_encode_seq(s) for s in seqs]
    offsets = np.zeros(len(parts) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    return offsets, b"".join(parts)


def golden_decode(offsets: np.ndarray, data: bytes) -> Decoded:
    vals: list[int] = []
    vo = [0]
    for i in range(offsets.shape[0] - 1):
        s, e = int(offsets[i]), int(offsets[i + 1])
        try:
            vals += golden.delta_varint_decode_seq(data[s:e], i, s)
        except ValueError as exc:
            return str(exc)
        vo.append(len(vals))
    return np.array(vo, np.int64), np.array(vals, np.int64)


def same(got: Decoded, exp: Decoded) -> bool:
    if isinstance(got, str) or isinstance(exp, str):
        return got == exp
    return np.array_equal(got[0], exp[0]) and np.array_equal(got[1], exp[1])


def check_roundtrip(seqs: Seqs, bmi2: bool) -> None:
    """encode == golden encode (one pass and two passes), decode(that) == golden decode == seqs."""
    exp_offsets, exp_data = golden_encode(seqs)
    for enc in (encode, encode_two_pass):
        offsets, data = enc(seqs, bmi2)
        assert data == exp_data, enc.__name__
        assert np.array_equal(offsets, exp_offsets), enc.__name__
    got = decode(exp_offsets, exp_data, bmi2)
    assert same(got, golden_decode(exp_offsets, exp_data))
    assert same(got, _pair(seqs))


def check_decode(offsets: np.ndarray, data: bytes, bmi2: bool) -> None:
    assert same(decode(offsets, data, bmi2), golden_decode(offsets, data))


def varint_of_len(n: int) -> int:
    """A value whose first delta (from 0) is an ``n``-byte varint (zigzag of a positive v: 2v)."""
    return (1 << (7 * (n - 1))) // 2 if n < 10 else I64_MAX


# ---------------------------------------------------------------------------------------------
# Building blocks: bit scans, pdep/pext
# ---------------------------------------------------------------------------------------------


def test_bit_intrinsics_equal_python() -> None:
    from numba import njit

    @njit
    def run(x: np.ndarray, m: np.ndarray, out: np.ndarray) -> None:
        for i in range(x.shape[0]):
            out[i, 0] = intr.clz64(x[i])
            out[i, 1] = intr.ctz64(x[i])
            out[i, 2] = intr.popcount64(x[i])
            out[i, 3] = intr.pdep64(x[i], m[i])
            out[i, 4] = intr.pext64(x[i], m[i])

    rng = np.random.default_rng(7)
    special = [0, 1, 2**63, 2**64 - 1, 0x7F7F7F7F7F7F7F7F, 0x8080808080808080]
    x = np.array(special + list(rng.integers(0, 2**64 - 1, 200, np.uint64, endpoint=True)), np.uint64)
    m = np.array(special[::-1] + list(rng.integers(0, 2**64 - 1, 200, np.uint64, endpoint=True)), np.uint64)
    out = np.zeros((len(x), 5), np.uint64)
    run(x, m, out)
    for i, (xi, mi) in enumerate(zip(x.tolist(), m.tolist(), strict=True)):
        bits = [b for b in range(64) if mi >> b & 1]
        dep = sum(1 << b for k, b in enumerate(bits) if xi >> k & 1)
        ext = sum(1 << k for k, b in enumerate(bits) if xi >> b & 1)
        assert out[i].tolist() == [64 - xi.bit_length(), (xi & -xi).bit_length() - 1 if xi else 64,
                                   bin(xi).count("1"), dep, ext]  # fmt: skip


def test_portable_pdep_pext_equal_python() -> None:
    """The bit loops that stand in for pdep/pext on CPUs without BMI2 (run as Python here)."""
    rng = np.random.default_rng(8)
    for _ in range(100):
        x, m = (int(v) for v in rng.integers(0, 2**64 - 1, 2, np.uint64, endpoint=True))
        bits = [b for b in range(64) if m >> b & 1]
        with np.errstate(over="ignore"):
            assert int(intr._pdep_soft(np.uint64(x), np.uint64(m))) == sum(
                1 << b for k, b in enumerate(bits) if x >> k & 1
            )
            assert int(intr._pext_soft(np.uint64(x), np.uint64(m))) == sum(
                1 << k for k, b in enumerate(bits) if x >> b & 1
            )


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bmi2", PATHS)
def test_empty_and_single_values(bmi2: bool) -> None:
    _paths(bmi2)
    check_roundtrip([[]], bmi2)
    check_roundtrip([[], [], []], bmi2)
    for v in (0, 1, -1, 63, -64, 64, I64_MAX, I64_MIN):
        check_roundtrip([[v]], bmi2)
        check_roundtrip([[], [v], []], bmi2)


@pytest.mark.parametrize("bmi2", PATHS)
def test_extreme_deltas(bmi2: bool) -> None:
    """int64 min/max values and deltas (10-byte varints, wrapping deltas)."""
    _paths(bmi2)
    ext = [I64_MIN, I64_MAX, 0, I64_MIN, -1, I64_MAX, I64_MAX, 1, I64_MIN + 1]
    check_roundtrip([ext, ext[::-1], [I64_MAX] * 20, [I64_MIN] * 20], bmi2)


@pytest.mark.parametrize("bmi2", PATHS)
def test_every_length_at_every_position_near_the_end(bmi2: bool) -> None:
    """A varint of 1..10 bytes after 0..17 one-byte varints, at the end of the buffer (one
    sequence) and at the end of a sequence followed by another (two)."""
    _paths(bmi2)
    for n in range(1, 11):
        for f in range(18):
            seq = [0] * f + [varint_of_len(n)]
            assert len(golden.delta_varint_encode_seq(seq)) == f + n
            check_roundtrip([seq], bmi2)
            check_roundtrip([seq, [5]], bmi2)
            check_roundtrip([[3] * (f % 3), seq], bmi2)


@pytest.mark.parametrize("bmi2", PATHS)
def test_every_length_boundary_value(bmi2: bool) -> None:
    """Deltas at each varint length's edges (zigzag 2**(7k) - 1 and 2**(7k)), both signs."""
    _paths(bmi2)
    seq: list[int] = []
    v = 0
    for k in range(1, 10):
        for d in (
            (1 << (7 * k)) // 2 - 1,
            (1 << (7 * k)) // 2,
            -((1 << (7 * k)) // 2),
            -((1 << (7 * k)) // 2) - 1,
        ):
            v = (v + d + 2**63) % 2**64 - 2**63
            seq.append(v)
    check_roundtrip([seq, seq[::-1], seq[:7]], bmi2)


@pytest.mark.parametrize("bmi2", PATHS)
def test_many_sequences_of_uneven_lengths(bmi2: bool) -> None:
    """Lanes of very different sizes: runs of empty sequences, long ones, mixed varint lengths."""
    _paths(bmi2)
    rng = np.random.default_rng(19)
    lengths = [0] * 50 + list(rng.integers(0, 40, 300)) + [0] * 7 + [2000, 1, 0, 3000] + [0] * 30
    seqs: Seqs = []
    for n in lengths:
        bits = rng.integers(0, 64, int(n))
        deltas = [
            int(rng.integers(-(2 ** int(b)), 2 ** int(b), dtype=np.int64)) if b < 63 else I64_MIN
            for b in bits
        ]
        seqs.append([int(x) for x in np.cumsum(np.array(deltas, np.int64))])
    check_roundtrip(seqs, bmi2)
    check_roundtrip(seqs[::-1], bmi2)
    check_roundtrip([s for s in seqs if s], bmi2)  # no empty sequence
    check_roundtrip([[7] * 500] + [[] for _ in range(100)], bmi2)  # one lane has it all


# ---------------------------------------------------------------------------------------------
# Malformed input: the golden model's error, first one in sequence order
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bmi2", PATHS)
def test_truncated_at_every_byte(bmi2: bool) -> None:
    """A sequence cut after each byte of its varints (cut off at the end of the sequence), at
    the end of the buffer and before another sequence."""
    _paths(bmi2)
    for n in range(2, 11):
        full = golden.delta_varint_encode_seq([1, varint_of_len(n), 3])
        for cut in range(1, len(full)):
            part = full[:cut]
            for tail in (b"", b"\x02", bytes(range(0, 40))):
                data = part + tail
                offsets = np.array([0, cut, len(data)] if tail else [0, cut], np.int64)
                check_decode(offsets, data, bmi2)
                check_decode(np.array([0, 0, cut, len(data)], np.int64), data, bmi2)


@pytest.mark.parametrize("bmi2", PATHS)
def test_too_long_and_too_large(bmi2: bool) -> None:
    """11-byte varints and 10th bytes above 0x01, at every position near the buffer end."""
    _paths(bmi2)
    for bad in (b"\xff" * 10 + b"\x00", b"\x80" * 10 + b"\x01", b"\xff" * 9 + b"\x02", b"\x80" * 9 + b"\x7f"):
        for f in range(12):
            for tail in (b"", b"\x00" * 3):
                data = b"\x02" * f + bad + tail
                check_decode(np.array([0, len(data)], np.int64), data, bmi2)
                check_decode(np.array([0, f, len(data)], np.int64), data, bmi2)
    ten = b"\xff" * 9 + b"\x01"  # the largest valid varint
    check_decode(np.array([0, 10, 20], np.int64), ten + ten, bmi2)


@pytest.mark.parametrize("bmi2", PATHS)
def test_first_error_wins_across_lanes(bmi2: bool) -> None:
    """Errors in several lanes: the one of the lowest sequence is reported."""
    _paths(bmi2)
    good = golden.delta_varint_encode_seq(list(range(0, 3000, 7)))
    parts = [good] * 40
    parts[13] = good[:-1] + b"\x80"  # cut off
    parts[30] = b"\xff" * 11  # longer than 10 bytes
    data = b"".join(parts)
    offsets = np.zeros(41, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    check_decode(offsets, data, bmi2)
    assert "sequence 13 " in str(decode(offsets, data, bmi2))


# ---------------------------------------------------------------------------------------------
# Through the backend: serial (one pass) and parallel (two passes, chunks on two threads)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("be", [SER, PAR], ids=["serial", "parallel"])
def test_backend_equals_golden(be: CpuBackend) -> None:
    rng = np.random.default_rng(5)
    seqs: Seqs = [
        [int(x) for x in np.cumsum(rng.integers(-(2**40), 2**40, int(n)))] for n in rng.integers(0, 30, 500)
    ]
    seqs += [[I64_MIN, I64_MAX], [], [varint_of_len(10)]]
    offsets, data = be.run(OpCall("delta_varint_encode"), as_sequences(seqs))
    exp_offsets, exp_data = golden_encode(seqs)
    assert data.tobytes() == exp_data and np.array_equal(offsets, exp_offsets)
    vo, vals = be.run(OpCall("delta_varint_decode"), as_encoded(offsets, data))
    assert same((vo, vals), _pair(seqs))
    bad = bytearray(exp_data)
    bad[int(exp_offsets[300]) - 1] |= 0x80  # sequence 299 (or the last non-empty one before) cut
    msg = golden_decode(exp_offsets, bytes(bad))
    assert isinstance(msg, str)
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        be.run(OpCall("delta_varint_decode"), as_encoded(exp_offsets, np.frombuffer(bytes(bad), np.uint8)))


def test_encode_output_owns_exactly_its_bytes() -> None:
    """The one-pass encoder's buffer is shrunk to the encoding (not a view of a larger one)."""
    offsets, data = kv.encode_ser(*_pair([[1, 2, 3], [2**40]]))
    assert data.flags.owndata and data.shape == (int(offsets[-1]),)


def test_encode_above_the_one_pass_limit_runs_two_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches too large to reserve 10 bytes a value are sized first, then filled."""
    seqs = [[1, 2, 3], [], [I64_MIN, I64_MAX], [varint_of_len(9)] * 3]
    monkeypatch.setattr(kv, "_ONE_PASS_MAX_VALUES", 2)
    offsets, data = kv.encode_ser(*_pair(seqs))
    exp_offsets, exp_data = golden_encode(seqs)
    assert data.tobytes() == exp_data and np.array_equal(offsets, exp_offsets)


@pytest.mark.parametrize("be", [SER, PAR], ids=["serial", "parallel"])
def test_decode_of_int32_offsets(be: CpuBackend) -> None:
    """A binary column's int32 offsets (the lanes read int64 ones: converted on the way)."""
    from offload.batch import VarChunk, VarRecords

    seqs: Seqs = [[5, 3, 3, 10], [], [1], [I64_MIN, I64_MAX], list(range(0, 900, 9))] * 3
    offsets, data = golden_encode(seqs)
    batch = VarRecords((VarChunk(offsets.astype(np.int32), np.frombuffer(data, np.uint8)),))
    assert same(be.run(OpCall("delta_varint_decode"), batch), _pair(seqs))


def test_kernels_compiled_for_a_cpu_without_bmi2(tmp_path: object) -> None:
    """For a CPU without BMI2 (numba told so), HAS_BMI2 is False and the kernels, with no
    ``pext`` instruction, still equal the golden model (a fresh process and numba cache)."""
    import os
    import platform
    import subprocess
    import sys

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("names an x86-64 CPU without BMI2: only meaningful on x86-64")
    script = """
import numpy as np
from offload import golden
from offload.host.cpu import intrinsics, kernels_varint as kv
assert not intrinsics.HAS_BMI2
seqs = [[5, 3, 3, 10], [], [1], [0, 1, -1, 2**63 - 1, -2**63], list(range(0, 10**6, 12345))]
vo = np.zeros(len(seqs) + 1, np.int64)
vo[1:] = np.cumsum([len(s) for s in seqs])
vals = np.array([x for s in seqs for x in s], np.int64)
offs, data = kv.encode_ser(vo, vals)
assert data.tobytes() == b"".join(golden.delta_varint_encode_seq(s) for s in seqs)
err = np.zeros(3, np.int64)
vo2, out = kv.decode_ser(offs, data, err)
assert err[0] == 0 and np.array_equal(out, vals) and np.array_equal(vo2, vo)
code = next(iter(kv.decode_into_ser.overloads.values())).library.get_asm_str()
assert "pext" not in code and "pdep" not in code
print("ok")
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_CPU_NAME="x86-64")
    env["NUMBA_CPU_FEATURES"] = "+sse2,+cx16,+popcnt"
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.stdout.strip() == "ok", run.stderr[-2000:]
