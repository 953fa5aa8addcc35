"""Shared building blocks of the offload cores: a non-stalling pipeline builder and pipelined
constant/variable multipliers.

Every core in ``offload.hw`` is a *flow-through* pipeline: one stage is one register level, data
advances every cycle, and a ``valid`` bit travels with the data. No core stalls on its output;
the engine guarantees room for everything in flight (credit on its output FIFO), which keeps the
cores free of ready chains and lets each stage be a plain register (good for Fmax).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, Value

__all__ = [
    "Pipe",
    "mux_index",
    "xorshift",
    "set_multiplier_params",
    "check_choice",
    "check_pow2",
    "csd_digits",
    "const_mul_terms",
    "tree_level",
    "csa_level",
    "term_value",
    "tree_depth",
    "tree_stages",
    "mul_depth",
    "MULTIPLIERS",
    "ADDER_LEVELS",
    "ternary_level",
]

#: Values of ``adder_levels`` (hash cores, lanes, engine): how much of a constant multiply's
#: adder tree sits between two registers. ``1``: one binary adder level (one carry chain per
#: stage: highest Fmax, most stages and registers); ``2``: two chained binary levels (a quarter
#: of the terms per stage, about half the registers, two carry chains in a stage); ``"csa"``: a
#: carry-save (3:2) level of LUTs in front of one carry chain, so a stage adds three terms with
#: one carry chain (about the registers of ``2``, nearly the stage delay of ``1``).
ADDER_LEVELS = (1, 2, "csa")

#: How the hash cores build their constant multiplies (the ``multipliers`` parameter of the cores
#: and of the engine): ``"lut"``, adder trees of shifted copies (what is synthesised: no DSP, one
#: carry chain per stage); ``"behavioural"``, one ``*`` per product carried through a delay line
#: of the same depth: cycle-identical at the ports, for fast simulation only (a Verilator model
#: evaluates one native multiply instead of ~23 registered adders per product).
MULTIPLIERS = ("lut", "behavioural")


def check_pow2(name: str, value, lo: int, hi: int) -> int:
    """Validate a power-of-two parameter; the message names the parameter and the bad value."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < lo
        or value > hi
        or value & (value - 1)
    ):
        raise ValueError(f"{name} must be a power of two between {lo} and {hi}, not {value!r}")
    return value


def check_choice(name: str, value, choices) -> object:
    if value not in choices or isinstance(value, bool) != any(isinstance(c, bool) for c in choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return value


def set_multiplier_params(core, adder_levels, multipliers: str) -> None:
    """Validate a hash core's ``adder_levels`` and ``multipliers`` and set them (and
    ``behavioural``) on ``core``; exact messages from :func:`check_choice`."""
    core.adder_levels = check_choice("adder_levels", adder_levels, ADDER_LEVELS)
    core.multipliers = check_choice("multipliers", multipliers, MULTIPLIERS)
    core.behavioural = multipliers == "behavioural"


def keep_copies(m, name: str, v, n: int) -> list[Signal]:
    """``n`` registered copies of ``v`` that synthesis keeps apart (``keep``): each drives a
    share of a wide select's loads instead of one net driving them all."""
    v = Value.cast(v)
    regs = [Signal(len(v), name=f"{name}{i}", reset_less=True, attrs={"keep": 1}) for i in range(n)]
    m.d.sync += [r.eq(v) for r in regs]
    return regs


def mux_index(index: Value, items: list[Value]) -> Value:
    """``items[index]`` as a mux tree (items beyond the list read as the last one)."""
    out = items[-1]
    for i in reversed(range(len(items) - 1)):
        out = Mux(index == i, items[i], out)
    return out


def xorshift(field: str, shift: int):
    """The operand ``v ^ v >> shift`` of field ``field`` (``v`` itself for shift 0), as a
    function of a pipe's fields: the form :meth:`Pipe.mul_step`'s ``then`` takes."""
    return lambda f: f[field] ^ (f[field] >> shift) if shift else f[field]


class Pipe:
    """Builder of a flow-through pipeline inside a module ``m``.

    ``fields`` are the named values entering the pipeline; :meth:`stage` registers every live
    field (after applying ``updates`` and dropping ``drop``), so the caller writes the pipeline
    as a list of stages in program order. ``depth`` counts the register levels built so far.

    Tree sums (:meth:`tree`, used by :meth:`mul_tree` and :meth:`mul_step`) run alongside: each
    :meth:`stage` reduces every tree in flight by one adder level before registering, and a
    finished tree becomes an ordinary field (or calls its ``done`` hook in the stage where it
    finishes).

    ``behavioural``: the simulation flavour of the constant multiplies (see :data:`MULTIPLIERS`).
    :meth:`mul_tree` then computes the product with one ``*`` in the stage where its adder tree
    would start and carries it through a *delay tree*: as many register stages as the adder
    tree has, finishing in the same :meth:`stage` call (same field or ``done`` hook, same
    :meth:`busy`/:meth:`drain`), so the pipeline is cycle-identical to the LUT flavour.
    """

    def __init__(self, m, name: str, levels: int | str = 1, behavioural: bool = False, **fields):
        self.m = m
        self.name = name
        #: adder levels of a tree between two registers (1: every stage is one carry chain;
        #: 2: two chained carry chains, half the registers and stages)
        self.levels = levels
        #: constant multiplies as ``*`` + delay trees instead of adder trees (simulation only)
        self.behavioural = behavioural
        self.f: dict[str, Value] = {k: Value.cast(v) for k, v in fields.items()}
        self.depth = 0
        self._trees: dict[str, tuple[list[int], int, object]] = {}
        #: delay trees in flight (behavioural flavour): name -> (stages left, ``done`` hook);
        #: the value travels in field ``{name}__0``
        self._delays: dict[str, tuple[int, object]] = {}
        #: callbacks to run once the pipeline reaches a depth (see :meth:`at`)
        self._hooks: dict[int, list] = {}
        #: fields whose registers synthesis keeps apart from equal ones (see :meth:`keep`)
        self._kept: set[str] = set()
        #: fields to compute once the current :meth:`stage`'s trees have finished (see
        #: :meth:`mul_step`'s ``then``)
        self._post: list = []

    def __getitem__(self, key: str) -> Value:
        return self.f[key]

    def __contains__(self, key: str) -> bool:
        return key in self.f

    def tree(self, name: str, terms: list[Term], width: int, done=None) -> int:
        """Start the pipelined sum of ``terms`` (modulo ``2**width``); returns its depth in
        stages. When it finishes, field ``name`` holds the sum, or ``done(sum)`` returns the
        field updates of that stage."""
        self._check_free(name)
        for i, (v, _) in enumerate(terms):
            self.f[f"{name}__{i}"] = Value.cast(v)
        self._trees[name] = ([s for _, s in terms], width, done)
        return self.tree_stages(len(terms))

    def tree_stages(self, n_terms: int) -> int:
        """Stages of a tree over ``n_terms`` terms (at least one: a single term is registered
        once) with :attr:`levels` adder levels per stage."""
        return tree_stages(n_terms, self.levels)

    def _check_free(self, name: str) -> None:
        if name in self._trees or name in self._delays or f"{name}__0" in self.f:
            raise ValueError(f"tree {name!r} is already in flight")

    def mul_tree(self, name: str, x: Value, const: int, width: int, add: int = 0, done=None) -> int:
        """Start the pipelined product ``(x * const + add) mod 2**width``; finishes like
        :meth:`tree` (field ``name``, or ``done(product)``) and returns its depth in stages.

        LUT flavour: the adder tree of :func:`const_mul_terms`. Behavioural flavour: the
        product as one ``*``, computed from ``x`` here (where the adder tree would read its
        terms) and delayed by exactly the adder tree's depth, so both flavours deliver the same
        value in the same stage."""
        terms = const_mul_terms(x, const, width, add)
        if not self.behavioural:
            return self.tree(name, terms, width, done)
        return self._delay(name, _product(x, const, width, add), self.tree_stages(len(terms)), done)

    def _delay(self, name: str, value: Value, depth: int, done=None) -> int:
        """Start a delay tree: ``value`` finishes like a tree of ``depth`` stages."""
        self._check_free(name)
        self.f[f"{name}__0"] = Value.cast(value)
        self._delays[name] = (depth, done)
        return depth

    def _finish(self, name: str, total: Value, done) -> None:
        for k, v in (done(total) if done else {name: total}).items():
            self.f[k] = Value.cast(v)

    def stage(self, drop=(), **updates) -> None:
        for k in drop:
            self.f.pop(k, None)
        for k, v in updates.items():
            self.f[k] = Value.cast(v)
        for name in list(self._delays):
            left, done = self._delays.pop(name)
            if left == 1:
                self._finish(name, self.f.pop(f"{name}__0"), done)
            else:
                self._delays[name] = (left - 1, done)
        for name in list(self._trees):
            shifts, width, done = self._trees[name]
            terms = [(self.f.pop(f"{name}__{i}"), s) for i, s in enumerate(shifts)]
            for lv in range(self.levels if isinstance(self.levels, int) else 1):  # "csa": one level
                if self.levels == "csa":
                    terms = ternary_level(terms, width) if len(terms) > 1 else terms
                    break
                if lv:
                    # Name the first level's sums: the next level reads each twice (low bits
                    # and the adder), and simulators expand expressions as trees.
                    terms = [(self.wire(v, f"{name}_l{lv}_{i}"), s_) for i, (v, s_) in enumerate(terms)]
                terms = tree_level(terms, width) if len(terms) > 1 else terms
            if len(terms) == 1:
                del self._trees[name]
                self._finish(name, term_value(terms[0], width), done)
            else:
                for i, (v, _) in enumerate(terms):
                    self.f[f"{name}__{i}"] = v
                self._trees[name] = ([s for _, s in terms], width, done)
        for fn in self._post:
            fn()
        self._post.clear()
        new = {}
        for k, v in self.f.items():
            # Only the valid bits are reset: a datapath register holds data only while its
            # stage's valid bit is set, and a reset on it would be one more high-fanout net.
            s = Signal(
                v.shape(),
                name=f"{self.name}_s{self.depth + 1}_{k}",
                reset_less=k != "valid",
                attrs={"keep": 1} if k in self._kept else {},
            )
            self.m.d.sync += s.eq(v)
            new[k] = s
        self.f = new
        self.depth += 1
        for fn in self._hooks.pop(self.depth, []):
            fn()

    def at(self, depth: int, fn) -> None:
        """Call ``fn()`` when the pipeline reaches ``depth`` (right after the :meth:`stage` that
        builds that register level; now if it is the current depth). ``fn`` reads and updates
        :attr:`f` as the caller would at that point: this is how a value from a side pipeline
        (one shared by several stages, see ``xxh64_finalize``) joins the record that fed it."""
        if depth < self.depth:
            raise ValueError(f"depth {depth} is behind the pipeline ({self.depth})")
        if depth == self.depth:
            fn()
        else:
            self._hooks.setdefault(depth, []).append(fn)

    def keep(self, *names: str) -> None:
        """Keep the registers of fields ``names`` apart from equal ones in synthesis (``keep``):
        a copy of a flag that drives a group of loads of its own instead of one net driving
        them all."""
        self._kept.update(names)

    def wire(self, v: Value, name: str) -> Signal:
        """``v`` as a named combinational signal (shared by every reader instead of copied into
        each reader's expression)."""
        w = Signal(Value.cast(v).shape(), name=f"{self.name}_w{self.depth + 1}_{name}")
        self.m.d.comb += w.eq(v)
        return w

    def busy(self) -> bool:
        """Whether a tree (adder or delay tree) is still in flight."""
        return bool(self._trees or self._delays)

    def pending(self) -> bool:
        """Whether a callback of :meth:`at` has not run yet."""
        return bool(self._hooks)

    def drain(self) -> None:
        """Stages until every tree in flight has finished."""
        while self.busy():
            self.stage()

    def mul_step(
        self, key: str, x: Value, const: int, width: int, active: Value, add=0, drop=(), then=None
    ) -> int:
        """``f[key] = active ? (x * const + add) mod 2**width : f[key]`` in
        :func:`mul_depth` stages; ``x`` is computed by the caller from the current (registered)
        fields. Returns the number of stages.

        ``then``: the next step's operand as a function of the fields (a dict), computed in
        this step's last stage from its result (before the registers) and registered as field
        ``{key}_x``; the next step passes ``p.take(f"{key}_x")`` as its ``x``. Its first stage
        then starts from a register: the operand's logic (an xor, a shift) sits after this
        step's last carry chain instead of in front of the next step's carry-save LUTs and
        chain (10.35 ns, nextpnr seed 2). Meant for an unconditional next step (``active``
        ``Const(1)``): a conditional one keeps its old value, whose copies, no longer read at
        its first stage, become a shift register on the xc7 (LUTs, the scarce resource there)."""
        depth0 = self.depth
        # Every term reads x: one named signal instead of ~23 copies of its expression.
        x = self.wire(x, f"{key}_x")
        active = Value.cast(active)
        if isinstance(active, Const) and active.value == 1:
            # An unconditional step keeps no copy of the old value. (As a field, the constant
            # would be a register that powers up 0, so synthesis would keep the hold mux and
            # the old value's registers for the first cycle: 64 LUTs and a shift register.)
            self.f.pop(key)

            def done_u(res):
                self._then(key, then)
                return {key: res}

            if self.behavioural:
                self._delay(
                    f"{key}_m",
                    _product(x, const, width, add),
                    self.tree_stages(len(const_mul_terms(x, const, width, add))),
                    done_u,
                )
            else:
                self.mul_tree(f"{key}_m", x, const, width, add, done_u)
        elif self.behavioural:
            # The selection is made where the product is computed, and the result travels as
            # one delay tree: the same value in the same stage as the LUT flavour's late
            # selection, with one field in flight instead of three (product, kept value, active
            # bit), i.e. fewer registers for a simulator to copy every cycle.
            n_terms = len(const_mul_terms(x, const, width, add))

            def done_b(res):
                self._then(key, then)
                return {key: res}

            self._delay(
                f"{key}_m",
                Mux(active, _product(x, const, width, add), self.f.pop(key)),
                self.tree_stages(n_terms),
                done_b,
            )
        else:
            act = f"{key}_act"
            self.f[act] = Value.cast(active)

            def done(res):
                out = {key: Mux(self.f[act], res, self.f[key])}
                self.f.pop(act)
                self._then(key, then)
                return out

            self.mul_tree(f"{key}_m", x, const, width, add, done)
        self.stage(drop=drop)
        while f"{key}_m" in self._trees or f"{key}_m" in self._delays:
            self.stage()
        return self.depth - depth0

    def _then(self, key: str, then) -> None:
        """Compute ``then(fields)`` as field ``{key}_x`` once the stage's trees have finished."""
        if then is not None:
            self._post.append(lambda: self.f.__setitem__(f"{key}_x", Value.cast(then(self.f))))

    def take(self, name: str) -> Value:
        """Field ``name``, no longer carried (a step's registered operand, see :meth:`mul_step`)."""
        return self.f.pop(name)


def _product(x: Value, const: int, width: int, add: int = 0) -> Value:
    """``(x * const + add) mod 2**width`` as one behavioural multiply (simulation flavour)."""
    return (Value.cast(x) * const + (add & ((1 << width) - 1)))[:width]


def mul_depth(x_width: int, const: int, width: int, add: int = 0, levels: int | str = 1) -> int:
    """Stages of :meth:`Pipe.mul_step` for an ``x_width``-bit operand (for latency formulas),
    with ``levels`` adder levels per stage."""
    digits = len(csd_digits(const, width))
    if x_width < digits:
        n = sum(1 for i in range(min(x_width, width)) if (const << i) & ((1 << width) - 1))
        k = add & ((1 << width) - 1)
    else:
        n = digits
        k = (add + sum(1 << s for s, d in csd_digits(const, width) if d < 0)) & ((1 << width) - 1)
    return tree_stages(n + (1 if k else 0), levels)


# ---------------------------------------------------------------------------------------------
# Constant multipliers in LUTs
# ---------------------------------------------------------------------------------------------
#
# Every XXH multiply is by a constant prime, and only the low ``width`` bits of the product are
# used. A DSP multiplier would need ten 18x18 blocks per 64-bit product (three 32x32 partial
# products), and XXH64 needs ~30 products in flight for one record per cycle: more DSP blocks
# than the xc7z020 (220) or the ECP5-85 (156) have. So the product is built from the constant's
# canonical signed digits (CSD: ~23 non-zero digits for a 64-bit prime instead of ~36 set bits)
# as a sum of shifted copies of ``x``, summed by a binary tree of adders whose widths shrink
# with the shifts (a term shifted by ``s`` only touches bits ``s..width-1``), one tree level per
# register stage: every stage is at most one carry chain, which is what sets Fmax on an FPGA.


def csd_digits(c: int, width: int) -> list[tuple[int, int]]:
    """Canonical signed-digit form of ``c mod 2**width``: ``[(shift, +1|-1), ...]`` with no two
    adjacent non-zero digits, so ``sum(d << s) == c (mod 2**width)``."""
    n = c & ((1 << width) - 1)
    out = []
    s = 0
    while n and s < width:
        if n & 1:
            d = 2 - (n & 3)  # +1 if the next bit is 0, -1 if it is 1 (starts a run)
            out.append((s, d))
            n -= d
        n >>= 1
        s += 1
    return out


#: A term of a tree sum: ``(value, shift)`` stands for ``value << shift`` truncated to the sum's
#: width (``len(value) <= width - shift``).
Term = tuple[Value, int]


def const_mul_terms(x: Value, c: int, width: int, add: int = 0) -> list[Term]:
    """Terms whose sum modulo ``2**width`` is ``x * c + add``.

    ``x`` narrower than the constant's digit count (a byte, say) is decomposed by its own bits
    (``x[i] ? c << i : 0``); otherwise by the CSD digits of ``c``, where a negative digit
    ``-(x << s)`` is ``(~x << s) + (1 << s)`` and all such constants are folded, with ``add``,
    into one constant term.
    """
    x = Value.cast(x)
    mask = (1 << width) - 1
    digits = csd_digits(c, width)
    terms: list[Term] = []
    k = add & mask
    if len(x) < len(digits):
        for i in range(min(len(x), width)):
            v = (c << i) & mask
            if v:
                s = (v & -v).bit_length() - 1
                terms.append((x[i].replicate(width - s) & Const(v >> s, width - s), s))
        if k:
            terms.append((Const(k >> ((k & -k).bit_length() - 1), width), (k & -k).bit_length() - 1))
        return terms or [(Const(0, width), 0)]
    for s, d in digits:
        w = min(len(x), width - s)
        if d > 0:
            terms.append((x[:w], s))
        else:
            # -(x << s) = (~x << s) + (1 << s), with ~x taken over all width - s bits.
            terms.append(((~Cat(x[:w], Const(0, width - s - w)))[: width - s], s))
            k = (k + (1 << s)) & mask
    if k:
        s = (k & -k).bit_length() - 1
        terms.append((Const(k >> s, width - s), s))
    return terms or [(Const(0, width), 0)]


def add_terms(a: Term, b: Term, width: int) -> Term:
    """``a + b`` as one term: the bits below the larger shift are copied, not added."""
    (va, sa), (vb, sb) = sorted([a, b], key=lambda t: t[1])
    d = sb - sa
    hi_w = width - sb
    if hi_w <= 0:
        return va, sa
    hi = (Value.cast(va[d:]) + vb)[:hi_w] if len(va) > d else Value.cast(vb)[:hi_w]
    low = va[:d] if len(va) >= d else Cat(va, Const(0, d - len(va)))
    return Cat(low, hi), sa


def add3_terms(a: Term, b: Term, c: Term, width: int) -> Term:
    """``a + b + c`` as one term with one carry chain: below the middle shift the lowest term's
    bits are copied; above it a carry-save level (sum and majority, one LUT level, no chain)
    turns the three addends into two, which one adder sums."""
    (va, sa), (vb, sb), (vc, sc) = sorted([a, b, c], key=lambda t: t[1])
    d = sb - sa
    hi_w = width - sb
    if hi_w <= 0:
        return va, sa
    low = va[:d] if len(va) >= d else Cat(va, Const(0, d - len(va)))
    y = Cat(vb, Const(0, hi_w))[:hi_w]
    z = term_value((vc, sc - sb), hi_w)
    if len(va) <= d:  # the lowest term has nothing above the middle shift
        return Cat(low, (y + z)[:hi_w]), sa
    x = Cat(va[d:], Const(0, hi_w))[:hi_w]
    sm = x ^ y ^ z
    maj = (x & y) | (x & z) | (y & z)
    hi = (sm + Cat(Const(0, 1), maj[: hi_w - 1]))[:hi_w]
    return Cat(low, hi), sa


def ternary_level(terms: list[Term], width: int) -> list[Term]:
    """One ``"csa"`` stage: triples of terms with neighbouring shifts become one term each
    (:func:`add3_terms`); a remaining pair is added, a single term passes."""
    terms = sorted(terms, key=lambda t: -t[1])
    out = []
    i = 0
    while len(terms) - i >= 3:
        out.append(add3_terms(terms[i], terms[i + 1], terms[i + 2], width))
        i += 3
    rest = terms[i:]
    out.extend([add_terms(rest[0], rest[1], width)] if len(rest) == 2 else rest)
    return out


def tree_level(terms: list[Term], width: int) -> list[Term]:
    """One adder level: pairs of terms with neighbouring shifts (keeps the adders narrow)."""
    terms = sorted(terms, key=lambda t: -t[1])
    out = [add_terms(terms[i], terms[i + 1], width) for i in range(0, len(terms) - 1, 2)]
    if len(terms) % 2:
        out.append(terms[-1])
    return out


def term_value(t: Term, width: int) -> Value:
    v, s = t
    return Cat(Const(0, s), v)[:width] if s else Value.cast(v)[:width]


def csa_level(terms: list[Term], width: int) -> list[Term]:
    """One carry-save level: every three terms become two (sum and shifted majority) with no
    carry chain at all (one LUT level). Used inside the stripe loops, whose recurrence has too
    few cycles for a tree of carry chains."""
    out: list[Term] = []
    full = [term_value(t, width) for t in terms]
    i = 0
    while len(terms) - i >= 3:
        a, b, c = full[i : i + 3]
        out.append((a ^ b ^ c, 0))
        out.append((((a & b) | (a & c) | (b & c))[: width - 1], 1))
        i += 3
    out.extend(terms[i:])
    return out


def tree_stages(n_terms: int, levels) -> int:
    """Register stages of a tree over ``n_terms`` terms with ``levels`` (see
    :data:`ADDER_LEVELS`) per stage; at least one (a single term is registered once)."""
    if levels == "csa":
        stages = 0
        while n_terms > 1:
            n_terms = -(-n_terms // 3)
            stages += 1
        return max(1, stages)
    return max(1, -(-tree_depth(n_terms) // levels))


def tree_depth(n_terms: int) -> int:
    """Register levels of a binary tree over ``n_terms`` terms (0 for a single term)."""
    return max(0, (n_terms - 1).bit_length())
