"""Ray Data: a :class:`~offload.FeatureSpec` over a ``ray.data.Dataset``, in a pool of actors.

    import offload.ray_data

    out = offload.ray_data.featurize(ds, spec, actors=4, keep=["label"])
    out = offload.ray_data.featurize(
        ds, spec, actors=2, device_resource="offload_fpga", backends=["fpga", "cpu"], fpga="sim"
    )

:func:`featurize` returns a lazy ``ray.data.Dataset`` (``ds.map_batches`` with a fixed pool of
``actors`` actors, ``batch_format="pyarrow"``, zero-copy batches) whose rows are those of
``spec.transform(table, keep=keep)``: one column per feature, named ``out``, in spec order, then
the ``keep`` columns; rows keep their order within a block, and blocks keep theirs when Ray's
``DataContext.execution_options.preserve_order`` is set. The keyword arguments besides the ones
named below are the :class:`~offload.Runtime`'s (``backends=``, ``verify=``, ``fpga=``,
``smartnic=``, ``options=``, ...), built inside each actor.

What runs where:

- **On the driver**, before anything is submitted: the spec is validated against the dataset's
  schema when Ray knows it without executing anything (the spec's own exact errors), ``keep=``,
  ``backend=`` and the Runtime's options are checked by building a Runtime (no backend opens: a
  Runtime opens backends on first use) and pickling it, and the cluster is checked: ``actors``
  actors of ``num_cpus`` CPUs, and one unit of ``device_resource`` each, must fit in the
  cluster's resources as they are now, leaving a CPU to the tasks that make the blocks of a
  dataset that is not materialized (a read); otherwise a ``ValueError`` says what is missing (a
  pool that can never start, or that starves its own input, would wait forever).
- **In each actor**: the constructor only keeps the configuration (it opens no device). On the
  first batch the actor rebuilds the spec from its JSON and checks its fingerprint, binds its
  device (below) and builds its Runtime, kept for the actor's life; the CPU backend's kernel
  threads are the CPUs Ray assigned to the actor (``num_cpus``), unless ``options={"cpu":
  {"threads": n}}`` says otherwise.

Devices: ``device_resource`` names a custom resource declared per node for its devices (``ray
start --resources='{"offload_fpga": 2}'`` on a node with two FPGAs, or ``ray.init(resources=...)``).
Each actor requests one unit, so Ray places at most as many actors on a node as it has devices.
Ray does not say which unit an actor got (custom resources have no instance ids), so the actor
takes the first free *slot* ``k`` in ``0..units-1`` of its node: an exclusive ``flock`` on
``<tmp>/offload-ray-<node id>-<resource>-<k>.lock``, held for the process's life. The kernel
releases it when the process dies, so a restarted actor finds its predecessor's slot free.
``device_options[k]`` (a mapping of Runtime keyword arguments, merged over the others; an
``options`` mapping is merged per backend) configures the device of slot ``k``: e.g.
``[{"smartnic": "dpu0:7000"}, {"smartnic": "dpu1:7000"}]`` for two SmartNIC services, or a
``bitfile``/engine per FPGA under ``options={"fpga": {...}}``. The slot is the actor's
:func:`device_slot`.

Faults: a device that fails falls back inside the actor (the Runtime's fallback: the records it
did not complete are recomputed on the next backend, in order), so the batch's result is
complete and exact and the transform raises only on bad data (a null under ``nulls="error"``
names the row counted from the block's first row; Ray wraps it in its task error). An actor that
dies (its process killed, its node lost) is restarted by Ray and its unfinished batch retried:
Ray Data's actor pool sets ``max_restarts=-1`` and ``max_task_retries=-1``, and a batch's output
is taken only from the task that completed, so no row is lost or duplicated.
"""

from __future__ import annotations

import fcntl
import math
import os
import pickle
import re
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from offload.extras import message
from offload.features import FeatureSpec
from offload.runtime import Runtime

if TYPE_CHECKING:
    import ray.data

__all__ = ["featurize", "device_slot", "ray_model", "predict", "bench_rows"]

_SLOT: int | None = None  # this process's device slot, once an actor bound it
_SLOT_LOCK = threading.Lock()


def featurize(
    ds: ray.data.Dataset,
    spec: FeatureSpec,
    *,
    actors: int = 1,
    num_cpus: float = 1,
    device_resource: str | None = None,
    device_options: Sequence[Mapping[str, Any]] | None = None,
    keep: Sequence[str] = (),
    backend: str | Mapping[str, str] = "auto",
    batch_size: int | None = None,
    **runtime_options: Any,
) -> ray.data.Dataset:
    """``ds`` with ``spec`` applied by ``actors`` Ray actors: one column per feature, then ``keep``.

    ``num_cpus``: CPUs per actor (its CPU kernel threads). ``device_resource``: a custom resource,
    one unit per actor, each actor bound to its own device (``device_options[k]`` for slot
    ``k``; see the module docstring). ``backend``: as :meth:`FeatureSpec.transform` takes it.
    ``batch_size``: rows per batch (None: whole blocks). ``runtime_options``: the keyword
    arguments of :class:`~offload.Runtime`, built in each actor. Every error of the spec,
    ``keep``, ``backend``, the options and the cluster's resources is raised here."""
    ray = _ray()
    if not isinstance(ds, ray.data.Dataset):
        raise TypeError(f"featurize takes a ray.data.Dataset, got {type(ds).__name__}")
    if not isinstance(spec, FeatureSpec):
        raise TypeError(f"featurize takes an offload.FeatureSpec, got {type(spec).__name__}")
    _check_count("actors", actors)
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or not num_cpus > 0:
        raise ValueError(f"num_cpus must be a positive number, got {num_cpus!r}")
    if batch_size is not None:
        _check_count("batch_size", batch_size)
    slots = _check_device_options(device_resource, device_options)
    for k in range(max(1, len(slots))):
        rt = Runtime(**_merged(runtime_options, slots[k] if slots else {}))
        pickle.dumps(rt)  # a backend instance that cannot travel is refused here
    for _ in spec.transform_batches((), backend=backend, runtime=rt, keep=keep):
        pass  # no batch: checks keep= and backend= with the spec's own messages
    keep = list(keep)
    schema = _known_schema(ds)
    if schema is not None:
        spec.validate(schema, keep)
    _check_cluster(ray, actors, float(num_cpus), device_resource, len(slots))
    from ray.data.dataset import MaterializedDataset

    if not isinstance(ds, MaterializedDataset):
        _check_room_for_tasks(ray, actors, float(num_cpus))
    udf = _Featurize(
        spec.to_json(indent=None),
        spec.fingerprint,
        dict(runtime_options),
        [dict(s) for s in slots],
        backend if isinstance(backend, str) else dict(backend),
        keep,
        device_resource,
    )
    return ds.map_batches(
        _Actor,
        fn_constructor_args=(udf,),
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_format="pyarrow",
        zero_copy_batch=True,
        batch_size=batch_size,
        num_cpus=num_cpus,
        resources={device_resource: 1} if device_resource is not None else None,
        udf_modifying_row_count=False,
    )


def device_slot() -> int | None:
    """The device slot this process's actor bound (``0..units-1`` of its node's
    ``device_resource``), or None when it has not bound one."""
    return _SLOT


# ---------------------------------------------------------------------------------------------
# the driver's side
# ---------------------------------------------------------------------------------------------


def _ray() -> Any:
    try:
        import ray
        import ray.data  # ray without its "data" part is the extra missing too
    except ModuleNotFoundError as e:
        if e.name is None or e.name.partition(".")[0] != "ray":
            raise
        raise ModuleNotFoundError(message("offload.ray_data", "ray"), name="ray") from None
    return ray


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_device_options(
    resource: str | None, device_options: Sequence[Mapping[str, Any]] | None
) -> list[Mapping[str, Any]]:
    if resource is not None and (not isinstance(resource, str) or not resource):
        raise ValueError(f"device_resource must be a non-empty resource name, got {resource!r}")
    if device_options is None:
        return []
    if resource is None:
        raise ValueError("device_options needs device_resource: an actor's slot is its unit of it")
    if isinstance(device_options, (str, bytes, Mapping)) or not isinstance(device_options, Sequence):
        raise TypeError(
            f"device_options must be a list of mappings (one per slot), got {type(device_options).__name__}"
        )
    for k, o in enumerate(device_options):
        if not isinstance(o, Mapping):
            raise TypeError(
                f"device_options[{k}] must be a mapping of Runtime options, got {type(o).__name__}"
            )
    return list(device_options)


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Runtime keyword arguments ``over`` merged onto ``base``; ``options`` per backend."""
    out = dict(base)
    for key, value in over.items():
        if key == "options" and isinstance(value, Mapping):
            opts = {name: dict(o) for name, o in (out.get("options") or {}).items()}
            for name, o in value.items():
                opts.setdefault(name, {}).update(o)
            out["options"] = opts
        else:
            out[key] = value
    return out


def _known_schema(ds: Any) -> pa.Schema | None:
    """The dataset's Arrow schema when Ray knows it without executing anything."""
    schema = ds.schema(fetch_if_missing=False)
    if schema is None or not all(isinstance(t, pa.DataType) for t in schema.types):
        return None
    return pa.schema(list(zip(schema.names, schema.types)))


def _check_room_for_tasks(ray: Any, actors: int, num_cpus: float) -> None:
    """A dataset that is not materialized makes its blocks with tasks (a read, a transformation)
    when it runs; if the actors took every CPU, those tasks could never start."""
    cpus = ray.cluster_resources().get("CPU", 0.0)
    if actors * num_cpus > cpus - 1 + 1e-9:
        raise ValueError(
            f"{actors} actors of {num_cpus:g} CPUs would leave less than one of the Ray cluster's "
            f"{cpus:g} CPUs to the tasks that make this dataset's blocks (a read or a "
            "transformation), which would then wait forever: use fewer actors or a smaller "
            "num_cpus, or pass a materialized dataset (ds.materialize())"
        )


def _node_units(ray: Any, resource: str) -> list[int]:
    """Whole units of ``resource`` on each alive node (the nodes that have some)."""
    units = []
    for node in ray.nodes():
        n = int(math.floor(node.get("Resources", {}).get(resource, 0) + 1e-9))
        if node.get("Alive", True) and n > 0:
            units.append(n)
    return units


def _check_cluster(ray: Any, actors: int, num_cpus: float, resource: str | None, slots: int) -> None:
    """The pool fits in the cluster as it is now (else it would wait forever for its actors)."""
    if not ray.is_initialized():
        ray.init()  # what Ray Data would do when the dataset runs
    have = ray.cluster_resources()
    cpus = have.get("CPU", 0.0)
    if actors * num_cpus > cpus + 1e-9:
        raise ValueError(
            f"{actors} actors of {num_cpus:g} CPUs need {actors * num_cpus:g} CPUs; the Ray "
            f"cluster has {cpus:g}: use fewer actors or a smaller num_cpus"
        )
    if resource is None:
        return
    units = _node_units(ray, resource)
    if not units:
        declared = ", ".join(sorted(k for k in have if not k.startswith("node:"))) or "none"
        raise ValueError(
            f"device_resource {resource!r}: no node of the Ray cluster has this resource "
            f"(declare it per node: ray start --resources='{{\"{resource}\": N}}', or "
            f"ray.init(resources={{{resource!r}: N}})); the cluster's resources: {declared}"
        )
    if sum(units) < actors:
        raise ValueError(
            f"device_resource {resource!r}: the Ray cluster has {sum(units)} unit(s) of it, "
            f"and each of the {actors} actors needs one: use at most {sum(units)} actors"
        )
    if slots and slots < max(units):
        raise ValueError(
            f"device_options has {slots} slot(s), and a node has {max(units)} units of "
            f"{resource!r}: give one mapping per unit"
        )


# ---------------------------------------------------------------------------------------------
# the actors' side
# ---------------------------------------------------------------------------------------------


class _Featurize:
    """The configuration an actor runs with (small and picklable: the spec travels as JSON)."""

    def __init__(
        self,
        spec_json: str,
        fingerprint: str,
        runtime_options: dict[str, Any],
        device_options: list[dict[str, Any]],
        backend: str | dict[str, str],
        keep: list[str],
        device_resource: str | None,
    ) -> None:
        self.spec_json = spec_json
        self.fingerprint = fingerprint
        self.runtime_options = runtime_options
        self.device_options = device_options
        self.backend = backend
        self.keep = keep
        self.device_resource = device_resource


class _Actor:
    """The callable class of the actor pool. Its constructor opens nothing: the spec, the
    device binding and the Runtime are made on the first batch."""

    def __init__(self, config: _Featurize) -> None:
        self.config = config
        self.spec: FeatureSpec | None = None
        self.runtime: Runtime | None = None
        self._lock_fd: int | None = None

    def __call__(self, table: pa.Table) -> pa.Table:
        if self.runtime is None:
            self._start()
        assert self.spec is not None
        return self.spec.transform(
            table, backend=self.config.backend, runtime=self.runtime, keep=self.config.keep
        )

    def _start(self) -> None:
        cfg = self.config
        spec = FeatureSpec.from_json(cfg.spec_json)
        if spec.fingerprint != cfg.fingerprint:
            raise RuntimeError(
                f"the actor reads the spec with fingerprint {spec.fingerprint}, the driver had "
                f"{cfg.fingerprint}: install the same offload version on every node"
            )
        options = dict(cfg.runtime_options)
        if cfg.device_resource is not None:
            slot, self._lock_fd = _bind(cfg.device_resource)
            if cfg.device_options:
                options = _merged(options, cfg.device_options[slot])
        # the CPUs Ray assigned, unless the caller's options name a thread count
        options = _merged({"options": {"cpu": {"threads": _assigned_cpus()}}}, options)
        self.spec = spec
        self.runtime = Runtime(**options)

    def __del__(self) -> None:
        if self.runtime is not None:
            self.runtime.close()


def _assigned_cpus() -> int:
    """The CPUs Ray assigned to this actor (whole ones, at least 1)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def _bind(resource: str) -> tuple[int, int]:
    """This process's device slot of ``resource`` on its node, and the fd of the lock held."""
    global _SLOT
    import ray

    node = ray.get_runtime_context().get_node_id()
    units = next(
        (int(math.floor(n["Resources"].get(resource, 0) + 1e-9)) for n in ray.nodes() if n["NodeID"] == node),
        0,
    )
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", resource)
    with _SLOT_LOCK:
        for k in range(units):
            path = os.path.join(tempfile.gettempdir(), f"offload-ray-{node}-{safe}-{k}.lock")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _SLOT = k
            return k, fd
    raise RuntimeError(
        f"device_resource {resource!r}: all {units} slot(s) of node {node} are held by other "
        "processes (a process not started by this Ray cluster holds an offload-ray lock?)"
    )


# ---------------------------------------------------------------------------------------------
# benchmark
# ---------------------------------------------------------------------------------------------


#: The benchmark's block size (rows): 4M rows are 16 blocks.
BENCH_BLOCK_ROWS = 262_144


def _ray_run(table: pa.Table, spec: FeatureSpec, block_rows: int, actors: int) -> tuple[float, float]:
    """``featurize`` over ``table`` cut into blocks of ``block_rows`` (already in the object
    store), its output blocks streamed as they come: the wall time from submission to the last
    block, and the steady rate (rows/s): the rows of the blocks after the first ``actors`` ones,
    over the time from the ``actors``-th block to the last (the pool's start excluded)."""
    import ray.data

    ds = ray.data.from_arrow([table.slice(i, block_rows) for i in range(0, table.num_rows, block_rows)])
    t0 = time.perf_counter()
    arrivals = [
        (time.perf_counter(), bundle.num_rows())
        for bundle in featurize(ds, spec, actors=actors, backends=["cpu"]).iter_internal_ref_bundles()
    ]
    seconds = time.perf_counter() - t0
    rows = sum(r for _, r in arrivals)
    if rows != table.num_rows or len(arrivals) <= actors:
        raise RuntimeError(
            f"ray featurize returned {rows} rows in {len(arrivals)} blocks for {table.num_rows}"
        )
    after = sum(r for _, r in arrivals[actors:])
    return seconds, after / (arrivals[-1][0] - arrivals[actors - 1][0])


def ray_model(quick: bool) -> dict[str, Any]:
    """The measured model of ``featurize`` on a local Ray cluster of this machine's CPUs, with
    2 actors of one CPU each, against ``spec.transform`` in this process (every core):

    ``T(rows) = start + blocks / actors * (block_cost + block_rows / actor_rate)``

    ``start``: the pool's fixed cost (executor and actors started, first blocks); ``actor_rate``
    (rows/s of one actor in the running pool: its compute, the block's transfer in and out, and
    its share of the CPUs with Ray's own processes) and ``block_cost`` (Ray's fixed cost per
    block: task dispatch, metadata) from the steady rates at two block sizes, ``B`` and ``B/8``;
    ``thread_rate``: one CPU thread's ``spec.transform`` rate in this process, for comparison."""
    from offload.bench import best as _best
    from offload.features import bench_spec, bench_table

    ray = _ray()
    n = 1_000_000 if quick else 4_000_000
    b = BENCH_BLOCK_ROWS // 4 if quick else BENCH_BLOCK_ROWS
    actors = 2
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=actors, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        spec, table = bench_spec(), bench_table(n)
        reps = 1 if quick else 3
        t_direct = _best(lambda: spec.transform(table, backend="cpu", runtime=Runtime(["cpu"])), reps)
        one = Runtime(["cpu"], options={"cpu": {"threads": 1}})
        t_one = _best(lambda: spec.transform(table, backend="cpu", runtime=one), reps)
        seconds, steady = _ray_run(table, spec, b, actors)
        _, steady_small = _ray_run(table.slice(0, n // 2), spec, b // 8, actors)
    finally:
        if started:
            ray.shutdown()
    # one actor turns a block of B rows over in t(B) = block_cost + B / actor_rate
    t_big, t_small = actors * b / steady, actors * (b // 8) / steady_small
    # the fit needs the bigger block to take longer, and by more than its fixed cost: under noise
    # (a machine shared with other jobs) it may not, and then the terms are not separable
    actor_rate = (b - b // 8) / (t_big - t_small) if t_big > t_small else None
    block_cost = t_big - b / actor_rate if actor_rate is not None else None
    if block_cost is not None and block_cost < 0:
        actor_rate = block_cost = None
    return {
        "rows": n,
        "actors": actors,
        "block_rows": b,
        "direct_rows_per_s": n / t_direct,
        "thread_rate": n / t_one,
        "ray_seconds": seconds,
        "ray_rows_per_s": n / seconds,
        "ray_steady_rows_per_s": steady,
        "ray_steady_small_blocks_rows_per_s": steady_small,
        "actor_rate": actor_rate,
        "block_cost_s": block_cost,
        "start_s": seconds - n / steady,
    }


def predict(model: Mapping[str, Any], nodes: int) -> float:
    """Rows/s of the steady state on ``nodes`` nodes like the measured one (its actors, its
    block size): each node adds the measured steady rate, ``actors * block_rows / (block_cost +
    block_rows / actor_rate)``, while the source keeps up and the driver dispatches the blocks."""
    return nodes * float(model["ray_steady_rows_per_s"])


def bench_rows(quick: bool) -> list[dict[str, Any]]:
    """Rows of ``offload.bench.row`` for a "ray" bench group: ``featurize`` with 2 actors on a
    local Ray cluster against ``spec.transform`` in this process (target 0.4x, steady state),
    end to end, and the model's terms (:func:`ray_model`)."""
    from offload.bench import row

    if _ray_missing():
        return [row("ray featurize", None, "M rows/s", note=_ray_missing() or "")]
    m = ray_model(quick)
    n, direct = m["rows"], m["direct_rows_per_s"] / 1e6
    base = "M rows/s (spec.transform in this process, every core)"
    unfit = (
        ""
        if m["actor_rate"] is not None
        else "not separable in this run: blocks of B/8 rows took as long per row as blocks of B (noise)"
    )
    shape = f"{n:,} rows in blocks of {m['block_rows']:,}, 2 actors of 1 CPU, cpu backend"
    return [
        row(
            f"ray featurize, steady state, {shape}",
            m["ray_steady_rows_per_s"] / 1e6,
            "M rows/s",
            baseline=direct,
            baseline_unit=base,
            target=0.4,
            target_kind="ratio",
            note="the rows after the first 2 blocks over the time from the 2nd block to the last",
        ),
        row(
            f"ray featurize, end to end, {shape}",
            m["ray_rows_per_s"] / 1e6,
            "M rows/s",
            baseline=direct,
            baseline_unit=base,
            note=f"includes the pool's start, {m['start_s']:.2f} s",
        ),
        row(
            "ray actor rate (one CPU)",
            None if m["actor_rate"] is None else m["actor_rate"] / 1e6,
            "M rows/s",
            baseline=m["thread_rate"] / 1e6,
            baseline_unit="M rows/s (spec.transform on one thread in this process)",
            note=unfit,
        ),
        row(
            "ray fixed cost per block",
            None if m["block_cost_s"] is None else m["block_cost_s"] * 1e3,
            "ms",
            note=unfit or "from blocks of B and B/8 rows",
        ),
        row(
            "ray predicted steady state, 4 nodes of 2 actors",
            predict(m, 4) / 1e6,
            "M rows/s",
            note="4 x the steady state of this node (its 2 actors)",
        ),
    ]


def _ray_missing() -> str | None:
    from offload.extras import missing

    return missing("the ray bench", "ray")
