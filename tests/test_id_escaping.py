"""Ids in a feature file's ASCII ``index``, escaped exactly as the ILIAS reference escapes them.

The expected text is computed here in the reference's order of operations, not with
ilias's code: Python's ``unicode_escape``, the text of the bytes literal, then ``\\u`` ->
``#U`` and ``\\x`` -> ``#U00``. Every code point is checked alone and inside a path.
"""

from __future__ import annotations

import h5py
import numpy as np
from hypothesis import given, settings, strategies as st

from ilias.indexing import read_features, write_features
from ilias.indexing.features import decode_id, encode_id


def reference_escape(dataset_id: str) -> str:
    literal = repr(dataset_id.encode("unicode_escape"))  # b'...' or b"..."
    return literal[2:-1].replace("\\\\u", "#U").replace("\\\\x", "#U00")


def test_every_code_point_is_escaped_as_the_reference_and_read_back():
    wrong, lost = [], []
    for code in range(0x110000):
        char = chr(code)
        for dataset_id in (char, f"inst/pos/a{char}b.jpg"):
            stored = encode_id(dataset_id)
            if stored != reference_escape(dataset_id):
                wrong.append((code, dataset_id))
            if decode_id(stored) != dataset_id:
                lost.append((code, dataset_id))
    assert not wrong, wrong[:5]
    assert not lost, lost[:5]


def test_the_escapes_that_ascii_needs():
    cases = {
        "a\tb": "a\\\\tb",
        "a\nb\rc": "a\\\\nb\\\\rc",
        "a\\b": "a\\\\\\\\b",  # one backslash is four
        "\x01\x1f\x7f": "#U0001#U001f#U007f",
        "café/東/\U0001f600": "caf#U00e9/#U6771/\\\\U0001f600",
        "it's": "it's",
        'it\'s "x"': 'it\\\'s "x"',  # both quote marks: the single one is escaped
        "a\\u": "a\\\\#U",  # the reference's replacement also matches after a backslash
        "a\\x1": "a\\\\#U001",
        "plain/id.jpg": "plain/id.jpg",
    }
    for dataset_id, stored in cases.items():
        assert reference_escape(dataset_id) == stored  # the expectation itself
        assert encode_id(dataset_id) == stored
        assert decode_id(stored) == dataset_id
    # Text the reference never writes as an escape reads as itself.
    assert decode_id("#U0041 #U0009 \\\\a") == "#U0041 #U0009 \\\\a"


# Ids outside the reference's own collisions: a literal "#U" + hex reads as the character
# it spells, and a backslash + "u00" as a backslash + "x".
ids = st.text(min_size=1, max_size=30).filter(lambda s: "#U" not in s and "\\u00" not in s)


@settings(max_examples=400, deadline=None)
@given(ids)
def test_any_id_round_trips_through_the_reference_s_escaping(dataset_id):
    stored = encode_id(dataset_id)
    assert stored == reference_escape(dataset_id)
    assert stored.isascii()
    assert decode_id(stored) == dataset_id


def test_hdf5_files_keep_control_characters_and_backslashes(tmp_path):
    ids = ["inst/pos/tab\there.jpg", "inst/pos/back\\slash.jpg", "00000.tar/\x01key", "a'\"b"]
    path = write_features(tmp_path / "f.hdf5", ids, np.eye(4, dtype=np.float32))
    with h5py.File(path) as raw:
        assert raw["index"].asstr()[:].tolist() == [reference_escape(i) for i in ids]
    assert read_features(path).ids == ids
