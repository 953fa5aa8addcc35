"""CityHash64 v1.1 and FarmHash Fingerprint64: the golden models against the real libraries, the CPU
kernels against the golden models.

* golden == tests/reference (``cityhash`` 0.4.10; ``pyfarmhash`` 0.5.1, equal to
  ``tf.fingerprint``), every case; golden == rows of the libraries' own self-test programs;
* kernels == golden: every record length 0..300 and longer ones, 4- and 8-byte keys, int32 and
  int64 offsets not starting at 0, data under 8 bytes, records ending at an unmapped page, each
  way the kernels hash a block of records, seeds None, 0, 2**63, 2**64 - 1.
"""

from __future__ import annotations

import ctypes
import mmap
import random
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from offload.golden_cityhash import cityhash64, farmhash64
from offload.host.cpu.kernels_cityhash import (
    cityhash64_fixed_ser,
    cityhash64_var_ser,
    farmhash64_fixed_ser,
    farmhash64_var_ser,
)
from tests.reference.load import Group, load

MASK64 = (1 << 64) - 1
SEEDS: list[int | None] = [None, 0, 1 << 63, MASK64]
PROT_NONE = 0  # (Linux) the mmap module has PROT_READ and PROT_WRITE, not PROT_NONE
LENGTHS = list(range(301)) + [511, 512, 513, 1000, 4096, 4097]
_RNG = random.Random(20261205)


def _bytes(n: int) -> bytes:
    return bytes(_RNG.randrange(256) for _ in range(n))


# ---------------------------------------------------------------------------------------------
# Golden models against the real libraries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", load("cityhash"), ids=lambda g: g.name)
def test_golden_cityhash64_equals_cityhash_0_4_10(group: Group) -> None:
    seed = group.params.get("seed")
    assert isinstance(seed, int | None)
    for data, expected in group.cases:
        assert cityhash64(data, seed) == expected, (len(data), seed)


@pytest.mark.parametrize("group", load("farmhash"), ids=lambda g: g.name)
def test_golden_farmhash64_equals_pyfarmhash_and_tf_fingerprint(group: Group) -> None:
    for data, expected in group.cases:
        assert farmhash64(data) == expected, len(data)


def _self_test_data(n: int) -> bytes:
    """The first ``n`` bytes of the pseudo-random data of CityHash's city-test.cc and FarmHash's
    self-tests (both ``setup()``s are the same generator)."""
    k0 = 0xC3A5C85C97CB3127
    out = bytearray(n)
    a, b = 9, 777
    for i in range(n):
        a = (a + b) & MASK64
        b = (b + a) & MASK64
        a = ((a ^ (a >> 41)) * k0) & MASK64
        b = ((b ^ (b >> 41)) * k0 + i) & MASK64
        out[i] = (b >> 37) & 0xFF
    return bytes(out)


# Row i of the self-tests hashes data[i*i : i*i + i]: (i, CityHash64, CityHash64WithSeed(kSeed0 =
# 1234567), farmhashna::Hash64), from CityHash 1.1's src/city-test.cc (testdata[i][0] and [1]) and
# FarmHash's src/farmhash.cc (farmhashnaTest's expected[6i+4] << 32 | expected[6i+5]).
SELF_TEST_ROWS = [
    (0, 0x9AE16A3B2F90404F, 0x75106DB890237A4A, 0x9AE16A3B2F90404F),
    (1, 0x541150E87F415E96, 0x1AEF0D24B3148A1A, 0x541150E87F415E96),
    (3, 0xEF923A7A1AF78EAB, 0x79163B1E1E9A9B18, 0xEF923A7A1AF78EAB),
    (4, 0x11DF592596F41D88, 0x843EC0BCE9042F9C, 0x11DF592596F41D88),
    (7, 0x1B5A063FB4C7F9F1, 0x318DBC24AF66DEE9, 0x1B5A063FB4C7F9F1),
    (8, 0xA0F10149A0E538D6, 0x69D008C20F87419F, 0xA0F10149A0E538D6),
    (15, 0x44473E03BE306C88, 0x30097761F872472A, 0x44473E03BE306C88),
    (16, 0x03EAD5F21D344056, 0xFB6420393CFB05C3, 0x03EAD5F21D344056),
    (17, 0x6ABBFDE37EE03B5B, 0x83FEBF188D2CC113, 0x6ABBFDE37EE03B5B),
    (31, 0x55BDB0E71E3EDEBD, 0xC7AB562BCF0568BC, 0x55BDB0E71E3EDEBD),
    (32, 0x0782FA1B08B475E7, 0xFB7138951C61B23B, 0x0782FA1B08B475E7),
    (33, 0xC5DC19B876D37A80, 0x15FFCFF666CFD710, 0x09DEB3DA5E16B5B8),
    (63, 0x12807833C463737C, 0x58E927EA3B3776B4, 0xA8EDBFF858475437),
    (64, 0xE88419922B87176F, 0xBCF32F41A7DDBF6F, 0xDEF74BF4C9F1BC1B),
    (65, 0x105191E0EC8F7F60, 0x5918DBFCCA971E79, 0x3CCEAB392BC39B3F),
    (127, 0xCBAA3CB8F64F54E0, 0x76C3B48EE5C08417, 0x99096F55F2E75EB0),
    (128, 0xB2E23E8116C2BA9F, 0x7E4D9C0060101151, 0xF4A9A248B462909D),
    (129, 0x8AA77F52D7868EB9, 0x4D55BD587584E6E2, 0xD4F7C858D78153B6),
    (200, 0x07FC98006E25CAC9, 0x77FEE0484CDA86A7, 0x40F32EB90E5CAA01),
    (298, 0x74C0B8A6821FAAFE, 0xABAC39D7491370E7, 0x2031C84BC57A1A9F),
]


def test_golden_equals_the_libraries_self_test_rows() -> None:
    data = _self_test_data(298 * 298 + 298)
    for i, city, city_seeded, farm in SELF_TEST_ROWS:
        rec = data[i * i : i * i + i]
        assert cityhash64(rec) == city, i
        assert cityhash64(rec, 1234567) == city_seeded, i
        assert farmhash64(rec) == farm, i


def test_city_and_farm_are_one_function_up_to_32_bytes_only() -> None:
    data = _bytes(300)
    for n in range(33):
        assert cityhash64(data[:n]) == farmhash64(data[:n]), n
    for n in range(33, 301):
        assert cityhash64(data[:n]) != farmhash64(data[:n]), n


def test_golden_takes_bytes_like_values_and_refuses_others() -> None:
    assert cityhash64(bytearray(b"abc")) == cityhash64(memoryview(b"abc")) == cityhash64(b"abc")
    with pytest.raises(TypeError, match="^expected bytes, got str$"):
        cityhash64("abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^expected bytes, got int$"):
        farmhash64(42)  # type: ignore[arg-type]
    for seed in (-1, 1 << 64, True, 1.0):
        with pytest.raises(ValueError, match=r"^cityhash64 seed must be an int in \[0, 2\*\*64\)"):
            cityhash64(b"abc", seed)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Kernels against the golden models
# ---------------------------------------------------------------------------------------------


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # as the buffers of pyarrow arrays are
    return a


def _pack(
    records: Sequence[bytes], offset_dtype: type = np.int64, base: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of ``records`` stored from ``data[base]`` on; data ends with the last one."""
    offsets = np.cumsum([base] + [len(r) for r in records]).astype(offset_dtype)
    data = np.frombuffer(bytes(base) + b"".join(records), np.uint8).copy()
    return _readonly(offsets), _readonly(data)


def _city_var(offsets: np.ndarray, data: np.ndarray, seed: int | None) -> list[int]:
    out = np.zeros(offsets.shape[0] - 1, np.uint64)
    cityhash64_var_ser(offsets, data, seed is not None, np.uint64(seed or 0), out)
    return [int(h) for h in out]


def _farm_var(offsets: np.ndarray, data: np.ndarray) -> list[int]:
    out = np.zeros(offsets.shape[0] - 1, np.uint64)
    farmhash64_var_ser(offsets, data, out)
    return [int(h) for h in out]


def _check_var(records: Sequence[bytes], offsets: np.ndarray, data: np.ndarray) -> None:
    for seed in SEEDS:
        city = _city_var(offsets, data, seed)
        for i, rec in enumerate(records):
            assert city[i] == cityhash64(rec, seed), (len(rec), seed, offsets.dtype)
    farm = _farm_var(offsets, data)
    for i, rec in enumerate(records):
        assert farm[i] == farmhash64(rec), (len(rec), offsets.dtype)


@pytest.mark.parametrize("offset_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("base", [0, 3])
def test_var_kernels_every_length(offset_dtype: type, base: int) -> None:
    records = [_bytes(n) for n in LENGTHS]
    _check_var(records, *_pack(records, offset_dtype, base))
    shuffled = _RNG.sample(records, len(records))  # long and short records side by side
    _check_var(shuffled, *_pack(shuffled, offset_dtype, base))


def _lengths(kind: str, n: int) -> Iterator[int]:
    """Record lengths for each way the var kernels hash a block of 256 records."""
    for i in range(n):
        if kind == "short mixed":  # the vectorised branch-free path
            yield _RNG.randrange(33)
        elif kind == "short mixed, a few long":  # ... then the long ones again, one by one
            yield _RNG.randrange(33, 300) if i % 50 == 7 else _RNG.randrange(33)
        elif kind == "one length":  # one path of the hash: record by record
            yield 8
        elif kind == "one path":  # 17..32 bytes: record by record
            yield _RNG.randrange(17, 33)
        else:  # "mostly long": record by record
            yield _RNG.randrange(0, 200)


@pytest.mark.parametrize(
    "kind",
    ["short mixed", "short mixed, a few long", "one length", "one path", "mostly long"],
)
def test_var_kernels_each_block_strategy(kind: str) -> None:
    records = [_bytes(n) for n in _lengths(kind, 3 * 256 + 17)]
    _check_var(records, *_pack(records, np.int64, base=5))
    _check_var(records[:1], *_pack(records[:1], np.int32))


def test_var_kernels_strided_offsets_and_output() -> None:
    records = [_bytes(_RNG.randrange(33)) for _ in range(300)]  # the vectorised path
    offsets, data = _pack(records)
    every_other = _readonly(np.repeat(offsets, 2)[::2])
    out = np.zeros(2 * len(records), np.uint64)[::2]
    cityhash64_var_ser(every_other, data, True, np.uint64(3), out)
    assert [int(h) for h in out] == [cityhash64(r, 3) for r in records]


def test_var_kernels_data_under_8_bytes() -> None:
    """The short path's spare fetches read data[0:8]: buffers of fewer bytes take another path."""
    for size in range(12):
        data = _readonly(np.frombuffer(_bytes(size), np.uint8).copy())
        for _ in range(8):
            cuts = sorted(_RNG.randrange(size + 1) for _ in range(_RNG.randrange(1, 9)))
            records = [bytes(data[a:b]) for a, b in zip(cuts, cuts[1:])]
            for offset_dtype in (np.int32, np.int64):
                _check_var(records, _readonly(np.array(cuts, offset_dtype)), data)


def test_var_kernels_without_records() -> None:
    offsets, data = _pack([])
    assert _city_var(offsets, data, None) == _farm_var(offsets, data) == []
    offsets = _readonly(np.array([4], np.int32))
    assert _city_var(offsets, _pack([b"12345678"])[1], 7) == []


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux only")
def test_var_kernels_stay_inside_data_ending_at_an_unmapped_page() -> None:
    """Records ending at the last byte before a page the process may not read: a fetch past the
    end of ``data`` would crash instead of passing."""
    page = mmap.PAGESIZE
    buf = mmap.mmap(-1, 2 * page)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(addr + page), page, PROT_NONE) == 0
    try:
        for size in (1, 7, 8, 9, 16, 17, 33, 65, 300):
            view = np.frombuffer(buf, np.uint8, count=size, offset=page - size)
            view[:] = np.frombuffer(_bytes(size), np.uint8)
            view.flags.writeable = False
            for cuts in ([0, size], [0, size // 2, size], list(range(size + 1))):
                records = [bytes(view[a:b]) for a, b in zip(cuts, cuts[1:])]
                for offset_dtype in (np.int32, np.int64):
                    _check_var(records, _readonly(np.array(cuts, offset_dtype)), view)
            del view
    finally:
        libc.mprotect(ctypes.c_void_p(addr + page), page, mmap.PROT_READ | mmap.PROT_WRITE)


def _keys(dtype: type) -> np.ndarray:
    top = np.iinfo(dtype).max
    edges = [0, 1, top, top - 1, 1 << (np.iinfo(dtype).bits - 1)]
    rand = [_RNG.randrange(top + 1) for _ in range(1001)]  # not a multiple of a vector width
    return _readonly(np.array(edges + rand, dtype))


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32], ids=["8-byte", "4-byte"])
def test_fixed_kernels_equal_golden_of_little_endian_keys(dtype: type) -> None:
    keys = _keys(dtype)
    width = keys.itemsize
    out = np.zeros(keys.shape[0], np.uint64)
    for seed in SEEDS:
        cityhash64_fixed_ser(keys, seed is not None, np.uint64(seed or 0), out)
        for k, h in zip(keys.tolist(), out.tolist()):
            assert h == cityhash64(k.to_bytes(width, "little"), seed), (k, seed)
    farmhash64_fixed_ser(keys, out)
    for k, h in zip(keys.tolist(), out.tolist()):
        assert h == farmhash64(k.to_bytes(width, "little")), k


def test_fixed_kernels_without_keys() -> None:
    out = np.zeros(0, np.uint64)
    cityhash64_fixed_ser(np.zeros(0, np.uint64), True, np.uint64(1), out)
    farmhash64_fixed_ser(np.zeros(0, np.uint32), out)
    assert out.shape == (0,)
