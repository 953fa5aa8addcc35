"""The varint kernels (host/cpu/kernels_varint.py) against the golden model, on every code path.

Each equation is checked with the decoder of each CPU class: the AVX-512 block decoder
(``avx512``: where the CPU has AVX-512 VBMI2, what :func:`kv.decode_ser` runs), the two-lane
decoder with ``pext`` (``bmi2``) and with shifts and masks (``portable``); encode with
``pdep`` (``avx512``, ``bmi2``) and portably; and through the CPU backend (serial one-pass
kernels and the parallel two-pass ones). Inputs put 1- to 10-byte varints at every position near
the end of a buffer and of a sequence (the loads' last bytes take the byte loop), at every
position of a 64-byte block, past a block's 32 varints, and the lanes of the decoder over many
sequences of uneven lengths; malformed input at every byte; buffers between guard pages.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit

from offload import golden
from offload.batch import as_encoded, as_sequences
from offload.host.cpu import CpuBackend
from offload.host.cpu import intrinsics as intr
from offload.host.cpu import kernels_varint as kv
from offload.ops import OpCall

SER = CpuBackend(threads=1)
PAR = CpuBackend(threads=2, parallel_threshold=0)
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
PATHS = ["avx512", "bmi2", "portable"]
_LANE_DECODERS = {"bmi2": kv._decoder(True), "portable": kv._decoder(False)}

Seqs = list[list[int]]
Decoded = tuple[np.ndarray, np.ndarray] | str


# ---------------------------------------------------------------------------------------------
# The kernels on one path, and the golden model
# ---------------------------------------------------------------------------------------------


def _paths(path: str) -> None:
    if path == "avx512" and not intr.HAS_AVX512_VBMI2:
        pytest.skip("this CPU has no AVX-512 VBMI2: its decoder is the two-lane one (the other params)")
    if path == "bmi2" and not intr.HAS_BMI2:
        pytest.skip("this CPU has no BMI2: its kernels take the portable path (the other param)")


def _pair(seqs: Seqs) -> tuple[np.ndarray, np.ndarray]:
    vo = np.zeros(len(seqs) + 1, np.int64)
    vo[1:] = np.cumsum([len(s) for s in seqs])
    return vo, np.array([v for s in seqs for v in s], np.int64)


def encode(seqs: Seqs, path: str) -> tuple[np.ndarray, bytes]:
    """The one-pass encoder on one path (:func:`kv.encode_ser`, the AVX-512 one where the CPU
    has it, or a varint at a time with and without ``pdep``)."""
    vo, vals = _pair(seqs)
    if path == "avx512":
        assert kv.encode_one_pass_ser.py_func is kv._encode_one_pass_blocks
        offsets, data = kv.encode_ser(vo, vals)
        return offsets, data.tobytes()
    offsets = np.empty(len(seqs) + 1, np.int64)
    data = np.empty(10 * len(vals) + 8, np.uint8)
    size = kv._encode_one_pass(vo, vals, offsets, data, path == "bmi2")
    return offsets, data[:size].tobytes()


def encode_two_pass(seqs: Seqs, path: str) -> tuple[np.ndarray, bytes]:
    """Sizes, then fill in two halves (the chunked path's kernels): the halves' last bytes take
    the byte loop."""
    vo, vals = _pair(seqs)
    n = len(seqs)
    offsets = np.zeros(n + 1, np.int64)
    kv.encode_sizes_ser(vo, vals, offsets)
    np.cumsum(offsets, out=offsets)
    data = np.full(int(offsets[-1]), 0xAA, np.uint8)
    for lo, hi in ((0, n // 2), (n // 2, n)):
        if path == "avx512":
            assert kv.encode_fill_ser.py_func is kv._encode_fill_blocks
            kv.encode_fill_ser(vo[lo : hi + 1], vals, offsets[lo : hi + 1], data)
        else:
            kv._encode_fill_range(vo, vals, offsets, data, lo, hi, path == "bmi2")
    return offsets, data.tobytes()


def decode_buf(offsets: np.ndarray, buf: np.ndarray, path: str) -> Decoded:
    """(value offsets, values), or the error message, from the one-pass decoder on one path
    (``offsets`` may start after the buffer's first byte and end before its last)."""
    err = np.zeros(3, np.int64)
    if path == "avx512":
        assert kv.decode_into_ser.py_func is kv._decode_into_blocks
        vo, out = kv.decode_ser(offsets, buf, err)
    else:
        offsets = offsets.astype(np.int64)
        vo = np.empty(offsets.shape[0], np.int64)
        out = np.empty(kv._count_ends(buf, offsets[0], offsets[-1]), np.int64)
        starts = np.empty(kv._LANES + 1, np.int64)
        ks = np.empty(kv._LANES + 1, np.int64)
        lane_err = np.zeros((kv._LANES, 3), np.int64)
        kv._lane_bounds(offsets, buf, 0, starts, ks)
        _LANE_DECODERS[path](offsets, buf, vo, out, starts, ks, lane_err)
        kv._first_error(lane_err, err)
    if err[0]:
        return str(kv.decode_error(int(err[0]), int(err[1]), int(err[2]), buf))
    return vo, out


def decode(offsets: np.ndarray, data: bytes, path: str) -> Decoded:
    return decode_buf(offsets, np.frombuffer(data, np.uint8), path)


_count_bytes = njit(kv._decode_count_bytes)


def count(offsets: np.ndarray, buf: np.ndarray, path: str) -> Decoded:
    """The parallel path's count pass on one path (64-byte blocks with AVX-512, else byte by
    byte), as (value offsets: the counts' running sum, the golden values) or the error message,
    to compare with :func:`golden_decode`."""
    counts = np.zeros(offsets.shape[0], np.int64)
    err = np.zeros(3, np.int64)
    if path == "avx512":
        assert kv.decode_count_ser.py_func is kv._decode_count_blocks
        kv.decode_count_ser(offsets, buf, counts, err)
    else:
        _count_bytes(offsets, buf, counts, err)
    if err[0]:
        return str(kv.decode_error(int(err[0]), int(err[1]), int(err[2]), buf))
    exp = golden_decode(offsets, buf.tobytes())
    return np.cumsum(counts), exp[1] if not isinstance(exp, str) else np.zeros(0, np.int64)


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


def check_roundtrip(seqs: Seqs, path: str) -> None:
    """encode == golden encode (one pass and two passes), decode(that) == golden decode == seqs."""
    exp_offsets, exp_data = golden_encode(seqs)
    for enc in (encode, encode_two_pass):
        offsets, data = enc(seqs, path)
        assert data == exp_data, enc.__name__
        assert np.array_equal(offsets, exp_offsets), enc.__name__
    got = decode(exp_offsets, exp_data, path)
    assert same(got, golden_decode(exp_offsets, exp_data))
    assert same(got, _pair(seqs))
    assert same(
        count(exp_offsets, np.frombuffer(exp_data, np.uint8), path), golden_decode(exp_offsets, exp_data)
    )


def check_decode(offsets: np.ndarray, data: bytes, path: str) -> None:
    exp = golden_decode(offsets, data)
    assert same(decode(offsets, data, path), exp)
    assert same(count(offsets, np.frombuffer(data, np.uint8), path), exp)


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


@pytest.mark.parametrize("path", PATHS)
def test_empty_and_single_values(path: str) -> None:
    _paths(path)
    check_roundtrip([[]], path)
    check_roundtrip([[], [], []], path)
    for v in (0, 1, -1, 63, -64, 64, I64_MAX, I64_MIN):
        check_roundtrip([[v]], path)
        check_roundtrip([[], [v], []], path)


@pytest.mark.parametrize("path", PATHS)
def test_extreme_deltas(path: str) -> None:
    """int64 min/max values and deltas (10-byte varints, wrapping deltas)."""
    _paths(path)
    ext = [I64_MIN, I64_MAX, 0, I64_MIN, -1, I64_MAX, I64_MAX, 1, I64_MIN + 1]
    check_roundtrip([ext, ext[::-1], [I64_MAX] * 20, [I64_MIN] * 20], path)


@pytest.mark.parametrize("path", PATHS)
def test_every_length_at_every_position_near_the_end(path: str) -> None:
    """A varint of 1..10 bytes after 0..17 one-byte varints, at the end of the buffer (one
    sequence) and at the end of a sequence followed by another (two)."""
    _paths(path)
    for n in range(1, 11):
        for f in range(18):
            seq = [0] * f + [varint_of_len(n)]
            assert len(golden.delta_varint_encode_seq(seq)) == f + n
            check_roundtrip([seq], path)
            check_roundtrip([seq, [5]], path)
            check_roundtrip([[3] * (f % 3), seq], path)


@pytest.mark.parametrize("path", PATHS)
def test_every_length_boundary_value(path: str) -> None:
    """Deltas at each varint length's edges (zigzag 2**(7k) - 1 and 2**(7k)), both signs."""
    _paths(path)
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
    check_roundtrip([seq, seq[::-1], seq[:7]], path)


@pytest.mark.parametrize("path", PATHS)
def test_many_sequences_of_uneven_lengths(path: str) -> None:
    """Lanes of very different sizes: runs of empty sequences, long ones, mixed varint lengths."""
    _paths(path)
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
    check_roundtrip(seqs, path)
    check_roundtrip(seqs[::-1], path)
    check_roundtrip([s for s in seqs if s], path)  # no empty sequence
    check_roundtrip([[7] * 500] + [[] for _ in range(100)], path)  # one lane has it all


@pytest.mark.parametrize("path", PATHS)
def test_every_position_of_a_block(path: str) -> None:
    """Varints of 1..10 bytes after every prefix of 0..70 bytes (so at every position of a
    64-byte block and across two), and runs of one-byte varints past a block's 32; sequences
    starting at every byte (one value each)."""
    _paths(path)
    rng = np.random.default_rng(64)
    for n in range(1, 11):
        for f in range(71):
            seq = [0] * f + [varint_of_len(n)] + [int(x) for x in rng.integers(-200, 200, 5)]
            check_roundtrip([seq], path)
            check_roundtrip([[1]] * (f % 9) + [seq[: f // 2], seq[f // 2 :]], path)
    check_roundtrip([[0] * k for k in (31, 32, 33, 63, 64, 65, 200)], path)
    check_roundtrip([[i % 50] for i in range(300)], path)  # 300 sequences of one byte each
    check_roundtrip([[i % 50, 2**40] for i in range(300)], path)


@pytest.mark.parametrize("path", PATHS)
def test_long_varints_among_short_ones(path: str) -> None:
    """8-byte varints (the largest a block decodes) next to 9- and 10-byte ones (the byte loop)
    in long sequences: the decoder leaves the blocks and comes back at every position."""
    _paths(path)
    rng = np.random.default_rng(89)
    for long_len in (8, 9, 10):
        for gap in (0, 1, 5, 30, 31, 32, 33, 60):
            deltas = []
            for _ in range(12):
                deltas += [int(x) for x in rng.integers(-60, 60, gap)]
                deltas.append(varint_of_len(long_len) * int(rng.choice([1, -1])))
            seq = [int(x) for x in np.cumsum(np.array(deltas, np.int64))]
            check_roundtrip([seq, seq[:gap], [], seq[::-1]], path)


@pytest.mark.parametrize("path", PATHS)
def test_ranges_inside_a_larger_buffer(path: str) -> None:
    """Offsets that start after the buffer's first byte and end before its last (an Arrow
    slice): the bytes around them, continuation bytes or not, are never decoded."""
    _paths(path)
    rng = np.random.default_rng(11)
    seqs: Seqs = [
        [int(x) for x in np.cumsum(rng.integers(-3000, 3000, int(n)))] for n in rng.integers(0, 30, 60)
    ]
    offsets, data = golden_encode(seqs)
    for pad in (b"", b"\x00", b"\xff" * 3, b"\x80" * 70, bytes(range(256))):
        for tail in (b"", b"\xff", b"\x80" * 70, b"\x05" * 9):
            buf = np.frombuffer(pad + data + tail, np.uint8)
            got = decode_buf(offsets + len(pad), buf, path)
            assert same(got, _pair(seqs))
            assert same(decode_buf(offsets[10:31] + len(pad), buf, path), golden_decode(offsets[10:31], data))
            assert same(count(offsets + len(pad), buf, path), _pair(seqs))
            assert same(count(offsets[10:31] + len(pad), buf, path), golden_decode(offsets[10:31], data))


# ---------------------------------------------------------------------------------------------
# Malformed input: the golden model's error, first one in sequence order
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_truncated_at_every_byte(path: str) -> None:
    """A sequence cut after each byte of its varints (cut off at the end of the sequence), at
    the end of the buffer and before another sequence."""
    _paths(path)
    for n in range(2, 11):
        full = golden.delta_varint_encode_seq([1, varint_of_len(n), 3])
        for cut in range(1, len(full)):
            part = full[:cut]
            for tail in (b"", b"\x02", bytes(range(0, 40))):
                data = part + tail
                offsets = np.array([0, cut, len(data)] if tail else [0, cut], np.int64)
                check_decode(offsets, data, path)
                check_decode(np.array([0, 0, cut, len(data)], np.int64), data, path)


@pytest.mark.parametrize("path", PATHS)
def test_too_long_and_too_large(path: str) -> None:
    """11-byte varints and 10th bytes above 0x01, at every position near the buffer end."""
    _paths(path)
    for bad in (b"\xff" * 10 + b"\x00", b"\x80" * 10 + b"\x01", b"\xff" * 9 + b"\x02", b"\x80" * 9 + b"\x7f"):
        for f in range(12):
            for tail in (b"", b"\x00" * 3):
                data = b"\x02" * f + bad + tail
                check_decode(np.array([0, len(data)], np.int64), data, path)
                check_decode(np.array([0, f, len(data)], np.int64), data, path)
    ten = b"\xff" * 9 + b"\x01"  # the largest valid varint
    check_decode(np.array([0, 10, 20], np.int64), ten + ten, path)


@pytest.mark.parametrize("path", PATHS)
def test_too_long_across_a_block_boundary(path: str) -> None:
    """Varints of 10 and 11 bytes that straddle a 64-byte block (no 9 continuation bytes on
    either side), and the valid 10-byte varint, after 50..70 one-byte varints."""
    _paths(path)
    for bad in (b"\xff" * 10 + b"\x00", b"\xff" * 9 + b"\x02", b"\xff" * 9 + b"\x01"):
        for f in range(50, 71):
            data = b"\x02" * f + bad + b"\x04" * 5
            check_decode(np.array([0, len(data)], np.int64), data, path)
            check_decode(np.array([0, 3, len(data) - 2, len(data)], np.int64), data, path)


@pytest.mark.parametrize("path", PATHS)
def test_first_error_wins_across_lanes(path: str) -> None:
    """Errors in several lanes: the one of the lowest sequence is reported."""
    _paths(path)
    good = golden.delta_varint_encode_seq(list(range(0, 3000, 7)))
    parts = [good] * 40
    parts[13] = good[:-1] + b"\x80"  # cut off
    parts[30] = b"\xff" * 11  # longer than 10 bytes
    data = b"".join(parts)
    offsets = np.zeros(41, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    check_decode(offsets, data, path)
    assert "sequence 13 " in str(decode(offsets, data, path))


@pytest.mark.parametrize("path", PATHS)
def test_one_corrupt_byte_at_every_position(path: str) -> None:
    """Each byte of an encoding with its high bit flipped (two varints merged, or one cut in
    two): the golden model's values or its first error, whichever byte it is."""
    _paths(path)
    rng = np.random.default_rng(13)
    seqs: Seqs = [
        [int(x) for x in np.cumsum(rng.integers(-(2**20), 2**20, int(n)))] for n in (5, 0, 40, 1, 30, 9)
    ]
    seqs.append([varint_of_len(9), varint_of_len(10), 1, varint_of_len(8)])
    offsets, data = golden_encode(seqs)
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x80
        check_decode(offsets, bytes(bad), path)
        bad[pos] = 0xFF
        check_decode(offsets, bytes(bad), path)


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


def test_encode_of_strided_values() -> None:
    """Values that are a strided view (the block encoder reads them by address: a copy)."""
    seqs: Seqs = [[5, 3, 3, 10], [], [I64_MIN, I64_MAX], list(range(0, 900, 9))]
    vo, vals = _pair(seqs)
    wide = np.zeros(2 * len(vals), np.int64)
    wide[::2] = vals
    offsets, data = kv.encode_ser(vo, wide[::2])
    exp_offsets, exp_data = golden_encode(seqs)
    assert data.tobytes() == exp_data and np.array_equal(offsets, exp_offsets)
    out = np.zeros(len(exp_data), np.uint8)
    kv.encode_fill_ser(vo, wide[::2], exp_offsets, out)
    assert out.tobytes() == exp_data


def test_encode_above_the_one_pass_limit_runs_two_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches too large to reserve 10 bytes a value are sized first, then filled."""
    seqs = [[1, 2, 3], [], [I64_MIN, I64_MAX], [varint_of_len(9)] * 3]
    monkeypatch.setattr(kv, "_ONE_PASS_MAX_VALUES", 2)
    offsets, data = kv.encode_ser(*_pair(seqs))
    exp_offsets, exp_data = golden_encode(seqs)
    assert data.tobytes() == exp_data and np.array_equal(offsets, exp_offsets)


def test_decode_output_owns_exactly_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for one value a byte, shrunk to the values (not a view of a larger buffer); above
    the one-pass limit, or with an allocator given, the values are counted first."""
    seqs: Seqs = [[1, 2, 3], [], [2**40, -5], [I64_MIN, I64_MAX]]
    offsets, data = golden_encode(seqs)
    buf = np.frombuffer(data, np.uint8)
    vo, out = kv.decode_ser(offsets, buf, np.zeros(3, np.int64))
    assert same((vo, out), _pair(seqs)) and out.flags.owndata and out.shape == (7,)
    sizes: list[int] = []

    def empty(n: int, dtype: object) -> np.ndarray:
        sizes.append(n)
        return np.full(n, -1, np.int64)

    assert same(kv.decode_ser(offsets, buf, np.zeros(3, np.int64), empty), _pair(seqs))
    assert sizes == [len(seqs) + 1, 7]
    monkeypatch.setattr(kv, "_ONE_PASS_MAX_BYTES", 2)
    vo, out = kv.decode_ser(offsets, buf, np.zeros(3, np.int64))
    assert same((vo, out), _pair(seqs)) and out.flags.owndata and out.shape == (7,)


@pytest.mark.parametrize("counted", [False, True], ids=["one_pass", "counted"])
def test_decode_error_returns_no_values(counted: bool) -> None:
    offsets, data = golden_encode([[1, 2, 3], [300]])
    err = np.zeros(3, np.int64)
    vo, out = kv.decode_ser(
        offsets, np.frombuffer(data[:-1] + b"\x80", np.uint8), err, np.empty if counted else None
    )
    assert out.shape == (0,) and err.tolist() == [kv._ERR_CUT, 1, 3]


@pytest.mark.parametrize("be", [SER, PAR], ids=["serial", "parallel"])
def test_decode_of_int32_offsets(be: CpuBackend) -> None:
    """A binary column's int32 offsets (the lanes read int64 ones: converted on the way)."""
    from offload.batch import VarChunk, VarRecords

    seqs: Seqs = [[5, 3, 3, 10], [], [1], [I64_MIN, I64_MAX], list(range(0, 900, 9))] * 3
    offsets, data = golden_encode(seqs)
    batch = VarRecords((VarChunk(offsets.astype(np.int32), np.frombuffer(data, np.uint8)),))
    assert same(be.run(OpCall("delta_varint_decode"), batch), _pair(seqs))


_CPU_CLASSES = [
    pytest.param("x86-64", "+sse2,+cx16,+popcnt", False, id="x86-64"),
    pytest.param("haswell", "+sse4.2,+popcnt,+avx,+avx2,+bmi,+bmi2,+lzcnt", True, id="haswell"),
]


@pytest.mark.parametrize(("cpu", "features", "bmi2"), _CPU_CLASSES)
def test_kernels_compiled_for_a_cpu_without_avx512(
    tmp_path: object, cpu: str, features: str, bmi2: bool
) -> None:
    """For a CPU without AVX-512 (numba told so; an x86-64 without BMI2 too), the flags say so,
    the decoder is the two-lane one (``pext`` only with BMI2, no zmm register) and the kernels
    still equal the golden model (a fresh process and numba cache)."""
    import os
    import platform
    import subprocess
    import sys

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("names x86-64 CPUs without AVX-512: only meaningful on x86-64")
    script = f"""
import numpy as np
from offload import golden
from offload.host.cpu import intrinsics, kernels_varint as kv
assert intrinsics.HAS_BMI2 is {bmi2} and not intrinsics.HAS_AVX512_VBMI2
assert kv.decode_into_ser.py_func is kv._decode_into_lanes
assert kv.encode_one_pass_ser.py_func is kv._encode_one_pass_words
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
assert ("pext" in code) is {bmi2} and "pdep" not in code and "zmm" not in code
print("ok")
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.stdout.strip() == "ok", run.stderr[-2000:]


def test_avx512_decoder_is_compiled_where_the_cpu_has_it() -> None:
    """On a CPU with AVX-512 VBMI2 the decode kernels are the block decoder's, and its machine
    code has the byte permutes (not a scalar emulation of them)."""
    if not intr.HAS_AVX512_VBMI2:
        pytest.skip("this CPU has no AVX-512 VBMI2")
    assert kv.decode_into_ser.py_func is kv._decode_into_blocks
    assert kv.decode_fill_ser.py_func is kv._decode_fill_blocks
    assert kv.encode_one_pass_ser.py_func is kv._encode_one_pass_blocks
    from numba import njit

    fresh = njit(kv.decode_into_ser.py_func)  # not from the cache: its machine code can be read
    offsets, data = golden_encode([[1, 2, 3]])
    vo, out, err = np.empty(2, np.int64), np.empty(3, np.int64), np.zeros(3, np.int64)
    fresh(offsets, np.frombuffer(data, np.uint8), vo, out, err)
    assert out.tolist() == [1, 2, 3] and vo.tolist() == [0, 3]
    code = next(iter(fresh.overloads.values())).library.get_asm_str()
    for insn in ("vpcompressb", "vpermb", "vpmultishiftqb", "vpmovb2m"):
        assert insn in code, insn
    fresh_enc = njit(kv.encode_one_pass_ser.py_func)
    vo, vals = _pair([[1, 2, 3]])
    assert fresh_enc(vo, vals, np.empty(2, np.int64), np.empty(38, np.uint8)) == 3
    code = next(iter(fresh_enc.overloads.values())).library.get_asm_str()
    for insn in ("vpcompressb", "vpmultishiftqb"):
        assert insn in code, insn


_GUARDED = """
import ctypes, mmap, sys
import numpy as np
from offload import golden
from offload.host.cpu import kernels_varint as kv

libc = ctypes.CDLL(None, use_errno=True)
PAGE = mmap.PAGESIZE
keep = []


def guarded(nbytes, at_end):
    \"\"\"nbytes of memory between two inaccessible pages, against the one after (at_end) or the one
    before: a read or write past the buffer faults.\"\"\"
    pages = -(-max(nbytes, 1) // PAGE) + 2
    m = mmap.mmap(-1, pages * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    for page in (0, pages - 1):
        assert libc.mprotect(ctypes.c_void_p(base + page * PAGE), PAGE, 0) == 0
    keep.append(m)
    start = (pages - 1) * PAGE - nbytes if at_end else PAGE
    return np.frombuffer(m, np.uint8, nbytes, start)


def run(seqs, corrupt, at_end):
    parts = [golden.delta_varint_encode_seq(s) for s in seqs]
    offsets = np.zeros(len(parts) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    raw = bytearray(b"".join(parts))
    if corrupt and raw:
        raw[-1] |= 0x80  # the last varint cut off: the decoder looks for its end
    data = guarded(len(raw), at_end)
    data[:] = np.frombuffer(bytes(raw), np.uint8)
    count = kv._count_ends(data, offsets[0], offsets[-1])
    vo = guarded(8 * len(offsets), at_end).view(np.int64)
    out = guarded(8 * count, at_end).view(np.int64)
    err = np.zeros(3, np.int64)
    kv.decode_into_ser(offsets, data, vo, out, err)
    if not corrupt:  # the one-pass encoder: values and 10 bytes a value + 8 between guards
        flat = [v for s in seqs for v in s]
        vals = guarded(8 * len(flat), at_end).view(np.int64)
        vals[:] = flat
        vo = np.zeros(len(seqs) + 1, np.int64)
        vo[1:] = np.cumsum([len(s) for s in seqs])
        room = guarded(10 * len(flat) + 8, at_end)
        offs = np.empty(len(seqs) + 1, np.int64)
        size = kv.encode_one_pass_ser(vo, vals, offs, room)
        assert room[:size].tobytes() == bytes(raw) and offs.tolist() == offsets.tolist()
    counts = np.zeros(len(offsets), np.int64)  # the parallel path's two passes
    kv.decode_count_ser(offsets, data, counts, err)
    if not corrupt:
        assert err[0] == 0 and out.tolist() == [v for s in seqs for v in s], (seqs, at_end)
        out2 = guarded(8 * count, at_end).view(np.int64)
        kv.decode_fill_ser(offsets, data, np.cumsum(counts), out2)
        assert out2.tolist() == out.tolist()


rng = np.random.default_rng(3)
for n in (1, 2, 7, 8, 9, 31, 32, 33, 63, 64, 65, 200, 3000):
    for lens in ([n], [n // 2, 0, n - n // 2]):
        seqs = [[int(x) for x in np.cumsum(rng.integers(-(2**15), 2**15, k))] for k in lens]
        for corrupt in (False, True):
            for at_end in (True, False):
                run(seqs, corrupt, at_end)
run([[2**62, -(2**62)] * 3], False, True)  # 9- and 10-byte varints at the end
print("ok")
"""


def test_kernels_stay_inside_their_buffers() -> None:
    """Input, value offsets and values each between two inaccessible pages, against either one
    (the one-pass decoder, the parallel path's count and fill, the one-pass encoder): no byte
    outside the buffers is read or written (a fault would end the process), however the data
    ends (1..3000 bytes, a varint cut off at the very end, 9- and 10-byte varints)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _GUARDED], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stderr[-2000:])
