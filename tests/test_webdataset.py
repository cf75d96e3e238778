"""WebDataset tar shards read as the reference reads them: ids, image samples, selections,
patterns, damaged shards, and a shard served over HTTP from a loopback server."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest
from PIL import Image
from skimage import data
from tar_shards import write_shard

from ilias.errors import DatasetError
from ilias.loader import (
    DecodeFailure,
    Selection,
    ShardReport,
    decode_image,
    expand_shards,
    read_selection,
    read_shard,
    sample_key,
)


def jpeg(array) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).convert("RGB").resize((64, 48)).save(out, format="JPEG")
    return out.getvalue()


PHOTOS = {"1001": data.astronaut(), "1002": data.coffee(), "1003": data.chelsea()}


@pytest.fixture
def shards(tmp_path) -> Path:
    folder = tmp_path / "yfcc100m"
    folder.mkdir()
    write_shard(folder / "00000.tar", [
        ("1001.jpg", jpeg(PHOTOS["1001"])),
        ("1001.json", json.dumps({"license": "cc"}).encode()),
        ("notes.txt", b"not a sample with an image"),
        ("1002.jpg", jpeg(PHOTOS["1002"])),
        ("sub/1003.JPG", jpeg(PHOTOS["1003"])),  # extensions compare lower-cased
        ("1004.png", jpeg(PHOTOS["1001"])),  # the reference keeps .jpg samples only
    ])  # fmt: skip
    write_shard(folder / "00001.tar", [("2001.jpg", jpeg(data.rocket()))])
    return folder


def test_ids_and_samples_are_the_references(shards):
    report = ShardReport("00000.tar")
    records = list(read_shard(str(shards / "00000.tar"), report))
    assert [r.id for r in records] == ["00000.tar/1001", "00000.tar/1002", "00000.tar/sub/1003"]
    assert records[0].payload == {
        "id": "00000.tar/1001",
        "role": "distractor",
        "shard": "00000.tar",
    }
    assert report.samples == 3 and report.error is None
    assert report.skipped == {
        "other member of an image sample (.json)": 1,
        "not an image sample (.txt)": 1,
        "not an image sample (.png)": 1,
    }
    picture = decode_image(records[1].id, records[1].source)
    assert not isinstance(picture, DecodeFailure) and picture.size == (64, 48)


def test_sample_keys_follow_webdataset():
    assert sample_key("a/b.c.jpg") == ("a/b", "c.jpg")
    assert sample_key("1001.JPG") == ("1001", "jpg")
    assert sample_key("README") == ("README", "")


def test_shard_specs_folder_brace_glob_and_url(shards):
    first, second = str(shards / "00000.tar"), str(shards / "00001.tar")
    assert expand_shards(shards) == [first, second]
    assert expand_shards(f"{shards}/{{00000..00001}}.tar") == [first, second]
    assert expand_shards(f"{shards}/0000*.tar") == [first, second]
    assert expand_shards("https://host/yfcc/{00000..00002}.tar") == [
        "https://host/yfcc/00000.tar", "https://host/yfcc/00001.tar", "https://host/yfcc/00002.tar"
    ]  # fmt: skip
    with pytest.raises(DatasetError) as missing:
        expand_shards(f"{shards}/{{00000..00003}}.tar")
    assert str(missing.value) == (
        f"{shards}/{{00000..00003}}.tar: 2 of 4 shards are missing ({shards}/00002.tar, "
        f"{shards}/00003.tar); download them or narrow the pattern"
    )


def test_a_truncated_shard_keeps_what_was_read_and_says_why(shards, tmp_path):
    whole = (shards / "00000.tar").read_bytes()
    with tarfile.open(shards / "00000.tar") as tar:
        inside = tar.getmember("1002.jpg").offset_data + 100  # cut inside the 2nd image
    cut = tmp_path / "00009.tar"
    cut.write_bytes(whole[:inside])
    report = ShardReport("00009.tar")
    records = list(read_shard(str(cut), report))
    assert [r.id for r in records] == ["00009.tar/1001"]
    assert report.error is not None and report.error.startswith("ReadError")
    assert report.skipped["sample cut by a damaged shard"] == 1


def test_selections_keep_listed_keys_as_the_reference(shards, tmp_path):
    plain = tmp_path / "mini.txt"
    plain.write_text("1002\n00000.tar/sub/1003\n\n")
    zipped = tmp_path / "mini.txt.gz"
    with gzip.open(zipped, "wt") as out:
        out.write("1002\nsub/1003\n")
    assert read_selection(plain) == Selection(
        frozenset({"1002"}), frozenset({"00000.tar/sub/1003"})
    )
    assert read_selection(zipped) == Selection(frozenset({"1002", "sub/1003"}), frozenset())
    for path in (plain, zipped):
        selection = read_selection(path)
        report = ShardReport("00000.tar")
        kept = [r.id for r in read_shard(str(shards / "00000.tar"), report, selection)]
        assert kept == ["00000.tar/1002", "00000.tar/sub/1003"] and report.not_selected == 1
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DatasetError, match="the selection is empty"):
        read_selection(tmp_path / "empty.txt")


def test_a_shard_over_http_from_a_loopback_server(shards):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/00000.tar"
        remote = [(r.id, r.source) for r in read_shard(url)]
        local = [(r.id, r.source) for r in read_shard(str(shards / "00000.tar"))]
        assert remote == local and len(remote) == 3
        report = ShardReport("gone")
        assert list(read_shard(url.replace("00000", "00007"), report)) == []
        assert report.error is not None and "FileNotFoundError" in report.error
    finally:
        server.shutdown()
        server.server_close()


def test_a_key_set_holds_a_large_selection_as_hashes():
    from ilias.loader.sources import KeySet

    listed = frozenset(f"{i:08x}" for i in range(0, 200_000, 2))
    keys = KeySet(listed)
    assert len(keys) == len(listed) and keys._hashes.nbytes == 8 * len(listed)
    assert all(k in keys for k in listed)
    assert not any(f"{i:08x}" in keys for i in range(1, 200_000, 2))
    assert 5 not in keys and "" not in keys
