"""Experiments as tasks on a Dask cluster: on this machine by default, across machines given a scheduler's address.

Why Dask distributed, and why tasks: one network on 27,558 small cells never needs more than one GPU, and Keras
3.15's `fit` cannot train across machines (`MultiWorkerMirroredStrategy` fails on `PerReplica` values,
keras-team/keras#20585), so what spreads is the experiments: folds x seeds x variants, each a whole training run.
Dask installs from PyPI in seconds with no service to keep up, runs its scheduler and workers as plain processes
(`dask scheduler`, `dask worker ADDRESS`), retries a task that raised (`retries=`) and moves the task of a worker
that died to another one. Ray would do the same at ten times the install size.

A task gets the script's options and returns its result as JSON-ready data; the caller keeps each result as it
arrives, so a fold that fails after its retries loses only itself.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator


def run_tasks(task: Callable, args, todo: list[tuple], *, address: str | None = None, workers: int = 1,
              retries: int = 2, connect_timeout: float = 30) -> Iterator[dict]:
    """Run task(args, *item) for every item of TODO on a Dask cluster; yield each result as it finishes.

    ADDRESS: an existing scheduler (`tcp://HOST:8786`); without it a local cluster of WORKERS processes, one
    thread each (a training run uses every core of its machine by itself). After all tasks have ended, any that
    failed are named in one SystemExit, after the others' results were yielded (and kept by the caller).
    """
    try:
        import cloudpickle
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SystemExit("Running the folds on a cluster needs Dask: pip install -e '.[cluster]' "
                         "(or run without --scheduler and --workers, one fold after another).") from None
    module = sys.modules.get(task.__module__)
    if module is not None and module.__name__ != "__main__":  # workers need not have this script on their path
        cloudpickle.register_pickle_by_value(module)
    cluster = None
    try:
        if address:
            try:
                client = Client(address, timeout=f"{connect_timeout}s")
            except OSError as exc:
                raise SystemExit(f"No Dask scheduler answers at {address} ({exc}); start one with `dask scheduler` "
                                 "and its workers with `dask worker ADDRESS`, or leave out --scheduler.") from None
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        with client:
            names = {client.submit(task, args, *item, key=f"{_key(item)}-{uuid.uuid4().hex[:8]}", retries=retries): item
                     for item in todo}
            print(f"{len(todo)} task(s) on {client.scheduler.address} "
                  f"({len(client.scheduler_info()['workers'])} worker(s) now)", file=sys.stderr)
            failed = []
            for future in as_completed(names):
                try:
                    yield future.result()
                except Exception as exc:  # the task's own error, after its retries; the others go on
                    failed.append(f"{_key(names[future])}: {type(exc).__name__}: {exc}")
            if failed:
                raise SystemExit(f"{len(failed)} of {len(todo)} task(s) failed after {retries} retries ("
                                 + "; ".join(failed) + "); the finished ones are kept: rerun with --reuse.")
    finally:
        if cluster is not None:
            cluster.close()


def _key(item: tuple) -> str:
    """A readable task name for Dask's logs (the caller adds a token: every submission is new)."""
    return "-".join(str(part) for part in ("malaria", *item))
