"""The CPU backend: every operator on the host CPU, through the numba kernels of this package.

Small batches make one kernel call (dispatch stays lean: no re-validation, one output
allocation); from ``CpuBackend.parallel_threshold`` records up a batch is cut into
``4 * threads`` chunks that the calling thread and a small pool of worker threads take in turn
(:class:`.pool.Pool`), each chunk a kernel call on slices of the same arrays.

Kernel inputs are passed as read-only views (:func:`readonly`) so each kernel has one signature per
dtype whatever the caller's buffer (Arrow buffers are read-only, numpy arrays usually are not):
fewer compilations, and a warm cache covers every batch form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from offload.backend import Availability, Backend, Batch, Capabilities, Result, empty_result
from offload.batch import FixedKeys, Numbers, Sequences, VarChunk, VarRecords
from offload.golden import FID_LAYOUT
from offload.ops import REGISTRY, OpCall, Operator, make_call, operators

from .kernels_bucketize import bucketize_ser
from .kernels_cityhash import (
    cityhash64_fixed_ser,
    cityhash64_var_ser,
    farmhash64_fixed_ser,
    farmhash64_var_ser,
)
from .kernels_hash import (
    MODE_FASTRANGE,
    MODE_FID,
    MODE_MOD,
    MODE_RAW,
    mod_magic,
    post64_ser,
    xxh32_fixed_ser,
    xxh32_var_ser,
    xxh64_fixed_ser,
    xxh64_var_ser,
)
from .kernels_murmur3 import murmur3_fixed_ser, murmur3_var_ser, sigrid_ser
from .kernels_text import format_decimal
from .kernels_varint import (
    decode_count_ser,
    decode_error,
    decode_fill_ser,
    decode_ser,
    encode_fill_ser,
    encode_ser,
    encode_sizes_ser,
)
from .pool import default_threads, shared_pool
from .results import result_pool

__all__ = [
    "CpuBackend",
    "DEFAULT_PARALLEL_THRESHOLD",
    "LIGHTEST_FACTOR",
    "LIGHT_FACTOR",
    "hash_params",
    "readonly",
]

_U = np.uint64

DEFAULT_PARALLEL_THRESHOLD = 1 << 16
#: Fixed-width records (8-byte keys, numbers) go parallel from this many times the threshold:
#: one costs about a nanosecond, and handing chunks to a worker costs 10 us when it has just run
#: and 100-170 us when its CPU was idle for 10 ms (measured on this project's 2-vCPU VM: the
#: wake-up of a halted virtual CPU), so on 65,536 keys two threads took 126 us against 43 us on one.
LIGHT_FACTOR = 4
#: The hashes that cost about a third of a nanosecond per 8-byte key on one core (XXH64, XXH32,
#: Murmur3, FarmHash and CityHash, without a bucket or id after them) go parallel from this many times the
#: threshold (1,048,576 records). Below it two threads gained nothing and varied more:
#: xxh64 of 262,144 keys took 101-104 us on one thread and a median of 117-126 us on two; of
#: 1,048,576, about 350 us against 280-300.
LIGHTEST_FACTOR = 16


def _dst(out: np.ndarray | None, n: int, dtype: Any) -> np.ndarray:
    """The kernel's output: the caller's ``out`` (viewed as the kernel's unsigned type), or a
    new result (from :mod:`.results`: memory already written, no page faults)."""
    return result_pool().empty(n, dtype) if out is None else out.view(dtype)


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view (one kernel signature per dtype, whatever the caller's buffer)."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def hash_params(call: OpCall) -> tuple[int, np.uint64, np.uint64, np.uint64]:
    """(mode, a, b, sh) of the fused XXH64 post-processing for an xxh64 / hash_bucket / fid call."""
    op = call.op
    if op == "hash_bucket":
        if call.method == "mod":
            m, sh = mod_magic(call.num_buckets)
            return MODE_MOD, _U(call.num_buckets), _U(m), _U(sh)
        return MODE_FASTRANGE, _U(call.num_buckets), _U(0), _U(0)
    if op == "fid":
        sig_bits = FID_LAYOUT[call.version][1]
        return MODE_FID, _U((1 << sig_bits) - 1), _U(call.slot << sig_bits), _U(0)
    return MODE_RAW, _U(0), _U(0), _U(0)


class CpuBackend(Backend):
    """Every registered operator on the host CPU (numba); always available. An operator's entry
    names its CPU kernel (:attr:`offload.ops.Operator.cpu`); the built-in ones are the ``run_*``
    methods below.

    ``threads``: threads for batches of at least ``parallel_threshold`` records (default: the
    CPUs this process may run on; :data:`LIGHT_FACTOR` times that for fixed-width records).
    ``threads=1`` runs everything on the calling thread. Smaller batches always run on the
    calling thread: one kernel call and one output allocation.
    """

    name = "cpu"

    def __init__(
        self, threads: int | None = None, parallel_threshold: int = DEFAULT_PARALLEL_THRESHOLD
    ) -> None:
        if threads is None:
            threads = default_threads()
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.threads = int(threads)
        self.parallel_threshold = int(parallel_threshold)

    # -- Backend interface ----------------------------------------------------------------------

    def availability(self) -> Availability:
        return Availability(True, "numba CPU kernels")

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=frozenset(REGISTRY))

    def supports(self, call: OpCall, batch: Batch) -> str | None:
        return None if call.op in REGISTRY else f"cpu does not implement {call.op}"

    def cost_breaks(self, kind: str) -> tuple[int, ...]:
        """Where batches go parallel (:meth:`_bounds`): fixed-width records at
        :data:`LIGHT_FACTOR` times the threshold, or :data:`LIGHTEST_FACTOR` times for the
        lightest hashes (each operator changes at one of the two), numbers at the first;
        variable-length records at the threshold (and a second pass of fixed-width work, a
        non-XXH64 ``hash_bucket``'s, at :data:`LIGHT_FACTOR` times). Sequences go parallel by
        their values' count, not their records': no break."""
        if self.threads < 2:
            return ()
        t = self.parallel_threshold
        light, lightest = t * LIGHT_FACTOR, t * LIGHTEST_FACTOR
        return {"fixed": (light, lightest), "numbers": (light,), "var": (t, light)}.get(kind, ())

    def run(self, call: OpCall, batch: Batch) -> Result:
        entry = REGISTRY.get(call.op)
        if entry is None:
            raise ValueError(f"unknown operator {call.op!r}")
        return _kernel_of(entry)(self, call, batch)

    def run_into(self, call: OpCall, batch: Batch, out: np.ndarray) -> None:
        """The kernels write into ``out`` itself: nothing is allocated (but the decimal text of
        ``decimal_hash_bucket`` and the hash of a non-XXH64 ``hash_bucket``/``fid``)."""
        entry = REGISTRY.get(call.op)
        if entry is None:
            raise ValueError(f"unknown operator {call.op!r}")
        if entry.result_dtype is None:
            raise ValueError(f"{call.op} has no one-value-per-record result to write into out")
        _kernel_of(entry)(self, call, batch, out)

    # -- operators: (call, batch) -> result, one method per kernel family -----------------------

    def run_xxh32(
        self, call: OpCall, batch: FixedKeys | VarRecords, out: np.ndarray | None = None
    ) -> np.ndarray:
        """xxh32: the XXH32 of every record."""
        out = _dst(out, batch.n, np.uint32)
        return self._map_records(
            batch, out, xxh32_fixed_ser, xxh32_var_ser, (_U(call.seed),), factor=LIGHTEST_FACTOR
        )

    def run_xxh64(
        self, call: OpCall, batch: FixedKeys | VarRecords, out: np.ndarray | None = None
    ) -> np.ndarray:
        """xxh64, and hash_bucket and fid of XXH64: one pass with the post-processing fused in."""
        args = (_U(call.seed or 0), *hash_params(call))
        factor = LIGHTEST_FACTOR if call.op == "xxh64" else LIGHT_FACTOR  # a bucket or id costs more
        out = self._map_records(
            batch, _dst(out, batch.n, np.uint64), xxh64_fixed_ser, xxh64_var_ser, args, factor=factor
        )
        return out.view(np.int64) if call.op == "hash_bucket" else out

    def run_hashed(
        self, call: OpCall, batch: FixedKeys | VarRecords, out: np.ndarray | None = None
    ) -> np.ndarray:
        """hash_bucket and fid: XXH64 fused (:meth:`run_xxh64`); another hash, then a second pass
        for the bucket or id."""
        if call.hash == "xxh64":
            return self.run_xxh64(call, batch, out)
        h = self._raw_hash(call.hash, call.seed, batch, factor=LIGHT_FACTOR)  # two passes: more work a key
        out = _dst(out, batch.n, np.uint64)
        args = hash_params(call)
        bounds = self._bounds(batch.n)
        if bounds is None:
            post64_ser(h, *args, out)
        else:
            self._chunks(lambda lo, hi: post64_ser(h[lo:hi], *args, out[lo:hi]), bounds)
        return out.view(np.int64) if call.op == "hash_bucket" else out

    def run_hash64(
        self, call: OpCall, batch: FixedKeys | VarRecords, out: np.ndarray | None = None
    ) -> np.ndarray:
        """farmhash64 and cityhash64."""
        return self._raw_hash(call.op, call.seed if call.op == "cityhash64" else None, batch, out)

    def run_murmur3_32(
        self, call: OpCall, batch: FixedKeys | VarRecords, out: np.ndarray | None = None
    ) -> np.ndarray:
        return self._murmur3(call, batch, out, LIGHTEST_FACTOR)

    def _murmur3(
        self, call: OpCall, batch: FixedKeys | VarRecords, out: np.ndarray | None, factor: int
    ) -> np.ndarray:
        out = _dst(out, batch.n, np.uint32)
        seed = _U(call.seed)
        if isinstance(batch, FixedKeys):  # 4- and 8-byte keys have no tail
            return self._map_records(batch, out, murmur3_fixed_ser, None, (seed,), factor=factor)
        return self._map_records(batch, out, None, murmur3_var_ser, (seed, call.tail == "spark"))

    def run_sigrid_hash(self, call: OpCall, batch: Numbers, out: np.ndarray | None = None) -> np.ndarray:
        x = readonly(batch.values.astype(np.int64, copy=False))
        out = _dst(out, x.shape[0], np.int64)
        salt, mx = np.int64(call.salt), np.int64(call.max_value)
        bounds = self._bounds(x.shape[0])
        if bounds is None:
            sigrid_ser(x, salt, mx, out)
        else:
            self._chunks(lambda lo, hi: sigrid_ser(x[lo:hi], salt, mx, out[lo:hi]), bounds)
        return out

    def run_decimal_hash_bucket(
        self, call: OpCall, batch: Numbers, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The decimal text of every value (a compiled kernel), then FarmHash mod buckets."""
        offsets, data = format_decimal(batch.values)
        text = VarRecords((VarChunk(offsets, data),))
        return self.run_hashed(
            make_call("hash_bucket", num_buckets=call.num_buckets, hash="farmhash64"), text, out
        )

    def _raw_hash(
        self,
        name: str,
        seed: int | None,
        batch: FixedKeys | VarRecords,
        out: np.ndarray | None = None,
        factor: int = LIGHTEST_FACTOR,
    ) -> np.ndarray:
        """The 64-bit (murmur3_32: zero-extended) hash ``name`` of every record (fixed-width
        records in chunks from ``factor`` times the threshold)."""
        if name == "murmur3_32":
            call = make_call("murmur3_32", seed=seed or 0)
            return self._murmur3(call, batch, None, factor).astype(np.uint64)
        out = _dst(out, batch.n, np.uint64)
        if name == "farmhash64":
            return self._map_records(batch, out, farmhash64_fixed_ser, farmhash64_var_ser, (), factor=factor)
        if name == "cityhash64":
            args = (seed is not None, _U(seed or 0))
            kernels = (cityhash64_fixed_ser, cityhash64_var_ser)
            return self._map_records(batch, out, *kernels, args, factor=factor)
        raise ValueError(f"cpu has no raw kernel for hash {name!r}")

    def _map_records(
        self,
        batch: FixedKeys | VarRecords,
        out: np.ndarray,
        fixed: Callable[..., Any] | None,
        var: Callable[..., Any] | None,
        args: tuple[Any, ...],
        factor: int = LIGHT_FACTOR,
    ) -> np.ndarray:
        """Run a per-record kernel pair over every record into ``out``: ``fixed(keys, *args,
        out)`` on fixed keys (in chunks on the pool from ``factor`` times ``parallel_threshold``
        records), ``var(offsets, data, *args, out)`` on each chunk of variable records (from
        ``parallel_threshold``)."""
        if isinstance(batch, FixedKeys):
            assert fixed is not None
            keys = readonly(batch.keys)
            bounds = self._bounds(batch.n, factor)
            if bounds is None:
                fixed(keys, *args, out)
            else:
                self._chunks(lambda lo, hi: fixed(keys[lo:hi], *args, out[lo:hi]), bounds)
            return out
        assert var is not None
        base = 0
        for c in batch.chunks:
            cn = c.offsets.shape[0] - 1
            if cn <= 0:
                continue
            o, d, dst = readonly(c.offsets), readonly(c.data), out[base : base + cn]
            bounds = self._bounds(cn, 1)
            if bounds is None:
                var(o, d, *args, dst)
            else:
                self._chunks(
                    lambda lo, hi, o=o, d=d, dst=dst: var(o[lo : hi + 1], d, *args, dst[lo:hi]), bounds
                )
            base += cn
        return out

    def run_bucketize(self, call: OpCall, batch: Numbers, out: np.ndarray | None = None) -> np.ndarray:
        x = readonly(batch.values)
        bnd = call.boundaries
        assert bnd is not None
        if bnd.dtype != x.dtype:  # ops.check_boundaries casts to x's dtype; be safe anyway
            bnd = bnd.astype(x.dtype)
        bnd = readonly(np.ascontiguousarray(bnd))
        right = bool(call.right)
        n = x.shape[0]
        out = _dst(out, n, np.int32)
        bounds = self._bounds(n)
        if bounds is None:
            bucketize_ser(x, bnd, right, out)
        else:
            self._chunks(lambda lo, hi: bucketize_ser(x[lo:hi], bnd, right, out[lo:hi]), bounds)
        return out

    def run_encode(self, call: OpCall, batch: Sequences) -> tuple[np.ndarray, np.ndarray]:
        vo, vals = readonly(batch.value_offsets), readonly(batch.values)
        n = vo.shape[0] - 1
        if n <= 0:
            return empty_result("delta_varint_encode")  # type: ignore[return-value]
        # Sequences can be long: the threshold counts values as well as sequences.
        bounds = self._seq_bounds(n, int(vo[-1]) - int(vo[0]))
        if bounds is None:
            return encode_ser(vo, vals)
        offsets = np.zeros(n + 1, np.int64)
        self._chunks(lambda lo, hi: encode_sizes_ser(vo[lo : hi + 1], vals, offsets[lo : hi + 1]), bounds)
        np.cumsum(offsets, out=offsets)
        data = np.empty(int(offsets[-1]), np.uint8)
        self._chunks(
            lambda lo, hi: encode_fill_ser(vo[lo : hi + 1], vals, offsets[lo : hi + 1], data), bounds
        )
        return offsets, data

    def run_decode(self, call: OpCall, batch: VarRecords) -> tuple[np.ndarray, np.ndarray]:
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        seq_base = 0
        for c in batch.chunks:
            cn = c.offsets.shape[0] - 1
            if cn <= 0:
                continue
            parts.append(self._decode_chunk(readonly(c.offsets), readonly(c.data), seq_base))
            seq_base += cn
        if not parts:
            return empty_result("delta_varint_decode")  # type: ignore[return-value]
        if len(parts) == 1:
            return parts[0]
        offs = [np.zeros(1, np.int64)]
        base = 0
        for vo, _ in parts:
            offs.append(vo[1:] + base)
            base += int(vo[-1])
        return np.concatenate(offs), np.concatenate([v for _, v in parts])

    def _decode_chunk(
        self, offsets: np.ndarray, data: np.ndarray, seq_base: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n = offsets.shape[0] - 1
        bounds = self._seq_bounds(n, (int(offsets[-1]) - int(offsets[0])) // 2)
        if bounds is None:
            err = np.zeros(3, np.int64)
            vo, out = decode_ser(offsets, data, err, result_pool().empty)
            if err[0]:
                raise decode_error(int(err[0]), seq_base + int(err[1]), int(err[2]), data)
            return vo, out
        vo = np.zeros(n + 1, np.int64)
        errs = np.zeros((len(bounds) - 1, 3), np.int64)
        index = {lo: k for k, lo in enumerate(bounds[:-1])}
        self._chunks(
            lambda lo, hi: decode_count_ser(offsets[lo : hi + 1], data, vo[lo : hi + 1], errs[index[lo]]),
            bounds,
        )
        bad = np.flatnonzero(errs[:, 0])
        if bad.size:  # chunks are consecutive ranges: the first bad chunk has the first error
            k = int(bad[0])
            code, seq, off = (int(v) for v in errs[k])
            raise decode_error(code, seq_base + bounds[k] + seq, off, data)
        np.cumsum(vo, out=vo)
        out = result_pool().empty(int(vo[-1]), np.int64)
        self._chunks(lambda lo, hi: decode_fill_ser(offsets[lo : hi + 1], data, vo[lo : hi + 1], out), bounds)
        return vo, out

    # -- chunking -------------------------------------------------------------------------------

    def _bounds(self, n: int, factor: int = LIGHT_FACTOR) -> list[int] | None:
        """Chunk bounds for a parallel run over ``n`` records (from ``factor`` times the
        threshold: :data:`LIGHT_FACTOR` for fixed-width ones, 1 for variable-length ones), or
        None to run serially."""
        if self.threads < 2 or n < self.parallel_threshold * factor or n < 2:
            return None
        nchunks = min(n, 4 * self.threads)
        return [k * n // nchunks for k in range(nchunks + 1)]

    def _seq_bounds(self, n: int, work: int) -> list[int] | None:
        """Chunk bounds over ``n`` sequences holding ``work`` values (or bytes), or None."""
        if self.threads < 2 or n < 2 or max(n, work) < self.parallel_threshold:
            return None
        nchunks = min(n, 4 * self.threads)
        return [k * n // nchunks for k in range(nchunks + 1)]

    def _chunks(self, fn: Any, bounds: list[int]) -> None:
        shared_pool(self.threads - 1).run(fn, bounds)

    # -- warm-up --------------------------------------------------------------------------------

    def warmup(self) -> None:
        """Compile (or load from numba's cache) every kernel signature the backend can call: each
        registered operator on every batch form of its input kind, serially and in chunks."""
        saved = self.parallel_threshold
        try:
            for thr in (1 << 62, 0):  # serial, then chunked paths
                if thr == 0 and self.threads < 2:
                    continue
                self.parallel_threshold = thr
                for entry in operators():
                    for call, batch in _warm_runs(entry):
                        self.run(call, batch)
        finally:
            self.parallel_threshold = saved


# An operator's kernel as its registry entry names it, resolved once per entry (run stays lean).
_KERNELS: dict[str, tuple[Operator, Callable[..., Any]]] = {}


def _kernel_of(entry: Operator) -> Callable[..., Any]:
    hit = _KERNELS.get(entry.name)
    if hit is None or hit[0] is not entry:
        hit = _KERNELS[entry.name] = (entry, entry.cpu_kernel())
    return hit[1]


# The batch forms of each input kind, one per kernel signature: records as fixed keys of both
# widths and as variable records with both offset widths; numbers of every dtype.
_WARM_KEY_DTYPES = (np.uint32, np.uint64)
_WARM_OFFSET_DTYPES = (np.int32, np.int64)
_WARM_NUMBER_DTYPES = (np.float32, np.float64, np.int32, np.int64)


def _warm_chunk(odt: Any) -> VarChunk:
    # an empty record, a short one and a long one (the short and the long hash paths); the bytes
    # are 0..39, each a one-byte varint, so the chunk is valid encoded input too
    return VarChunk(np.array([0, 0, 3, 40], odt), np.arange(40, dtype=np.uint8))


def _warm_runs(entry: Operator) -> list[tuple[OpCall, Batch]]:
    """(call, batch) pairs that run ``entry``'s every valid example on every batch form of its
    input kind (examples may take different kernels: ``hash_bucket`` of each hash); numbers of
    each dtype the operator's ``dtype`` parameter takes."""
    if entry.inputs == "numbers":
        return [
            (call, Numbers(np.arange(4, dtype=dt), (4,)))
            for dt in _WARM_NUMBER_DTYPES
            if _takes_dtype(entry, dt)
            for call in _valid_examples(entry, dtype=dt)
        ]
    calls = _valid_examples(entry)
    if entry.inputs == "sequences":
        batches: list[Batch] = [Sequences(np.array([0, 2, 4], np.int64), np.arange(4, dtype=np.int64))]
    elif entry.inputs == "encoded":  # batch.as_encoded takes int64 offsets only
        batches = [VarRecords((_warm_chunk(np.int64),))]
    else:
        batches = [VarRecords((_warm_chunk(odt),)) for odt in _WARM_OFFSET_DTYPES]
        batches += [FixedKeys(np.arange(4, dtype=dt), (4,)) for dt in _WARM_KEY_DTYPES]
    return [(call, b) for call in calls for b in batches]


def _takes_dtype(entry: Operator, dtype: Any) -> bool:
    """The operator's ``dtype`` parameter accepts numbers of ``dtype`` (sigrid_hash: integers)."""
    param = next(p for p in entry.params if p.name == "dtype")
    try:
        param.check(dtype, {})
    except (TypeError, ValueError):
        return False
    return True


def _valid_examples(entry: Operator, dtype: Any = None) -> list[OpCall]:
    """The entry's examples that validate (for a Numbers batch, with its ``dtype``: an
    example's boundaries may not fit every dtype); at least one must."""
    extra = {} if dtype is None else {"dtype": dtype}
    calls = []
    for example in entry.examples:
        try:
            calls.append(make_call(entry.name, **example, **extra))
        except (TypeError, ValueError):
            continue
    if not calls:
        values = "" if dtype is None else f" for {np.dtype(dtype).name} values"
        raise ValueError(
            f"{entry.name}: none of its examples is valid{values}; the CPU warm-up "
            "runs every operator on every batch form of its input kind"
        )
    return calls
