"""``ilias delete`` and the Python API behind it, on both engines: by id, by a file of ids,
by a payload filter; the questions and refusals; and an Edge delete cut by a kill -9.

The engine-level contract (``Store.delete``) is in test_store.py; here the collections
are real Qdrant Edge folders and qdrant-client's in-process engine under a name
(``memory:NAME``, shared by every handle of this process, so the CLI sees it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ilias import cli
from ilias.cli import app
from ilias.errors import IliasError
from ilias.indexing import CollectionConfig, delete_points, open_store, plan_delete

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*local Qdrant.*:UserWarning", "ignore:Payload indexes have no effect.*:UserWarning"
)
runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def filled(spec: str, n: int = 60) -> list[str]:
    """``n`` points in collection ``c``: 3 instances, every third point a positive."""
    ids = [f"inst{i % 3}/P{i:03d}.jpg" for i in range(n)]
    x = np.random.default_rng(1).standard_normal((n, 16)).astype(np.float32)
    payloads = [{"instance": f"inst{i % 3}", "role": "positive" if i % 3 == 0 else "distractor"}
                for i in range(n)]  # fmt: skip
    with open_store(spec) as store:
        store.create_collection("c", CollectionConfig(dim=16, metadata={"encoder": "e"}))
        store.upsert("c", ids, x, payloads)
        store.finish_load("c")
    return ids


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """One message a line, so that it can be read back whole."""
    monkeypatch.setattr(cli.console, "width", 250)


@pytest.fixture(params=["edge", "memory"])
def spec(request, tmp_path) -> str:
    if request.param == "edge":
        return f"edge:{tmp_path / 'q'}"
    return f"memory:delete-{uuid.uuid4().hex}"


def stored(spec: str, ids: list[str]) -> set[str]:
    with open_store(spec) as store:
        return store.existing_ids("c", ids)


def test_delete_by_id_asks_then_removes_exactly_those(spec):
    ids = filled(spec)
    base = ["delete", "--store", spec, "-c", "c"]
    declined = runner.invoke(app, [*base, ids[0], ids[1]], input="n\n")
    assert isinstance(declined.exception, IliasError) and "nothing was deleted" in str(
        declined.exception
    )
    assert "delete 2 of the 60 points of c" in declined.output
    assert stored(spec, ids) == set(ids)
    done = runner.invoke(app, [*base, ids[0], ids[1]], input="y\n")
    assert done.exit_code == 0, done.output
    assert "deleted 2 points from c; 58 left" in done.output
    assert stored(spec, ids) == set(ids[2:])


def test_delete_from_a_file_skips_unknown_ids_and_says_so(spec, tmp_path):
    ids = filled(spec)
    listing = tmp_path / "takedown.txt"
    listing.write_text("# privacy requests\n" + "\n".join([*ids[10:20], "", "no/such.jpg"]) + "\n")
    done = runner.invoke(app, ["delete", "--store", spec, "-c", "c", "--from", str(listing), "-y"])
    assert done.exit_code == 0, done.output
    assert "1 ids are not in c (skipped): no/such.jpg" in done.output
    assert "deleted 10 points" in done.output
    assert stored(spec, ids) == set(ids) - set(ids[10:20])
    missing = runner.invoke(app, ["delete", "--store", spec, "-c", "c", "no/such.jpg", "-y"])
    assert isinstance(missing.exception, IliasError) and "none of the 1 ids" in str(
        missing.exception
    )


def test_delete_where_refuses_nothing_and_everything_without_all(spec):
    ids = filled(spec)
    base = ["delete", "--store", spec, "-c", "c", "-y"]
    nothing = runner.invoke(app, [*base, "--where", "instance=inst9"])
    assert isinstance(nothing.exception, IliasError)
    assert "matches no point" in str(nothing.exception)
    everything = runner.invoke(app, [*base, "--where", "role=positive|distractor"])
    assert isinstance(everything.exception, IliasError)
    assert "every point of 'c' (60); pass --all" in str(everything.exception)
    assert stored(spec, ids) == set(ids)
    done = runner.invoke(app, [*base, "--where", "instance=inst1", "--where", "role=distractor"])
    assert done.exit_code == 0, done.output
    assert "deleted 20 points from c; 40 left" in done.output
    assert stored(spec, ids) == {i for i in ids if not i.startswith("inst1/")}
    both = runner.invoke(app, [*base, ids[0], "--where", "instance=inst0"])
    assert isinstance(both.exception, IliasError) and "not both" in str(both.exception)
    emptied = runner.invoke(app, [*base, "--where", "role=positive|distractor", "--all"])
    assert emptied.exit_code == 0 and "deleted 40 points from c; 0 left" in emptied.output


def test_python_api_plans_and_deletes(spec):
    ids = filled(spec)
    with open_store(spec) as store:
        plan = plan_delete(store, "c", filter={"role": "positive"})
        assert (plan.matched, plan.total) == (20, 60)
        assert store.count("c") == 60  # a plan deletes nothing
        assert plan.apply(store) == 20
        with pytest.raises(IliasError, match="pass --all"):
            delete_points(store, "c", ids=ids)
        assert delete_points(store, "c", ids=ids, allow_all=True) == 40
        assert store.count("c") == 0


def test_an_edge_delete_acknowledged_before_a_kill_9_stays_done(tmp_path):
    """Qdrant Edge writes a delete to its WAL before it returns: a process killed right
    after (no close, no flush of ours) has still removed exactly those points."""
    spec = f"edge:{tmp_path / 'q'}"
    ids = filled(spec, n=300)
    script = textwrap.dedent(
        f"""
        import os, signal
        from ilias.indexing import open_store
        store = open_store({spec!r})
        ids = [f"inst{{i % 3}}/P{{i:03d}}.jpg" for i in range(300)]
        assert store.delete("c", ids=ids[:100]) == 100
        assert store.delete("c", filter={{"instance": "inst2"}}) == 67
        print("acknowledged", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGKILL and "acknowledged" in done.stdout, done.stderr
    expected = {i for i in ids[100:] if not i.startswith("inst2/")}
    assert stored(spec, ids) == expected
    with open_store(spec) as store:
        assert store.count("c") == len(expected) == 133


def test_delete_mistakes_are_one_line(tmp_path):
    spec = f"edge:{tmp_path / 'q'}"
    ids = filled(spec)
    base = ["delete", "--store", spec, "-c", "c", "-y"]
    cases = {
        (): "name the points: ids, --from FILE or --where",
        ("--from", str(tmp_path / "none.txt")): f"--from {tmp_path / 'none.txt'}: cannot read it",
        ("--where", "instance"): "instance",
        ("-c", "gone", "a.jpg"): "no collection 'gone'",
    }
    for args, message in cases.items():
        result = runner.invoke(app, [*base, *args])
        assert isinstance(result.exception, IliasError), (args, result.output)
        assert message in str(result.exception) and "\n" not in str(result.exception)
    assert stored(spec, ids) == set(ids)  # nothing was deleted
