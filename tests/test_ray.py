"""offload.ray_data.featurize on a real local Ray cluster (2 CPUs, 2 units of "offload_fpga").

Every result equals ``spec.transform`` of the same table, compared row by row after sorting on a
row id kept with ``keep=``: CPU actors; an actor killed in the middle of a batch (restarted by Ray,
its batch retried: no row lost or duplicated); simulated PYNQ FPGAs that lose their device (the
actor falls back to the CPU); two actors bound to the two declared devices. Bad data fails the
dataset with the spec's message; a resource the cluster lacks, too many actors and a spec error
are immediate errors. One xdist group: the cluster is started once for the module.
"""

from __future__ import annotations

import os
import re
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

import offload
from offload.backend import BackendError
from offload.host.cpu import CpuBackend
from offload.host.fpga import FpgaBackend
from offload.sim.faults import Fault

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'offload[ray]')")
pytest.importorskip("ray.data", reason="ray is installed without Ray Data (pip install 'offload[ray]')")
pytest.importorskip("pynq", reason="pynq is not installed (pip install 'offload[fpga]')")

import offload.ray_data  # noqa: E402

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.timeout(300)]

N = 4_000
BLOCKS = 16
SPEC = offload.FeatureSpec(
    [
        offload.Feature("user_id", "hash_bucket", num_buckets=1_000_003, dtype="int64"),
        offload.Feature("item_id", "fid", slot=42, dtype="int64"),
        offload.Feature("category", "hash_bucket", num_buckets=10_007, dtype="string"),
        offload.Feature("price", "bucketize", boundaries=[1.0, 10.0, 100.0], dtype="float32"),
        offload.Feature("clicks", "delta_varint_encode", dtype="list<int64>"),
    ]
)


def table(n: int) -> pa.Table:
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 5, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return pa.table(
        {
            "row_id": np.arange(n, dtype=np.int64),
            "user_id": rng.integers(0, 2**62, n, dtype=np.int64),
            "item_id": rng.integers(0, 2**62, n, dtype=np.int64),
            "category": pa.array([f"c{i % 97}" for i in range(n)]).dictionary_encode(),
            "price": rng.gamma(2.0, 20.0, n).astype(np.float32),
            "clicks": pa.LargeListArray.from_arrays(
                pa.array(offsets), pa.array(rng.integers(1_700_000_000, 1_800_000_000, offsets[-1]))
            ),
        }
    )


TABLE = table(N)
EXPECTED = SPEC.transform(TABLE, keep=["row_id"], runtime=offload.Runtime(["cpu"]))


@pytest.fixture(scope="module")
def cluster():
    import ray.data
    from ray import cloudpickle

    # The test backends below travel to the actors by value (the workers need not import tests).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    ray.init(
        num_cpus=2,
        resources={"offload_fpga": 2},
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def dataset():
    rows = N // BLOCKS
    return ray.data.from_arrow([TABLE.slice(i, rows) for i in range(0, N, rows)])


def collected(ds) -> pa.Table:
    """Every output block, rows sorted by the kept row id."""
    return pa.concat_tables(ray.get(ds.to_arrow_refs())).sort_by("row_id")


# -- test backends (pickled by value into the actors) -----------------------------------------


class KillOnce(CpuBackend):
    """The CPU backend, except that the first process to run its second call dies (os._exit)
    in the middle of that call: ``marker`` is created once, so it happens once."""

    def __init__(self, marker: str) -> None:
        super().__init__(threads=1)
        self.marker = marker
        self.calls = 0

    def __reduce__(self):
        return (KillOnce, (self.marker,))

    def run(self, call, batch):
        self.calls += 1
        if self.calls == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return super().run(call, batch)


class Recorded(FpgaBackend):
    """The fpga backend on the simulated PYNQ-Z2 (reference engine), noting in ``log`` which
    process ran records on the device of ``slot``, and each failure with its cause."""

    def __init__(self, log: str, slot: int, faults: tuple[Fault, ...] = ()) -> None:
        super().__init__(
            device="sim", engine="reference", faults=list(faults), chunk_records=64, timeout_s=5.0
        )
        self.log, self.slot, self.initial_faults = log, slot, faults

    def __reduce__(self):
        return (Recorded, (self.log, self.slot, self.initial_faults))

    def note(self, what: str) -> None:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {self.slot} {offload.ray_data.device_slot()} {what}\n")

    def run(self, call, batch):
        try:
            res = super().run(call, batch)
        except BackendError as e:
            self.note(f"error {e.cause}")
            self.meet()
            raise
        self.note(f"ran {batch.n}")
        self.meet()
        return res

    def meet(self, deadline_s: float = 120.0) -> None:
        """On its first call, wait until every device noted a call: an actor that was ready
        first cannot run every batch before the other actor starts (the other blocks are
        queued for it meanwhile)."""
        if getattr(self, "met", False):
            return
        self.met = True
        end = time.monotonic() + deadline_s
        while len({line.split()[1] for line in open(self.log)}) < 2 and time.monotonic() < end:
            time.sleep(0.05)


def notes(log) -> list[tuple[int, int, int, str]]:
    out = []
    for line in log.read_text().splitlines():
        pid, slot, bound, what = line.split(" ", 3)
        out.append((int(pid), int(slot), int(bound), what))
    return out


# -- results --------------------------------------------------------------------------------


def test_cpu_actors_equal_transform(cluster):
    out = offload.ray_data.featurize(dataset(), SPEC, actors=2, keep=["row_id"], backends=["cpu"])
    assert collected(out).equals(EXPECTED)


def test_actor_killed_mid_batch_is_retried_without_loss_or_duplicates(cluster, tmp_path):
    marker = tmp_path / "killed"
    out = offload.ray_data.featurize(
        dataset(), SPEC, actors=1, keep=["row_id"], backends=[KillOnce(str(marker))]
    )
    got = collected(out)
    assert marker.exists()  # an actor died in the middle of a batch
    assert got.column("row_id").to_pylist() == list(range(N))  # no row lost, none twice
    assert got.equals(EXPECTED)


def test_bad_data_fails_the_dataset_with_the_spec_message(cluster):
    nulls = pa.table({"user_id": pa.array([1, 2, None, 4], pa.int64())})
    spec = offload.FeatureSpec([offload.Feature("user_id", "hash_bucket", num_buckets=97, dtype="int64")])
    out = offload.ray_data.featurize(ray.data.from_arrow(nulls), spec, backends=["cpu"])
    with pytest.raises(
        ray.exceptions.RayTaskError,
        match=re.escape("ValueError: feature 'user_id_hash_bucket': null at row 2 of column 'user_id'"),
    ):
        out.materialize()


@pytest.fixture(scope="module")
def fpga_run(cluster, tmp_path_factory):
    """Two actors on the two declared "offload_fpga" units, each device lost at its record 100."""
    log = tmp_path_factory.mktemp("fpga") / "notes"
    log.touch()
    lost = (Fault("disappear", at_record=100),)
    out = offload.ray_data.featurize(
        dataset(),
        SPEC,
        actors=2,
        keep=["row_id"],
        device_resource="offload_fpga",
        device_options=[{"backends": [Recorded(str(log), k, lost), "cpu"]} for k in range(2)],
    )
    return collected(out), notes(log)


def test_fpga_losing_its_device_falls_back_inside_the_actor(fpga_run):
    got, noted = fpga_run
    assert got.equals(EXPECTED)
    # each actor's device was lost in its first call (at record 100 of a 250-row batch); the
    # actor's Runtime recomputed the rest on the CPU
    assert {what for *_, what in noted} == {"error device_lost"}


def test_device_resource_binds_each_actor_to_its_own_device(fpga_run):
    _, noted = fpga_run
    # per actor process: (the slot whose device options it runs with, the slot it bound)
    bound = {pid: {(slot, b) for p, slot, b, _ in noted if p == pid} for pid, *_ in noted}
    assert sorted(tuple(v) for v in bound.values()) == [((0, 0),), ((1, 1),)]


# -- errors before anything runs --------------------------------------------------------------


def test_unknown_device_resource_is_an_immediate_error(cluster):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "device_resource 'no_such_fpga': no node of the Ray cluster has this resource (declare "
            "it per node: ray start --resources='{\"no_such_fpga\": N}', or "
            "ray.init(resources={'no_such_fpga': N})); the cluster's resources: CPU, memory, "
            "object_store_memory, offload_fpga"
        ),
    ):
        offload.ray_data.featurize(dataset(), SPEC, device_resource="no_such_fpga")


def test_more_actors_than_devices_is_an_immediate_error(cluster):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "device_resource 'offload_fpga': the Ray cluster has 2 unit(s) of it, and each of the "
            "3 actors needs one: use at most 2 actors"
        ),
    ):
        offload.ray_data.featurize(dataset(), SPEC, actors=3, num_cpus=0.5, device_resource="offload_fpga")


def test_more_cpus_than_the_cluster_has_is_an_immediate_error(cluster):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "3 actors of 1 CPUs need 3 CPUs; the Ray cluster has 2: use fewer actors or a smaller num_cpus"
        ),
    ):
        offload.ray_data.featurize(dataset(), SPEC, actors=3)


def test_actors_leaving_no_cpu_to_a_read_is_an_immediate_error(cluster, tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(TABLE, tmp_path / "t.parquet")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "2 actors of 1 CPUs would leave less than one of the Ray cluster's 2 CPUs to the tasks "
            "that make this dataset's blocks (a read or a transformation), which would then wait "
            "forever: use fewer actors or a smaller num_cpus, or pass a materialized dataset "
            "(ds.materialize())"
        ),
    ):
        offload.ray_data.featurize(ray.data.read_parquet(str(tmp_path)), SPEC, actors=2)


def test_spec_errors_are_raised_on_the_driver(cluster):
    with pytest.raises(ValueError, match=re.escape("feature 'user_id_hash_bucket': column 'user_id' is not")):
        offload.ray_data.featurize(ray.data.from_arrow(TABLE.drop_columns(["user_id"])), SPEC)
