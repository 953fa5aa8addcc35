"""The engine's map: every number the hardware and the host must agree on, defined once.

Register byte addresses, control and status bits, operator codes, input formats, key dtypes, error
bits, the identity registers and the trailer's magic (``docs/wire_format.md`` explains them). The
Amaranth engine (``offload.hw.engine``), the wire format (``offload.wire``), the simulated devices
and the ``.hwh`` generator (``offload.sim``) and the drivers (``offload.host``) import them from
here; nothing else spells them. It imports only the standard library, so the hardware build reads it
without the host's dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ENGINE_ID",
    "ENGINE_VERSION",
    "TRAILER_MAGIC",
    "DEFAULT_SEQ_MAX",
    "NO_RECORD_MAX",
    "DEFAULT_RECORD_MAX",
    "BUILDS",
    "FARMHASH_CODES",
    "RECORD_LIMITED",
    "DEFAULT_BUILD",
    "REGISTERS",
    "PARAM_REGISTERS",
    "RW_REGISTERS",
    "TABLE_REGISTERS",
    "CTRL_START",
    "CTRL_SOFT_RESET",
    "STATUS_BUSY",
    "STATUS_DONE",
    "STATUS_ERROR",
    "OP_CODES",
    "FORMATS",
    "DTYPE_CODES",
    "ERR_BITS",
    "ERR_FLAGS",
    "err_names",
    "ops_mask",
    "RTL_FLAVOURS",
    "FLAVOUR_PARAMS",
    "check_flavour",
]

#: The ``ID`` register's value.
ENGINE_ID = 0x0FF10AD0
#: The ``VERSION`` register: wire format major.minor as ``major << 16 | minor`` (1.1: 1.0 plus
#: the ``SEQ_MAX`` register; 1.2: the ``RECORD_MAX`` and ``OPS_HI`` registers, op codes 10-31). A host
#: accepts an engine of the same major version.
ENGINE_VERSION = 0x00010002
#: The top 16 bits of every trailer word.
TRAILER_MAGIC = 0x0FF1
#: ``SEQ_MAX`` of an engine older than wire format 1.1 (which has no such register).
DEFAULT_SEQ_MAX = 1024
#: ``RECORD_MAX`` when no built operator limits its records (and of an engine older than 1.2).
NO_RECORD_MAX = 0xFFFFFFFF
#: ``RECORD_MAX`` of an engine built with the FarmHash/CityHash op codes, unless told otherwise.
DEFAULT_RECORD_MAX = 1024

#: AXI-Lite register byte addresses.
REGISTERS: dict[str, int] = {
    "ID": 0x00,
    "VERSION": 0x04,
    "CTRL": 0x08,
    "STATUS": 0x0C,
    "ERR": 0x10,
    "OP": 0x14,
    "FORMAT": 0x18,
    "DTYPE": 0x1C,
    "COUNT": 0x20,
    "DONE_COUNT": 0x24,
    "SEED_LO": 0x28,
    "SEED_HI": 0x2C,
    "NUM_BUCKETS_LO": 0x30,
    "NUM_BUCKETS_HI": 0x34,
    "SLOT": 0x38,
    "NUM_BOUNDARIES": 0x3C,
    "TABLE_ADDR": 0x40,
    "TABLE_DATA_LO": 0x44,
    "TABLE_DATA_HI": 0x48,
    "CAPS": 0x4C,
    "CYCLES_LO": 0x50,
    "CYCLES_HI": 0x54,
    "OPS": 0x58,
    "SEQ_MAX": 0x5C,
    "RECORD_MAX": 0x60,
    "OPS_HI": 0x64,
}
#: The batch parameters a host writes before ``START``, in the order it writes them.
PARAM_REGISTERS = (
    "OP",
    "FORMAT",
    "DTYPE",
    "COUNT",
    "SEED_LO",
    "SEED_HI",
    "NUM_BUCKETS_LO",
    "NUM_BUCKETS_HI",
    "SLOT",
    "NUM_BOUNDARIES",
)
#: The registers that read back what was written: the parameters and the table address.
RW_REGISTERS = (*PARAM_REGISTERS, "TABLE_ADDR")
#: The boundary table's write port: an address, then each entry's low and high halves (the
#: write of the high half stores the entry and advances the address).
TABLE_REGISTERS = ("TABLE_ADDR", "TABLE_DATA_LO", "TABLE_DATA_HI")

#: ``CTRL`` bits.
CTRL_START, CTRL_SOFT_RESET = 1, 2
#: ``STATUS`` bits.
STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4

#: ``OP`` codes: an operator and the parameter its hardware path depends on.
OP_CODES: dict[str, int] = {
    "xxh32": 1,
    "xxh64": 2,
    "hash_bucket/mod": 3,
    "hash_bucket/fastrange": 4,
    "fid/1": 5,
    "fid/2": 6,
    "bucketize/right": 7,
    "bucketize/left": 8,
    "delta_varint_encode": 9,
    "murmur3_32": 10,
    "murmur3_32/spark": 11,
    "sigrid_hash": 12,
    "hash_bucket/mod/murmur3_32": 13,
    "fid/1/murmur3_32": 14,
    "fid/2/murmur3_32": 15,
    "farmhash64": 16,
    "cityhash64": 17,
    "cityhash64/seeded": 18,
    "hash_bucket/mod/farmhash64": 19,
    "hash_bucket/fastrange/farmhash64": 20,
    "hash_bucket/mod/cityhash64": 21,
    "hash_bucket/mod/cityhash64/seeded": 22,
    "hash_bucket/fastrange/cityhash64": 23,
    "hash_bucket/fastrange/cityhash64/seeded": 24,
    "fid/1/farmhash64": 25,
    "fid/2/farmhash64": 26,
    "fid/1/cityhash64": 27,
    "fid/1/cityhash64/seeded": 28,
    "fid/2/cityhash64": 29,
    "fid/2/cityhash64/seeded": 30,
    "decimal_hash_bucket": 31,
}
# OPS and OPS_HI are a 64-bit mask of the op codes built: codes stay below 64.
assert max(OP_CODES.values()) < 64

#: The op codes whose ``VAR`` records must be at most ``RECORD_MAX`` bytes (the FarmHash/
#: CityHash record core holds a whole record: docs/wire_format.md); a longer record's header is
#: ``BAD_HEADER``.
RECORD_LIMITED: frozenset[str] = frozenset(k for k in OP_CODES if "farmhash64" in k or "cityhash64" in k)

#: Engine builds: name -> the op codes built (keys of :data:`OP_CODES`). ``"pynq-z2"``, the
#: default engine (``rtl/offload_engine.v``), fits the xc7z020 of a PYNQ-Z2: every op code but
#: the FarmHash ones (the CityHash/FarmHash record core and the decimal FarmHash lane), whose
#: area (docs/verification.md) needs a larger part; ``"full"``: every op code.
FARMHASH_CODES: frozenset[str] = RECORD_LIMITED | {"decimal_hash_bucket"}
BUILDS: dict[str, tuple[str, ...]] = {
    "pynq-z2": tuple(k for k in OP_CODES if k not in FARMHASH_CODES),
    "full": tuple(OP_CODES),
}
#: The build an engine is unless told otherwise.
DEFAULT_BUILD = "pynq-z2"
#: ``FORMAT`` codes: how the input stream frames records.
FORMATS: dict[str, int] = {"FIXED8": 0, "FIXED4": 1, "VAR": 2, "SEQ": 3}
#: ``DTYPE`` codes: bucketize's key type, by numpy dtype name.
DTYPE_CODES: dict[str, int] = {"int32": 0, "int64": 1, "float32": 2, "float64": 3}
#: Error flags: bit positions in ``ERR`` and in the trailer's error field.
ERR_BITS: dict[str, int] = {
    "EARLY_TLAST": 0,
    "MISSING_TLAST": 1,
    "EXTRA_DATA": 2,
    "BAD_HEADER": 3,
    "BAD_PARAM": 4,
    "BAD_TKEEP": 5,
}
#: The same flags as masks.
ERR_FLAGS: dict[str, int] = {name: 1 << bit for name, bit in ERR_BITS.items()}


#: The exported engine's flavours: name -> (file in ``rtl/``, Verilog module). ``"lut"`` is what
#: is synthesised (the default build); ``"behavioural"`` has the same ports, registers and
#: cycles with one ``*`` per multiplier, for fast simulation; ``"full"`` is the behavioural
#: flavour of the ``"full"`` build (every op code), the ``sim`` backend's model.
RTL_FLAVOURS: dict[str, tuple[str, str]] = {
    "lut": ("offload_engine.v", "offload_engine"),
    "behavioural": ("offload_engine_sim.v", "offload_engine_sim"),
    "full": ("offload_engine_full_sim.v", "offload_engine_full_sim"),
}
#: Each flavour's engine parameters (``offload.hw.engine.OffloadEngine``'s ``multipliers`` and
#: ``operators``).
FLAVOUR_PARAMS: dict[str, dict[str, str]] = {
    "lut": {"multipliers": "lut", "operators": DEFAULT_BUILD},
    "behavioural": {"multipliers": "behavioural", "operators": DEFAULT_BUILD},
    "full": {"multipliers": "behavioural", "operators": "full"},
}


def check_flavour(flavour: str) -> str:
    """``flavour`` if it names an engine flavour, else ``ValueError`` naming the choices."""
    if flavour not in RTL_FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(map(repr, RTL_FLAVOURS))}, not {flavour!r}")
    return flavour


def err_names(err: int) -> str:
    """``"EARLY_TLAST|BAD_PARAM"`` for an error word (``"none"`` when no flag is set)."""
    names = [k for k, v in ERR_FLAGS.items() if err & v]
    return "|".join(names) if names else "none"


def ops_mask(codes: Iterable[int] | None = None) -> int:
    """The op code mask of an engine built with ``codes`` (default: every op code): ``OPS`` is
    its bits 31..0, ``OPS_HI`` bits 63..32."""
    chosen = OP_CODES.values() if codes is None else codes
    return sum(1 << int(c) for c in chosen)
