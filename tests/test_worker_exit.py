"""A load on local Dask workers ends quietly, on the command line and from Python.

The worker processes' exit is made slow on purpose (a ``sitecustomize`` on their path
registers an 8 s ``atexit`` sleep in every spawned process), as a busy machine makes the
teardown of torch and timm take over the 4 s the nanny waits: without
``ilias.indexing.worker_exit`` the nanny then kills them with "Worker process still alive
after 4.0 seconds, killing". Real commands in real subprocesses, real model, real store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real worker processes through the real model

REPO = Path(__file__).resolve().parent.parent
NOISE = ("still alive", "CommClosedError", "Traceback")


@pytest.fixture
def slow_exit_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a command whose spawned worker processes take 8 s to exit."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import atexit, sys, time\n"
        "if '--multiprocessing-fork' in sys.argv:  # a spawned worker, not the command\n"
        "    atexit.register(time.sleep, 8)\n"
    )
    env = {**os.environ, "ILIAS_HOME": str(tmp_path / "home")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    return env


def _quiet(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in NOISE:
        assert noise not in done.stderr, done.stderr[-3000:]


def test_a_local_load_ends_without_killing_its_workers(tiny_ilias, tmp_path, slow_exit_env):
    argv = [sys.executable, "-m", "ilias", "load", str(tiny_ilias / "core")]
    argv += ["--store", f"edge:{tmp_path / 'q'}", "-c", "t", "--local", "--workers", "1"]
    done = subprocess.run(
        [*argv, "--resolution", "224"],
        env=slow_exit_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    _quiet(done)
    assert "t: 9 loaded" in " ".join(done.stdout.split())


def test_the_readme_python_api_shape_exits_without_dask_noise(tiny_ilias, tmp_path, slow_exit_env):
    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from ilias.indexing import DEFAULT_ENCODER, ExtractionOptions, load_collection
            from ilias.indexing import open_store
            from ilias.loader import read_ilias
            from ilias.query import Retriever


            def main() -> None:
                bench = read_ilias({str(tiny_ilias / "core")!r})
                with open_store({f"edge:{tmp_path / 'q'}"!r}) as store:
                    options = ExtractionOptions(DEFAULT_ENCODER, resolution=224, n_workers=1)
                    report = load_collection(bench.database, store, "ilias", options)
                    hits = Retriever(store, "ilias").search_image(
                        str(bench.image_queries[0].source), k=3
                    )
                print(report.loaded, len(hits))


            if __name__ == "__main__":
                main()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        env=slow_exit_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    _quiet(done)
    assert done.stdout.split() == ["9", "3"]
