"""``delta_varint_encode`` / ``delta_varint_decode`` kernels: zigzag deltas as LEB128 varints.

Encode builds each varint of up to 8 bytes in a register and stores it with one unaligned 8-byte
store: ``pdep`` spreads the value's 7-bit groups over the bytes, ``lzcnt`` of the result gives the
length, the continuation bits are a mask of the bytes below the top one. With AVX-512 VBMI2 it
does that for eight values in one vector (``vpmultishiftqb`` spreads, a byte test and a mask
smear give the lengths) and ``vpcompressb`` packs the eight varints for one masked store.

Decode, where the CPU has AVX-512 VBMI2 (:data:`.intrinsics.HAS_AVX512_VBMI2`), takes 64 bytes
at a time (the Masked VByte idea with AVX-512's byte permutes, see "Decode with AVX-512" below):
up to 32 varints of up to 8 bytes each are decoded eight to a vector, zigzag and the prefix sum
within a sequence included; the scalar loop moves from block to block and notes where sequences
start. Elsewhere it loads 8 bytes at a varint's start: the bytes without their high bit end
varints (``tzcnt`` finds the first two), one ``pext`` gathers the 7-bit groups of the first two
varints when both end in the load; as that waits for the previous varints' length (load,
``tzcnt``, add), this decoder runs two independent stretches of sequences ("lanes") in one loop,
the output of a lane starting at the number of varints before it (a population count of the
bytes without a high bit). Varints of 9 or 10 bytes (deltas of 2**55 and more), malformed ones
and the buffer's last bytes take an exact byte loop (or masked loads), so the kernels never read
or write outside their buffers and report the golden model's errors.

Where the CPU has no BMI2 (:data:`.intrinsics.HAS_BMI2`), ``pdep``/``pext`` are shifts and masks.

On the bench's sequences (1M of 0..39 timestamps, 2.05 bytes a value), one Zen 4 core: decode
1110 M values/s into a preallocated output with AVX-512 (447 with the lanes), about 615 end to
end into fresh memory, whose page faults take about 12 of its 32 ms; encode about 740 end to end
(455 a varint at a time).

Serial calls (:func:`encode_ser`, :func:`decode_ser`) run in one pass over the data into numpy
memory (transparent huge pages: a third of the page-fault time of numba's allocations) with room
for the longest result (pages never written cost nothing), shrunk in place afterwards. The parallel
path runs in two passes, so that chunks of sequences can run on several threads: encode sizes
every sequence, the offsets are the sizes' running sum, then fills the bytes; decode counts every
sequence's values (and finds the first malformed varint), then fills the values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .intrinsics import (
    HAS_AVX512_VBMI2,
    HAS_BMI2,
    address,
    clz64,
    ctz64,
    kernel,
    load_u64,
    pdep64,
    peek_u8,
    peek_u64,
    pext64,
    poke_u64,
    popcount64,
    store_u64,
)

__all__ = [
    "decode_count_ser",
    "decode_error",
    "decode_fill_ser",
    "decode_ser",
    "encode_fill_ser",
    "encode_ser",
    "encode_sizes_ser",
]

_U = np.uint64
_C80 = _U(0x8080808080808080)
_M7F = _U(0x7F7F7F7F7F7F7F7F)
_BIG = _U(1 << 56)  # zigzag values from here on take 9 or 10 bytes
# Independent decode chains in one loop. Measured on the bench's sequences (M values/s into a
# preallocated output): one value a step 395 with four lanes; two values a step 423 with two
# lanes, 405 with four; the load's address off the compare's chain 448 with two, 446 with three.
_LANES = 2


# ---------------------------------------------------------------------------------------------
# One value
# ---------------------------------------------------------------------------------------------


@njit(inline="always")
def _zigzag(v, prev):
    d = _U(v) - _U(prev)
    return (d << _U(1)) ^ (_U(0) - (d >> _U(63)))


@njit(inline="always")
def _unzigzag(z):
    return (z >> _U(1)) ^ (_U(0) - (z & _U(1)))


@njit(inline="always")
def _varint_len(z):
    """Bytes of the varint of ``z``: 1 + (bit length - 1) // 7."""
    return np.int64(((_U(63) - clz64(z | _U(1))) * _U(37)) >> _U(8)) + 1  # x // 7 for x < 64


@njit(inline="always")
def _spread7(z, bmi2):
    """The low 56 bits of ``z`` as eight 7-bit groups, one per byte (high bits 0)."""
    if bmi2:
        return pdep64(z, _M7F)
    return (
        (z & _U(0x7F))
        | ((z << _U(1)) & _U(0x7F00))
        | ((z << _U(2)) & _U(0x7F0000))
        | ((z << _U(3)) & _U(0x7F000000))
        | ((z << _U(4)) & _U(0x7F00000000))
        | ((z << _U(5)) & _U(0x7F0000000000))
        | ((z << _U(6)) & _U(0x7F000000000000))
        | ((z << _U(7)) & _U(0x7F00000000000000))
    )


@njit(inline="always")
def _gather7(w, bmi2):
    """The low 7 bits of each byte of ``w``, packed: the inverse of :func:`_spread7`."""
    if bmi2:
        return pext64(w, _M7F)
    return (
        (w & _U(0x7F))
        | ((w >> _U(1)) & _U(0x3F80))
        | ((w >> _U(2)) & _U(0x1FC000))
        | ((w >> _U(3)) & _U(0xFE00000))
        | ((w >> _U(4)) & _U(0x7F0000000))
        | ((w >> _U(5)) & _U(0x3F800000000))
        | ((w >> _U(6)) & _U(0x1FC0000000000))
        | ((w >> _U(7)) & _U(0xFE000000000000))
    )


# ---------------------------------------------------------------------------------------------
# Encode
# ---------------------------------------------------------------------------------------------


@njit
def _encode_sizes_range(vo, vals, sizes, lo, hi):
    """``sizes[i + 1]`` = encoded byte count of sequence i (for a cumsum into offsets)."""
    for i in range(lo, hi):
        a = vo[i]
        b = vo[i + 1]
        tot = 0
        if b > a:
            tot = _varint_len(_zigzag(vals[_U(a)], np.int64(0)))
        # no running prev and unsigned indices (no negative-index wraparound): the loop
        # vectorises, 15.4 against 31.6 ms on the bench's 19.5M values
        for j in range(a + 1, b):
            tot += _varint_len(_zigzag(vals[_U(j)], vals[_U(j - 1)]))
        sizes[i + 1] = tot


@njit
def _encode_slow(data, p, z):
    """The varint of ``z`` byte by byte at ``data[p:]``; returns the end."""
    while z >= _U(0x80):
        data[p] = np.uint8((z & _U(0x7F)) | _U(0x80))
        z >>= _U(7)
        p += 1
    data[p] = np.uint8(z)
    return p + 1


@njit(inline="always")
def _encode_range(vo, vals, offsets, data, lo, hi, p, lim, one_pass, bmi2):
    """Sequences ``lo..hi-1`` from byte ``p`` on; 8-byte stores only at or below ``lim``.

    The bytes an 8-byte store writes past its varint are this range's (``lim`` keeps them below
    the range's end) and are overwritten by the next varints, so the stores go in order. With
    ``one_pass`` (a literal), ``data`` has room for 10 bytes a value and 8 more, so no store
    needs the check, and ``offsets[i + 1]`` is set to the end of sequence i. Returns the end."""
    for i in range(lo, hi):
        prev = np.int64(0)
        for j in range(vo[i], vo[i + 1]):
            v = vals[_U(j)]  # an unsigned index: no negative-index wraparound in the loop
            z = _zigzag(v, prev)
            prev = v
            if z < _BIG and (one_pass or p <= lim):  # one pass: 10 bytes a value, always room
                s = _spread7(z, bmi2)
                top = (_U(63) - clz64(s | _U(1))) >> _U(3)  # index of the varint's last byte
                store_u64(data, p, s | (_C80 & ((_U(1) << (top << _U(3))) - _U(1))))
                p += np.int64(top) + 1
            else:  # 9-10 bytes, or the last 7 bytes of the range
                p = _encode_slow(data, p, z)
        if one_pass:
            offsets[i + 1] = p
    return p


@njit(inline="always")
def _encode_fill_range(vo, vals, offsets, data, lo, hi, bmi2):
    _encode_range(vo, vals, offsets, data, lo, hi, offsets[lo], offsets[hi] - 8, False, bmi2)


@njit(inline="always")
def _encode_one_pass(vo, vals, offsets, data, bmi2):
    """All sequences into ``data`` (room for 10 bytes a value); ``offsets[0]`` = 0; returns the
    byte count."""
    offsets[0] = 0
    return _encode_range(vo, vals, offsets, data, 0, vo.shape[0] - 1, 0, data.shape[0] - 8, True, bmi2)


# ---------------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------------

# Decode error codes (the messages are golden.delta_varint_decode_seq's).
_ERR_CUT, _ERR_LONG, _ERR_TENTH = 1, 2, 3


@njit
def _count_ends(data, a, b):
    """Bytes without their high bit (varint ends) in ``data[a:b]``."""
    c = 0
    p = a
    while p + 8 <= b:
        c += np.int64(popcount64(~load_u64(data, p) & _C80))
        p += 8
    while p < b:
        c += data[p] < 0x80
        p += 1
    return c


@njit
def _decode_slow(d, p, e):
    """The varint at byte ``p`` (< ``e``, the sequence's end) of the buffer at address ``d``,
    byte by byte as the golden model reads it: (z, end, error code or 0)."""
    z = _U(0)
    shift = _U(0)
    start = p
    code = -1
    while code < 0:
        if p >= e:
            code = _ERR_CUT
        else:
            byte = peek_u8(d + p)
            if p - start == 9 and byte >= _U(0x80):
                code = _ERR_LONG
            elif p - start == 9 and byte > _U(1):
                code = _ERR_TENTH
            else:
                z |= (byte & _U(0x7F)) << shift
                shift += _U(7)
                p += 1
                if byte < _U(0x80):
                    code = 0
    return z, p, code


def _decoder(bmi2: bool) -> Any:
    """The lane decoder, with ``pext`` where ``bmi2`` (a constant: no branch in the loop)."""

    @njit(inline="always")
    def next_seq(po, pvo, i, stop, k):
        """From sequence ``i`` on, past empty sequences (their value offsets set to ``k``):
        (i, its end byte); ``i == stop`` when the lane has none left."""
        while i < stop and peek_u64(po + 8 * i + 8) == peek_u64(po + 8 * i):
            poke_u64(pvo + 8 * i + 8, _U(k))
            i += 1
        return i, np.int64(peek_u64(po + 8 * min(i + 1, stop)))

    @njit(inline="always")
    def step(po, d, pvo, pout, lane, safe):
        """The next one or two varints of a lane (i, stop, byte p, sequence end e, address of
        its next value, running value, address of its error row): their values stored, on at
        the sequence's end. A malformed varint stops the lane (i = stop) with (code, sequence,
        offset) stored.

        One 8-byte load, at most at the buffer's last 8 bytes (``safe``: the last byte with 8
        bytes from it, negative for a buffer shorter than 8 bytes: no load at all). Its bytes
        without a high bit end varints; when the first two ends are in the load and the
        sequence, one ``pext`` gathers both varints' 7-bit groups; the slow path reads only the
        sequence's bytes (9- and 10-byte varints, the buffer's last 7 bytes, malformed ones)."""
        i, stop, p, e, pk, prev, perr = lane
        code = 0
        q = p
        fast = False
        if p <= safe:  # a predicted branch: the load's address waits for no compare
            w = peek_u64(d + p)
            t = ~w & _C80  # the high bit of each byte that ends a varint
            t2 = t & (t - _U(1))  # from the second end on
            n1 = np.int64(ctz64(t) >> _U(3)) + 1  # 9 if no byte of the load ends one
            n2 = np.int64(ctz64(t2) >> _U(3)) + 1
            r = e - p
            if (t != _U(0)) & (n1 <= r):
                fast = True
                g = _gather7(w & (t2 ^ (t2 - _U(1))), bmi2)  # both varints' groups (all if no t2)
                s1 = _U(7 * n1)
                v1 = prev + _unzigzag(g & ((_U(1) << s1) - _U(1)))
                poke_u64(pk, v1)
                if (t2 != _U(0)) & (n2 <= r):
                    prev = v1 + _unzigzag(g >> s1)
                    poke_u64(pk + 8, prev)
                    q = p + n2
                    pk += 16
                else:
                    prev = v1
                    q = p + n1
                    pk += 8
        if not fast:
            z, q, code = _decode_slow(d, p, e)
            if code != 0:
                poke_u64(perr, _U(code))
                poke_u64(perr + 8, _U(i))
                poke_u64(perr + 16, _U(p))
                i = stop
            else:
                prev += _unzigzag(z)
                poke_u64(pk, prev)
                pk += 8
        if (code == 0) & (q == e):
            k = (pk - pout) >> 3
            poke_u64(pvo + 8 * i + 8, _U(k))
            i, e = next_seq(po, pvo, i + 1, stop, k)
            prev = _U(0)
        return i, stop, q, e, pk, prev, perr

    @njit(inline="always")
    def lane(offsets, po, pvo, pout, perr, lo, hi, k):
        i, e = next_seq(po, pvo, lo, hi, k)
        return i, hi, np.int64(offsets[i]), e, pout + 8 * k, _U(0), perr

    @njit
    def decode_range(offsets, data, vo, out, starts, ks, err):
        """Sequences ``starts[0]..starts[2]-1`` into ``out`` and ``vo`` (offsets of values in
        ``out``), as two lanes: lane ``l`` takes sequences ``starts[l]..starts[l+1]-1`` and
        writes from ``out[ks[l]]`` on. Its first malformed varint goes to ``err[l]``."""
        safe = data.shape[0] - 8  # the last byte with 8 bytes of data from it
        po, d, pvo, pout, perr = address(offsets), address(data), address(vo), address(out), address(err)
        vo[starts[0]] = ks[0]
        l0 = lane(offsets, po, pvo, pout, perr, starts[0], starts[1], ks[0])
        l1 = lane(offsets, po, pvo, pout, perr + 24, starts[1], starts[2], ks[1])
        while l0[0] < l0[1] and l1[0] < l1[1]:
            l0 = step(po, d, pvo, pout, l0, safe)
            l1 = step(po, d, pvo, pout, l1, safe)
        while l0[0] < l0[1]:
            l0 = step(po, d, pvo, pout, l0, safe)
        while l1[0] < l1[1]:
            l1 = step(po, d, pvo, pout, l1, safe)

    return decode_range


_decode_lanes = _decoder(HAS_BMI2)


# ---------------------------------------------------------------------------------------------
# Decode with AVX-512: 64-byte blocks, up to 32 varints each (HAS_AVX512_VBMI2)
# ---------------------------------------------------------------------------------------------
# The Masked VByte idea with AVX-512's byte permutes. One 64-byte load and ``vpmovb2m`` give the
# block's continuation bits; the varints that end in it (at most 32, each of at most 8 bytes)
# are decoded eight at a time: ``vpcompressb`` lists their first and last bytes, ``vpermb``
# gathers each one's bytes into a 64-bit lane (the bytes past its end zeroed), two
# ``vpmultishiftqb`` and a bit select pack the 7-bit groups, then zigzag and a prefix sum over
# the lanes that restarts where a sequence starts. The scalar loop only moves from block to
# block, marks the sequences that start in a block and checks it; a block that fails a check
# (a varint of 9 or more bytes, a sequence end inside a varint, no varint end in 64 bytes)
# goes to the byte loop, which decodes exactly, or reports the golden model's error.

_I1, _I8, _I16, _I32, _I64 = (ir.IntType(w) for w in (1, 8, 16, 32, 64))
_B64 = ir.VectorType(_I8, 64)  # one zmm register as bytes
_Q8 = ir.VectorType(_I64, 8)  # ... as 64-bit lanes
_K64 = ir.VectorType(_I1, 64)
_K8 = ir.VectorType(_I1, 8)
_ALL = _U(0xFFFFFFFFFFFFFFFF)


def _fn(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _bytes(vals: list[int]) -> ir.Constant:
    return ir.Constant(_B64, [ir.Constant(_I8, v & 0xFF) for v in vals])


def _qwords(v: int) -> ir.Constant:
    return ir.Constant(_Q8, [ir.Constant(_I64, v)] * 8)


def _lanes(vals: list[int]) -> ir.Constant:
    return ir.Constant(ir.VectorType(_I32, 8), [ir.Constant(_I32, v) for v in vals])


def _load64(builder: ir.IRBuilder, addr: ir.Value, keep: ir.Value | None = None) -> ir.Value:
    """The 64 bytes at ``addr``; with ``keep`` (i64) only the bytes of its set bits are read
    (a masked load: the others are 0 and never touched, so no fault past a buffer's end)."""
    if keep is None:
        v = builder.load(builder.inttoptr(addr, _B64.as_pointer()))
        v.align = 1
        return v
    ptr = builder.inttoptr(addr, _I8.as_pointer())
    fn = _fn(builder, "llvm.masked.load.v64i8.p0", _B64, [ptr.type, _I32, _K64, _B64])
    return builder.call(fn, [ptr, ir.Constant(_I32, 1), builder.bitcast(keep, _K64), ir.Constant(_B64, None)])


def _high_bits(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """Bit i = the high bit of byte i (``vpmovb2m``)."""
    return builder.bitcast(builder.icmp_signed("<", v, ir.Constant(_B64, None)), _I64)


@intrinsic
def _cont64(typingctx, addr):
    """The continuation bits of the 64 bytes at ``addr`` (bit i: byte i's high bit)."""
    sig = types.uint64(types.int64)

    def codegen(context, builder, signature, args):
        return _high_bits(builder, _load64(builder, args[0]))

    return sig, codegen


@intrinsic
def _cont_part(typingctx, addr, n):
    """As :func:`_cont64` for the first ``n`` (< 64) bytes only: no byte past them is read."""
    sig = types.uint64(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        one = ir.Constant(_I64, 1)
        return _high_bits(builder, _load64(builder, args[0], builder.sub(builder.shl(one, args[1]), one)))

    return sig, codegen


# vpmultishiftqb packs eight 7-bit groups (the varint's bytes, one per byte of a lane) into the
# 56 bits of the value, placed from bit 8 on (byte 0 is left over: the zigzag step shifts it
# out, where masking the top byte off would take one more instruction). Byte j of the value
# (j < 7) is bits j..6 of the varint's byte j and bits 0..j of its byte j + 1: output byte
# j + 1 takes 8 bits from bit 9j (right for the low 7 - j bits), or from bit 9j + 1 (right for
# the high j + 1 bits), chosen bit by bit.
_MSHIFT_LO = _bytes([9 * (j - 1) if j > 0 else 0 for _ in range(8) for j in range(8)])
_MSHIFT_HI = _bytes([9 * (j - 1) + 1 if j > 0 else 0 for _ in range(8) for j in range(8)])
_MSHIFT_SEL = [(1 << (8 - j)) - 1 if j > 0 else 0 for j in range(8)]  # bits from the first


def _decode8(b: ir.IRBuilder, data: ir.Value, starts: ir.Value, ends: ir.Value, c: int) -> ir.Value:
    """The zigzag values of varints 8c..8c+7 of a block shifted left by 8 (the low byte left
    over), one per 64-bit lane (0 past the last):
    ``starts``/``ends`` hold each varint's first and last byte index (0x80 and 0 past the last)."""
    permb = _fn(b, "llvm.x86.avx512.permvar.qi.512", _B64, [_B64, _B64])
    mshift = _fn(b, "llvm.x86.avx512.pmultishift.qb.512", _B64, [_B64, _B64])
    which = _bytes([8 * c + j for j in range(8) for _ in range(8)])  # varint 8c+j to lane j
    idx = b.add(b.call(permb, [starts, which]), _bytes([j for _ in range(8) for j in range(8)]))
    inside = b.icmp_unsigned("<=", idx, b.call(permb, [ends, which]))
    g = b.select(inside, b.call(permb, [data, idx]), ir.Constant(_B64, None))  # vpermb {z}
    lo = b.bitcast(b.call(mshift, [_MSHIFT_LO, g]), _Q8)
    hi = b.bitcast(b.call(mshift, [_MSHIFT_HI, g]), _Q8)
    sel = b.bitcast(_bytes(_MSHIFT_SEL * 8), _Q8)
    return b.or_(b.and_(lo, sel), b.and_(hi, b.not_(sel)))


def _delta_sum8(b: ir.IRBuilder, z: ir.Value, flags: ir.Value, carry: ir.Value) -> ir.Value:
    """Unzigzagged ``z >> 8`` summed over the lanes, from ``carry`` (all lanes) on, restarting at
    each lane whose bit of ``flags`` (i8) is set (a sequence's first value)."""
    zero = ir.Constant(_Q8, None)
    x = b.xor(b.lshr(z, _qwords(9)), b.ashr(b.shl(z, _qwords(55)), _qwords(63)))
    for k in (1, 2, 4):  # Hillis-Steele: lane i adds lane i - k unless a restart lies between
        shifted = b.shuffle_vector(zero, x, _lanes([8 + i - k if i >= k else 0 for i in range(8)]))
        x = b.select(b.bitcast(b.not_(flags), _K8), b.add(x, shifted), x)
        flags = b.or_(flags, b.shl(flags, ir.Constant(_I8, k)))
    return b.select(b.bitcast(b.not_(flags), _K8), b.add(x, carry), x)


@intrinsic
def _decode_block(typingctx, addr, ends, starts, firsts, cnt, pout, carry):
    """The ``cnt`` (<= 32) varints of the block at ``addr``: their last bytes at the set bits
    of ``ends``, their first bytes at those of ``starts``, each of at most 8 bytes; bit k of
    ``firsts`` marks varint k as its sequence's first value. Their values (zigzag deltas summed
    from ``carry``) are stored at ``pout``; returns the last one (``carry`` if none). Reads only
    the bytes up to the last end, writes only ``cnt`` values."""
    i64, u64 = types.int64, types.uint64
    sig = u64(i64, u64, u64, u64, i64, i64, u64)

    def codegen(context, builder, signature, args):
        b = builder
        addr, ends, starts, firsts, cnt, pout, carry = args
        top = b.call(_fn(b, "llvm.ctlz.i64", _I64, [_I64, _I1]), [ends, ir.Constant(_I1, 0)])
        data = _load64(b, addr, b.lshr(ir.Constant(_I64, -1), top))  # bytes 0..last end
        compress = _fn(b, "llvm.x86.avx512.mask.compress.v64i8", _B64, [_B64, _B64, _K64])
        iota = _bytes(list(range(64)))
        sv = b.call(compress, [iota, _bytes([0x80] * 64), b.bitcast(starts, _K64)])
        ev = b.call(compress, [iota, ir.Constant(_B64, None), b.bitcast(ends, _K64)])
        cv = b.insert_element(ir.Constant(_Q8, ir.Undefined), carry, ir.Constant(_I32, 0))
        cv = b.shuffle_vector(cv, cv, _lanes([0] * 8))
        store = _fn(b, "llvm.masked.store.v8i64.p0", ir.VoidType(), [_Q8, _I64.as_pointer(), _I32, _K8])
        for c in range(4):
            flags = b.trunc(b.lshr(firsts, ir.Constant(_I64, 8 * c)), _I8)
            x = _delta_sum8(b, _decode8(b, data, sv, ev, c), flags, cv)
            left = b.sub(cnt, ir.Constant(_I64, 8 * c))  # lanes to store: min(max(left, 0), 8)
            left = b.select(b.icmp_signed("<", left, ir.Constant(_I64, 0)), ir.Constant(_I64, 0), left)
            left = b.select(b.icmp_signed(">", left, ir.Constant(_I64, 8)), ir.Constant(_I64, 8), left)
            keep = b.trunc(b.sub(b.shl(ir.Constant(_I16, 1), b.trunc(left, _I16)), ir.Constant(_I16, 1)), _I8)
            ptr = b.inttoptr(b.add(pout, ir.Constant(_I64, 64 * c)), _I64.as_pointer())
            b.call(store, [x, ptr, ir.Constant(_I32, 1), b.bitcast(keep, _K8)])
            cv = b.shuffle_vector(x, x, _lanes([7] * 8))  # lanes past the last hold its value
        return b.extract_element(cv, ir.Constant(_I32, 0))

    return sig, codegen


@njit
def _exact_span(po, d, pvo, pout, k0, hi, end, p, k, i, carry, stop, perr):
    """The byte loop from byte ``p`` (a varint's start; value ``k`` after ``k0``, running value
    ``carry``, sequence ``i`` the next to start) up to ``stop`` or the range's ``end``: sequences
    starting at ``p`` get their value offset. A malformed varint stores (code, sequence, byte)
    at ``perr``. Returns (p, k, i, carry, code)."""
    code = 0
    while True:
        while i < hi and np.int64(peek_u64(po + 8 * i)) <= p:
            poke_u64(pvo + 8 * i, _U(k0 + k))
            i += 1
            carry = _U(0)
        if p >= stop or p >= end:
            return p, k, i, carry, code
        e = np.int64(peek_u64(po + 8 * i)) if i < hi else end  # the sequence's end
        z, q, code = _decode_slow(d, p, e)
        if code != 0:
            poke_u64(perr, _U(code))
            poke_u64(perr + 8, _U(i - 1))
            poke_u64(perr + 16, _U(p))
            return p, k, i, carry, code
        carry += _unzigzag(z)
        poke_u64(pout + 8 * k, carry)
        k += 1
        p = q


@njit
def _decode_blocks(offsets, data, vo, out, lo, hi, k0, err):
    """Sequences ``lo..hi-1`` (``offsets`` int64, C-contiguous) into ``out`` from value ``k0``
    on, their value offsets into ``vo[lo..hi]``; returns the value count, or -1 with the first
    malformed varint's (code, sequence, byte) in ``err``."""
    po, d, pvo, perr = address(offsets), address(data), address(vo), address(err)
    pout = address(out) + 8 * k0
    end = np.int64(offsets[hi])
    p = np.int64(offsets[lo])
    size = data.shape[0]
    k = 0
    i = lo
    carry = _U(0)
    while p < end:
        m = _cont64(d + p) if p <= size - 64 else _cont_part(d + p, size - p)  # predicted
        left = end - p
        t = ~m & (_ALL if left >= 64 else (_U(1) << _U(left)) - _U(1))  # varint ends
        t &= (pdep64(_U(1) << _U(31), t) << _U(1)) - _U(1)  # the first 32 (all if fewer)
        lz = clz64(t)
        block = _ALL >> lz  # bytes up to the last end
        starts = ((t << _U(1)) | _U(1)) & block
        run = m & block  # 8 continuation bits in a row: a varint of 9 bytes or more
        run &= run >> _U(1)
        run &= run >> _U(2)
        run &= run >> _U(4)
        stop = p + 64 - np.int64(lz)
        # The sequences that start in the block (their value offsets; firsts: their first
        # bytes). The next three are looked at without a branch (one that does not start in
        # the block gets a value offset that its own block overwrites; offsets[hi] is the end):
        # 1049 against 993 M values/s into a preallocated output, 1063 with three.
        firsts = _U(0)
        i0 = i
        span = stop - p
        kk = _U(k0 + k)
        for _ in range(3):
            s = np.int64(peek_u64(po + 8 * min(i, hi))) - p
            inside = s < span
            s = min(s, 63)
            poke_u64(pvo + 8 * i, kk + popcount64(t & ((_U(1) << _U(s)) - _U(1))))
            firsts |= _U(inside) << _U(s)
            i += np.int64(inside)
        while i < hi:  # more than three
            s = np.int64(peek_u64(po + 8 * i)) - p
            if s >= span:
                break
            poke_u64(pvo + 8 * i, kk + popcount64(t & ((_U(1) << _U(s)) - _U(1))))
            firsts |= _U(1) << _U(s)
            i += 1
        if (t == _U(0)) | (run != _U(0)) | ((firsts & ~starts) != _U(0)):
            p, k, i, carry, code = _exact_span(
                po, d, pvo, pout, k0, hi, end, p, k, i0, carry, p + 1 if t == _U(0) else stop, perr
            )
            if code != 0:
                return -1
            continue
        cnt = np.int64(popcount64(t))
        carry = _decode_block(d + p, t, starts, pext64(firsts, starts), cnt, pout + 8 * k, carry)
        k += cnt
        p = stop
    while i < hi:  # empty sequences at the end
        poke_u64(pvo + 8 * i, _U(k0 + k))
        i += 1
    vo[hi] = k0 + k
    return k


@njit
def _lane_bounds(offsets, data, k0, starts, ks):
    """Lanes of about equal bytes: their first sequences (``starts``, and the end) and the
    first value of each (``ks``: ``k0`` plus the varint ends before it)."""
    n = offsets.shape[0] - 1
    a = offsets[0]
    span = offsets[n] - a
    starts[0] = 0
    ks[0] = k0
    for ln in range(1, _LANES):
        s = np.searchsorted(offsets, a + span * ln // _LANES)
        starts[ln] = max(min(s, n), starts[ln - 1])
        ks[ln] = ks[ln - 1] + _count_ends(data, offsets[starts[ln - 1]], offsets[starts[ln]])
    starts[_LANES] = n


@njit
def _first_error(lane_err, err):
    """The first lane's error (lanes are in sequence order) into ``err``."""
    for ln in range(lane_err.shape[0]):
        if lane_err[ln, 0] != 0:
            err[0] = lane_err[ln, 0]
            err[1] = lane_err[ln, 1]
            err[2] = lane_err[ln, 2]
            return


@njit
def _decode_count_range(offsets, data, counts, lo, hi, err):
    """``counts[i + 1]`` = value count of sequence i; the first malformed varint of the range
    goes to ``err`` = (code, sequence, byte offset of the varint's first byte) and stops."""
    for i in range(lo, hi):
        s = np.int64(offsets[i])
        e = np.int64(offsets[i + 1])
        count = 0
        run = 0
        start = s
        for p in range(s, e):
            byte = data[p]
            if run == 0:
                start = p
            run += 1
            if byte < 0x80:
                if run == 10 and byte > 1:
                    err[0] = _ERR_TENTH
                    err[1] = i
                    err[2] = start
                    return
                count += 1
                run = 0
            elif run == 10:
                err[0] = _ERR_LONG
                err[1] = i
                err[2] = start
                return
        if run:
            err[0] = _ERR_CUT
            err[1] = i
            err[2] = start
            return
        counts[i + 1] = count


# ---------------------------------------------------------------------------------------------
# Encode with AVX-512: eight values at a time (HAS_AVX512_VBMI2)
# ---------------------------------------------------------------------------------------------

_SPREAD7 = _bytes([7 * j for _ in range(8) for j in range(8)])  # byte j: bits 7j..7j+7
_LOW7 = 0x7F7F7F7F7F7F7F7F


@intrinsic
def _encode8(typingctx, pvals, cnt, firsts, prev, pdata):
    """The varints of the ``cnt`` (1..8) values at ``pvals`` (zigzag deltas: from ``prev`` for
    the first, from 0 for those whose bit of ``firsts`` is set, else from the value before)
    stored at ``pdata``, each of at most 8 bytes. Returns the mask of the bytes kept of the
    eight 8-byte lanes (their count is the bytes stored), or 0, nothing stored, if a value
    needs 9 bytes or more."""
    i64, u64 = types.int64, types.uint64
    sig = u64(i64, i64, u64, u64, i64)

    def codegen(context, builder, signature, args):
        b = builder
        pvals, cnt, firsts, prev, pdata = args
        one = ir.Constant(_I64, 1)
        lanes = b.trunc(b.sub(b.shl(ir.Constant(_I16, 1), b.trunc(cnt, _I16)), ir.Constant(_I16, 1)), _I8)
        load = _fn(b, "llvm.masked.load.v8i64.p0", _Q8, [_I64.as_pointer(), _I32, _K8, _Q8])
        x = b.call(
            load,
            [
                b.inttoptr(pvals, _I64.as_pointer()),
                ir.Constant(_I32, 1),
                b.bitcast(lanes, _K8),
                ir.Constant(_Q8, None),
            ],
        )
        pv = b.insert_element(ir.Constant(_Q8, ir.Undefined), prev, ir.Constant(_I32, 7))
        before = b.shuffle_vector(pv, x, _lanes([7, 8, 9, 10, 11, 12, 13, 14]))
        before = b.select(b.bitcast(b.trunc(firsts, _I8), _K8), ir.Constant(_Q8, None), before)
        d = b.sub(x, before)
        z = b.xor(b.shl(d, _qwords(1)), b.ashr(d, _qwords(63)))
        big = b.icmp_unsigned(">=", z, _qwords(1 << 56))
        big = b.and_(b.bitcast(big, _I8), lanes)
        spread = _fn(b, "llvm.x86.avx512.pmultishift.qb.512", _B64, [_B64, _B64])
        s = b.and_(b.call(spread, [_SPREAD7, b.bitcast(z, _B64)]), _bytes([0x7F] * 64))
        nz = b.bitcast(b.icmp_unsigned("!=", s, ir.Constant(_B64, None)), _I64)
        # keep each lane's bytes up to its highest nonzero one (its first at least)
        k = nz
        for sh, mask in ((1, 0x7F7F7F7F7F7F7F7F), (2, 0x3F3F3F3F3F3F3F3F), (4, 0x0F0F0F0F0F0F0F0F)):
            k = b.or_(k, b.and_(b.lshr(k, ir.Constant(_I64, sh)), ir.Constant(_I64, mask)))
        k = b.or_(k, ir.Constant(_I64, 0x0101010101010101))
        lane_bytes = b.bitcast(b.sext(b.bitcast(lanes, _K8), ir.VectorType(_I8, 8)), _I64)  # 0xFF a lane kept
        k = b.and_(k, lane_bytes)
        cont = b.and_(b.lshr(k, one), ir.Constant(_I64, _LOW7))  # bytes below a lane's top
        s = b.select(b.bitcast(cont, _K64), b.or_(s, _bytes([0x80] * 64)), s)
        compress = _fn(b, "llvm.x86.avx512.mask.compress.v64i8", _B64, [_B64, _B64, _K64])
        packed = b.call(compress, [s, ir.Constant(_B64, None), b.bitcast(k, _K64)])
        n = b.call(_fn(b, "llvm.ctpop.i64", _I64, [_I64]), [k])
        ok = b.icmp_unsigned("==", big, ir.Constant(_I8, 0))
        keep = b.select(
            ok, b.lshr(ir.Constant(_I64, -1), b.sub(ir.Constant(_I64, 64), n)), ir.Constant(_I64, 0)
        )
        store = _fn(b, "llvm.masked.store.v64i8.p0", ir.VoidType(), [_B64, _I8.as_pointer(), _I32, _K64])
        b.call(
            store, [packed, b.inttoptr(pdata, _I8.as_pointer()), ir.Constant(_I32, 1), b.bitcast(keep, _K64)]
        )
        return b.select(ok, k, ir.Constant(_I64, 0))

    return sig, codegen


@njit
def _encode_blocks(vo, vals, offsets, data, p0):
    """All sequences of ``vo`` into ``offsets`` (n + 1) and ``data`` from byte ``p0`` on, eight
    values at a time; a block with a value of 9 bytes or more is written byte by byte. Writes
    no byte past the encoding (masked stores). Returns the end."""
    n = vo.shape[0] - 1
    pv, d = address(vals), address(data)
    j = np.int64(vo[0])
    jend = np.int64(vo[n])
    p = p0
    i = 0
    prev = _U(0)
    while j < jend:
        cnt = min(jend - j, 8)
        # the sequences that start in the block: the next one without a branch (if it does
        # not, its offset is overwritten in its own block), 884 against 835 M values/s
        firsts = _U(0)
        i0 = i
        s0 = min(np.int64(vo[min(i, n)]) - j, 8)  # vo[n] is the end: never in the block
        inside = s0 < cnt
        firsts |= _U(inside) << _U(s0)
        i += np.int64(inside)
        while i < n and np.int64(vo[i]) < j + cnt:
            firsts |= _U(1) << _U(np.int64(vo[i]) - j)
            i += 1
        k = _encode8(pv + 8 * j, cnt, firsts, prev, d + p)
        if k != _U(0):
            offsets[i0] = p + np.int64(popcount64(k & ((_U(1) << _U(8 * min(s0, 7))) - _U(1))))
            for q in range(i0 + 1, i):
                lane = np.int64(vo[q]) - j
                offsets[q] = p + np.int64(popcount64(k & ((_U(1) << _U(8 * lane)) - _U(1))))
            p += np.int64(popcount64(k))
        else:  # a value of 9 bytes or more
            for lane in range(cnt):
                while i0 < i and np.int64(vo[i0]) == j + lane:
                    offsets[i0] = p
                    i0 += 1
                    prev = _U(0)
                v = _U(vals[_U(j + lane)])
                p = _encode_slow(data, p, _zigzag(v, prev))
                prev = v
        prev = _U(vals[_U(j + cnt - 1)])
        j += cnt
    while i < n:
        offsets[i] = p
        i += 1
    offsets[n] = p
    return p


@njit(inline="always")
def _run9(m):
    """Nonzero where 9 set bits in a row start (a varint of 10 bytes or more)."""
    m &= m >> _U(1)
    m &= m >> _U(2)
    m &= m >> _U(4)
    return m & (m >> _U(1))


@njit
def _count_blocks(offsets, data, counts, lo, hi):
    """``counts[i + 1]`` = varint ends in sequence i's bytes, for ``lo <= i < hi``: the ends
    before each offset (its rank) are the ends before its 64-byte block plus those of the block
    below it, so a sequence's count is the difference of two ranks. One pass over the blocks
    (``vpmovb2m``, ``popcnt``) keeps each block's ends and the ends before it, then one over
    the offsets, neither with a data-dependent branch (6.7 ms with a loop over blocks inside
    the loop over sequences, 5.3 this way, on the bench's 1M sequences). Returns False,
    counts then partial, if a varint of 10 bytes or more (runs of 9 continuation bytes, also
    across blocks) or a sequence ending inside a varint is seen: the byte loop then finds the
    first error, or counts exactly."""
    d = address(data)
    a = np.int64(offsets[lo])
    end = np.int64(offsets[hi])
    nblocks = (end - a) // 64 + 1  # the last one partial (or empty)
    ends = np.empty(nblocks, np.uint64)
    before = np.empty(nblocks, np.int64)
    total = 0
    m_prev = _U(0)
    bad = _U(0)
    for j in range(nblocks):
        q = a + 64 * j
        left = end - q
        if left >= 64:  # all blocks but the last (end <= the buffer's size)
            m = _cont64(d + q)
            valid = _ALL
        else:  # 0..63 bytes
            m = _cont_part(d + q, left) if left > 0 else _U(0)
            valid = (_U(1) << _U(left)) - _U(1)
        t = ~m & valid
        ends[j] = t
        before[j] = total
        total += np.int64(popcount64(t))
        bad |= _run9(m) | _run9((m << _U(8)) | (m_prev >> _U(56)))
        m_prev = m
    prev_rank = 0
    for i in range(lo, hi):
        s = np.int64(offsets[i])
        e = np.int64(offsets[i + 1])
        x = e - a
        j = x >> 6
        rank = before[j] + np.int64(popcount64(ends[j] & ((_U(1) << _U(x & 63)) - _U(1))))
        counts[i + 1] = rank - prev_rank
        prev_rank = rank
        y = max(x - 1, 0)  # the sequence's last byte: a varint end unless it is empty
        bad |= _U(e > s) & ~(ends[y >> 6] >> _U(y & 63))
    return bad == _U(0)


# ---------------------------------------------------------------------------------------------
# Kernels: each runs one contiguous range on the calling thread with the GIL released; the
# backend calls them on the whole batch (small batches) or on chunks from several threads.
# ---------------------------------------------------------------------------------------------


def _encode_one_pass_blocks(vo, vals, offsets, data):
    """All sequences into ``offsets`` (n + 1) and ``data`` (10 bytes a value); returns the byte
    count."""
    return _encode_blocks(vo, np.ascontiguousarray(vals), offsets, data, 0)  # vals read by address


def _encode_one_pass_words(vo, vals, offsets, data):
    """As :func:`_encode_one_pass_blocks`, a varint at a time (CPUs without AVX-512)."""
    return _encode_one_pass(vo, vals, offsets, data, HAS_BMI2)


#: The one-pass encoder (see :func:`_encode_one_pass_blocks`), with AVX-512 where the CPU has it.
encode_one_pass_ser = kernel(_encode_one_pass_blocks if HAS_AVX512_VBMI2 else _encode_one_pass_words)


@kernel
def encode_sizes_ser(vo, vals, sizes):
    """``sizes[i + 1]`` = byte count of sequence i (``vo``/``sizes`` are matching slices)."""
    _encode_sizes_range(vo, vals, sizes, 0, vo.shape[0] - 1)


def _encode_fill_blocks(vo, vals, offsets, data):
    """The bytes of the sequences of ``vo`` at ``offsets`` (sized by :func:`encode_sizes_ser`),
    in ``data``; ``offsets`` is left as it is (its ends are shared with the neighbouring chunks)."""
    _encode_blocks(vo, np.ascontiguousarray(vals), offsets.copy(), data, offsets[0])


def _encode_fill_words(vo, vals, offsets, data):
    """As :func:`_encode_fill_blocks`, a varint at a time (CPUs without AVX-512)."""
    _encode_fill_range(vo, vals, offsets, data, 0, vo.shape[0] - 1, HAS_BMI2)


#: The chunked path's fill (see :func:`_encode_fill_blocks`), with AVX-512 where the CPU has it.
encode_fill_ser = kernel(_encode_fill_blocks if HAS_AVX512_VBMI2 else _encode_fill_words)


def _decode_into_blocks(offsets, data, vo, out, err):
    """All sequences of ``offsets`` (int64) into ``vo`` (n + 1) and ``out`` (room for a value
    per varint end: :func:`_count_ends`); the first malformed varint to ``err`` (3), the outputs then
    partial."""
    _decode_blocks(offsets, data, vo, out, 0, offsets.shape[0] - 1, 0, err)


def _decode_into_lanes(offsets, data, vo, out, err):
    """As :func:`_decode_into_blocks`, with the two-lane decoder (CPUs without AVX-512)."""
    starts = np.empty(_LANES + 1, np.int64)
    ks = np.empty(_LANES + 1, np.int64)
    lane_err = np.zeros((_LANES, 3), np.int64)
    _lane_bounds(offsets, data, 0, starts, ks)
    _decode_lanes(offsets, data, vo, out, starts, ks, lane_err)
    _first_error(lane_err, err)


#: All sequences into ``vo`` and ``out`` (see :func:`_decode_into_blocks`), with AVX-512 where
#: the CPU has it.
decode_into_ser = kernel(_decode_into_blocks if HAS_AVX512_VBMI2 else _decode_into_lanes)


def _decode_count_blocks(offsets, data, counts, err):
    """``counts[i + 1]`` = value count of sequence i; the range's first error goes to ``err``."""
    n = offsets.shape[0] - 1
    if not _count_blocks(offsets, data, counts, 0, n):
        _decode_count_range(offsets, data, counts, 0, n, err)


def _decode_count_bytes(offsets, data, counts, err):
    """As :func:`_decode_count_blocks`, byte by byte (CPUs without AVX-512)."""
    _decode_count_range(offsets, data, counts, 0, offsets.shape[0] - 1, err)


#: The chunked path's count (see :func:`_decode_count_blocks`), with AVX-512 where the CPU has it.
decode_count_ser = kernel(_decode_count_blocks if HAS_AVX512_VBMI2 else _decode_count_bytes)


def _decode_fill_blocks(offsets, data, vo, out):
    """The values of sequences the count pass found well formed (``vo``: their value offsets in
    ``out``). ``vo`` is left as it is (its ends are shared with the neighbouring chunks)."""
    offs = offsets.astype(np.int64)  # read by address
    _decode_blocks(offs, data, vo.copy(), out, 0, offs.shape[0] - 1, vo[0], np.zeros(3, np.int64))


def _decode_fill_lanes(offsets, data, vo, out):
    """As :func:`_decode_fill_blocks`, with the two-lane decoder (CPUs without AVX-512)."""
    offs = offsets.astype(np.int64)  # the lanes read int64 offsets by address
    starts = np.empty(_LANES + 1, np.int64)
    ks = np.empty(_LANES + 1, np.int64)
    _lane_bounds(offs, data, 0, starts, ks)
    for ln in range(_LANES + 1):
        ks[ln] = vo[starts[ln]]
    _decode_lanes(offs, data, vo.copy(), out, starts, ks, np.zeros((_LANES, 3), np.int64))


#: The chunked path's fill (see :func:`_decode_fill_blocks`), with AVX-512 where the CPU has it.
decode_fill_ser = kernel(_decode_fill_blocks if HAS_AVX512_VBMI2 else _decode_fill_lanes)


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------

# Above this many values, encode_ser runs two passes rather than reserve 10 bytes a value.
_ONE_PASS_MAX_VALUES = 1 << 27


def encode_ser(vo: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All sequences: (offsets int64[n + 1], data uint8). One pass into room for the longest
    encoding (10 bytes a value; pages never written cost nothing), then shrunk in place."""
    n = vo.shape[0] - 1
    m = int(vo[n]) - int(vo[0])
    offsets = np.empty(n + 1, np.int64)
    if m > _ONE_PASS_MAX_VALUES:
        offsets[0] = 0
        encode_sizes_ser(vo, vals, offsets)
        np.cumsum(offsets, out=offsets)
        data = np.empty(int(offsets[n]), np.uint8)
        encode_fill_ser(vo, vals, offsets, data)
        return offsets, data
    data = np.empty(10 * m + 8, np.uint8)
    size = encode_one_pass_ser(vo, vals, offsets, data)
    data.resize(size, refcheck=False)  # realloc: a large buffer shrinks in place (mremap)
    return offsets, data


# Above this many bytes, decode_ser counts the values first rather than reserve 8 bytes a byte.
_ONE_PASS_MAX_BYTES = 1 << 27


def decode_ser(
    offsets: np.ndarray, data: np.ndarray, err: np.ndarray, empty: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (value_offsets, values); on a malformed varint fills ``err`` and returns empties.

    ``empty(n, dtype)`` (e.g. a result pool's) allocates both, the values once counted (the
    parallel path's count pass, which also finds the first malformed varint). Without it, the
    values go into room for one value a byte, shrunk in place afterwards (no counting pass: 609
    against 587 M values/s end to end; pages never written cost nothing)."""
    offsets = np.ascontiguousarray(offsets, np.int64)  # the decoders read by address
    data = np.ascontiguousarray(data)
    nbytes = int(offsets[-1]) - int(offsets[0])
    if empty is None and nbytes <= _ONE_PASS_MAX_BYTES:
        vo = np.empty(offsets.shape[0], np.int64)
        out = np.empty(nbytes, np.int64)
        decode_into_ser(offsets, data, vo, out, err)
        if err[0] != 0:
            return vo, np.empty(0, np.int64)
        out.resize(int(vo[-1]), refcheck=False)  # realloc: a large buffer shrinks in place (mremap)
        return vo, out
    alloc = np.empty if empty is None else empty
    vo = alloc(offsets.shape[0], np.int64)
    vo[0] = 0
    decode_count_ser(offsets, data, vo, err)
    if err[0] != 0:
        return vo, np.empty(0, np.int64)
    np.cumsum(vo, out=vo)
    out = alloc(int(vo[-1]), np.int64)
    decode_into_ser(offsets, data, vo, out, err)  # the same value offsets again
    return vo, out


def decode_error(code: int, seq: int, off: int, data: np.ndarray) -> ValueError:
    """The error for a malformed varint that a count kernel reported in ``err``: its code,
    sequence and the byte offset of its first byte."""
    head = f"malformed varint in sequence {seq} at byte offset {off}: "
    if code == _ERR_CUT:
        return ValueError(head + "cut off at the end of the sequence")
    if code == _ERR_LONG:
        return ValueError(head + "longer than 10 bytes")
    return ValueError(head + f"10th byte is 0x{int(data[off + 9]):02x}, above 0x01 (value exceeds 64 bits)")
