"""User typos get one line and exit 1, never a traceback: the option parsers under
Hypothesis, and each option class through the real CLI."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from ilias.cli import app
from ilias.errors import IliasError
from ilias.indexing import open_store
from ilias.query import parse_bbox, parse_where
from ilias.types import Range, SearchParams

pytestmark = pytest.mark.faults

runner = CliRunner()
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
CLAUSE = st.one_of(
    TEXT, st.from_regex(r"[a-z]{0,4}(=|>=|<=|>|<)[-0-9a-z.|\[\]]{0,8}", fullmatch=True)
)


@settings(max_examples=400, deadline=None)
@given(st.lists(CLAUSE, max_size=4))
def test_where_clauses_parse_or_are_refused_in_one_line(clauses):
    try:
        parsed = parse_where(clauses)
    except IliasError as error:
        assert "\n" not in str(error) and str(error)
        return
    for key, value in (parsed or {}).items():
        assert key and key == key.strip()
        assert isinstance(value, Range | list | str | int | float | bool)


@settings(max_examples=400, deadline=None)
@given(st.one_of(TEXT, st.from_regex(r"-?[0-9]{1,4}(,-?[0-9]{1,4}){0,4}", fullmatch=True)))
def test_boxes_parse_or_are_refused_in_one_line(text):
    try:
        box = parse_bbox(text)
    except IliasError as error:
        assert "\n" not in str(error) and "--bbox" in str(error)
        return
    assert box is not None and len(box) == 4
    assert box[0] >= 0 and box[1] >= 0 and box[2] > 0 and box[3] > 0


@settings(max_examples=200, deadline=None)
@given(st.one_of(TEXT, st.from_regex(r"(edge|memory|http|grpc|s3):[a-z/?=&0-9]{0,12}")))
def test_store_specs_open_or_are_refused_in_one_line(spec):
    try:
        store = open_store(spec)
    except IliasError as error:
        assert "\n" not in str(error)
        return
    store.close()


@settings(max_examples=200, deadline=None)
@given(st.integers(-5, 3), st.floats(allow_nan=True))
def test_search_params_are_valid_or_refused(ef, oversampling):
    try:
        params = SearchParams(hnsw_ef=ef, oversampling=oversampling)
    except IliasError as error:
        assert "hnsw_ef" in str(error) or "oversampling" in str(error)
        return
    assert params.hnsw_ef >= 1 and params.oversampling >= 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-k", "0"], "k = 0: ask for at least one result (-k 10)"),
        (["-k", "-3"], "k = -3: ask for at least one result (-k 10)"),
        (["--hnsw-ef", "-5"], "hnsw_ef = -5: give a positive number (--hnsw-ef)"),
        (
            ["--oversampling", "0.5"],
            "oversampling = 0.5: give a factor of at least 1 (--oversampling)",
        ),
        (["--bbox", "1,2,3"], "--bbox '1,2,3': give four integers, x,y,w,h"),
        (["--bbox", "a,b,c,d"], "--bbox 'a,b,c,d': give four integers, x,y,w,h"),
        (["--bbox", "0,0,-4,5"], "--bbox '0,0,-4,5': x and y must be >= 0, w and h > 0"),
        (["--where", "=value"], None),
        (["--where", "role=[positive]", "--where", "role=query"], None),
    ],
)
def test_search_option_typos_are_one_line(tmp_path, args, message):
    from ilias.indexing import CollectionConfig

    spec = f"edge:{tmp_path}"
    with open_store(spec) as store:
        store.create_collection("c", CollectionConfig(dim=4, metadata={}))
        store.upsert("c", ["a.jpg"], [[1.0, 0.0, 0.0, 0.0]], [{}])
    image = tmp_path / "q.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    result = runner.invoke(
        app, ["search", "--store", spec, "-c", "c", "--image", str(image), *args]
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, IliasError) and "\n" not in str(result.exception)
    if message is not None:
        assert str(result.exception) == message


def test_an_edge_store_that_is_a_file_is_refused(tmp_path):
    a_file = tmp_path / "qdrant"
    a_file.write_text("not a folder")
    result = runner.invoke(app, ["collections", "--store", f"edge:{a_file}"])
    assert result.exit_code == 1
    assert str(result.exception) == (
        f"edge:{a_file}: {a_file} is a file; an Edge store is a folder (give a folder path, "
        "created if missing)"
    )


HOLD = """
import sys, time
from ilias.indexing import CollectionConfig, EdgeStore
store = EdgeStore(sys.argv[1])
store.create_collection("busy", CollectionConfig(dim=4, metadata={"encoder": "timm:x"}))
store.upsert("busy", ["a.jpg"], [[1.0, 0.0, 0.0, 0.0]], [{}])
print("holding", flush=True)
time.sleep(60)
"""


def test_inspection_works_while_another_process_holds_a_collection(tmp_path, monkeypatch):
    """A running load owns its Edge shard: `ilias collections` still lists the store (the
    held collection from its config), and a second writer gets the clear refusal."""
    import subprocess
    import sys

    from ilias import cli
    from ilias.indexing import CollectionConfig, EdgeStore

    monkeypatch.setattr(cli.console, "width", 250)  # one row per line
    with EdgeStore(tmp_path) as store:
        store.create_collection("free", CollectionConfig(dim=4, metadata={"encoder": "timm:y"}))
        store.upsert("free", ["b.jpg"], [[0.0, 1.0, 0.0, 0.0]], [{}])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        listed = runner.invoke(app, ["collections", "--store", f"edge:{tmp_path}"])
        assert listed.exit_code == 0, listed.output
        rows = {line.split("│")[1].strip(): line for line in listed.output.splitlines()
                if line.count("│") > 3 and ("busy" in line or "free" in line)}  # fmt: skip
        assert "in use by another process" in rows["busy"] and "timm:x" in rows["busy"]
        assert "in use" not in rows["free"] and " 1 " in rows["free"]
        with (
            EdgeStore(tmp_path) as second,
            pytest.raises(IliasError, match="open in another process"),
        ):
            second.upsert("busy", ["c.jpg"], [[0.0, 0.0, 1.0, 0.0]], [{}])
    finally:
        holder.kill()
        holder.wait()
