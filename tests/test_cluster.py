"""The cross-validation as tasks: one fold per file, merged from any set of folds, and run on a Dask scheduler with
two worker processes on 127.0.0.1, one of which is killed mid-task: the merged summary equals a serial run's."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

from malaria_lib.synth import make_synthetic_cells

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "accuracy.py"


def _load():
    """benchmarks/accuracy.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
TIMINGS = {"train_seconds", "predict_ms_per_cell"}  # the only figures a run on other processes may change


def _common(data: Path) -> list[str]:
    return ["--data-dir", str(data), "--models", "malarianet", "--folds", "2", "--profile", "smoke", "--epochs", "1",
            "--bootstrap", "20"]


def _without_timings(results: dict) -> dict:
    """The results with wall-clock figures and the machine left out: what must agree wherever the folds ran."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMINGS and k != "machine"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(results)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """A serial 2-fold cross-validation on synthetic cells: the reference the other runs must reproduce."""
    tmp = tmp_path_factory.mktemp("serial")
    make_synthetic_cells(tmp / "d", n=80, seed=3, n_patients=8)
    results = _load().main(_common(tmp / "d") + ["--work", str(tmp / "w"), "--out", str(tmp / "acc.json"),
                                                 "--oof", str(tmp / "oof.json")])
    return tmp, results


def test_fold_files_merge_in_any_order_to_the_serial_summary(serial, tmp_path):
    tmp, results = serial
    bench = _load()
    kept = sorted((tmp / "w" / "folds").glob("*.json"))
    assert [p.name for p in kept] == ["malarianet_fold0.json", "malarianet_fold1.json"]
    out = tmp_path / "merged.json"
    merged = bench.main(_common(tmp / "d") + ["--merge", *map(str, reversed(kept)), "--out", str(out),
                                              "--oof", str(tmp_path / "oof.json")])
    assert merged == json.loads(json.dumps(results))  # timings too: the same fold records
    assert json.loads((tmp_path / "oof.json").read_text()) == json.loads((tmp / "oof.json").read_text())
    with pytest.raises(SystemExit, match="lacks fold"):
        bench.main(_common(tmp / "d") + ["--merge", str(kept[0]), "--out", str(out)])
    with pytest.raises(SystemExit, match="given twice"):
        bench.main(_common(tmp / "d") + ["--merge", str(kept[0]), str(kept[0]), str(kept[1]), "--out", str(out)])
    other = json.loads(kept[1].read_text())
    other["settings"]["seed"] = 7
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(_common(tmp / "d") + ["--merge", str(kept[0]), str(tmp_path / "other.json"), "--out", str(out)])


def test_one_fold_alone_is_the_serial_runs_fold(serial, tmp_path):
    tmp, results = serial
    out = tmp_path / "fold1.json"
    bench = _load()
    bench.main(_common(tmp / "d") + ["--fold", "1", "--work", str(tmp_path / "w"), "--out", str(out)])
    record = json.loads(out.read_text())[0]
    assert record["fold"] == 1 and record["model"] == "malarianet"
    expected = results["models"]["malarianet"]["per_fold"][1]
    assert _without_timings(record["variants"]["plain"]["per_fold"]) == _without_timings(expected)
    with pytest.raises(SystemExit):
        bench.main(_common(tmp / "d") + ["--fold", "2", "--out", str(out)])  # 2 folds: 0 and 1


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def test_two_workers_on_localhost_survive_a_killed_worker_and_merge_to_the_serial_summary(serial, tmp_path):
    tmp, results = serial
    scheduler_file = tmp_path / "scheduler.json"
    processes = [_start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                         "--scheduler-file", str(scheduler_file)], tmp_path / "scheduler.log")]
    try:
        for _ in range(300):
            if scheduler_file.is_file() and scheduler_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        workers = {}
        for name in ("w0", "w1"):
            workers[name] = _start(["distributed.cli.dask_worker", address, "--name", name, "--nthreads", "1",
                                    "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], tmp_path / f"{name}.log")
        processes += workers.values()
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            out = tmp_path / "acc.json"
            run = subprocess.Popen([sys.executable, str(SCRIPT), *_common(tmp / "d"), "--work", str(tmp_path / "w"),
                                    "--out", str(out), "--oof", str(tmp_path / "oof.json"), "--scheduler", address],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # as soon as both folds run, one on each worker, kill one worker: its fold must move to the other
            killed = None
            deadline = time.monotonic() + 300
            while killed is None and time.monotonic() < deadline and run.poll() is None:
                busy = {client.scheduler_info()["workers"][addr]["name"]: keys
                        for addr, keys in client.processing().items() if keys}
                if len(busy) == 2:
                    time.sleep(3)  # inside the training, not at its start
                    workers["w0"].send_signal(signal.SIGKILL)
                    killed = "w0"
                time.sleep(0.2)
            output, _ = run.communicate(timeout=600)
        assert killed == "w0", "the two folds never ran on the two workers at once:\n" + output
        assert run.returncode == 0, output
        distributed = json.loads(out.read_text())
        assert _without_timings(distributed) == _without_timings(json.loads(json.dumps(results)))
        assert json.loads((tmp_path / "oof.json").read_text()) == json.loads((tmp / "oof.json").read_text())

        # finished folds are kept: with --reuse nothing is sent to the cluster again
        stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "w" / "folds").glob("*.json")}
        assert len(stamps) == 2
        again = subprocess.run([sys.executable, str(SCRIPT), *_common(tmp / "d"), "--work", str(tmp_path / "w"),
                                "--out", str(tmp_path / "again.json"), "--scheduler", address, "--reuse"],
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert "task(s) on" not in again.stderr
        assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
        assert json.loads((tmp_path / "again.json").read_text()) == distributed
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_a_scheduler_that_does_not_answer_is_one_sentence(serial, tmp_path):
    tmp, _ = serial
    result = subprocess.run([sys.executable, str(SCRIPT), *_common(tmp / "d"), "--work", str(tmp_path / "w"),
                             "--out", str(tmp_path / "acc.json"), "--scheduler", "tcp://127.0.0.1:9",
                             "--connect-timeout", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("No Dask scheduler answers at tcp://127.0.0.1:9")
