"""The --where filter language, as a library function: exact filters out, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ilias.errors import IliasError
from ilias.query import parse_where
from ilias.types import Range


def test_no_clauses_is_no_filter() -> None:
    assert parse_where(None) is None
    assert parse_where([]) is None


def test_equality_any_of_and_ranges() -> None:
    assert parse_where(["role=distractor", "instance=a|b", "scale>=0.1", "scale<=0.5"]) == {
        "role": "distractor",
        "instance": ["a", "b"],
        "scale": Range(gte=0.1, lte=0.5),
    }


def test_strict_bounds_on_one_key_combine_into_one_range() -> None:
    assert parse_where(["scale>0.1", "scale<0.5"]) == {"scale": Range(gt=0.1, lt=0.5)}
    assert parse_where(["scale>=0.1", "scale<0.5"]) == {"scale": Range(gte=0.1, lt=0.5)}


def test_two_bounds_of_one_kind_keep_the_tighter() -> None:
    assert parse_where(["scale>=0.1", "scale>=0.3", "scale<=0.9", "scale<=0.5"]) == {
        "scale": Range(gte=0.3, lte=0.5)
    }


def test_literals_become_typed_values() -> None:
    assert parse_where(["clutter=3"]) == {"clutter": 3}
    assert parse_where(["clutter=-3"]) == {"clutter": -3}
    assert parse_where(["scale=0.5"]) == {"scale": 0.5}
    assert parse_where(["scale=1e-3"]) == {"scale": 0.001}
    assert parse_where(["scale=.25"]) == {"scale": 0.25}
    assert parse_where(["flag=true", "other=FALSE"]) == {"flag": True, "other": False}
    assert parse_where(["name=0.5x"]) == {"name": "0.5x"}
    assert parse_where(["id=cat/pos/P000.jpg"]) == {"id": "cat/pos/P000.jpg"}
    assert parse_where(["clutter=1|2.5|x"]) == {"clutter": [1, 2.5, "x"]}
    for value in (parse_where(["scale=0.5"])["scale"], parse_where(["clutter=3"])["clutter"]):
        assert not isinstance(value, str)
    assert type(parse_where(["flag=true"])["flag"]) is bool


def test_spaces_around_key_and_value_are_ignored() -> None:
    assert parse_where([" role = positive ", "scale >= 0.2"]) == {
        "role": "positive",
        "scale": Range(gte=0.2),
    }


def test_same_key_twice_is_an_and() -> None:
    assert parse_where(["role=positive", "role=positive"]) == {"role": "positive"}
    assert parse_where(["role=a|b|c", "role=c|b"]) == {"role": ["b", "c"]}
    assert parse_where(["role=a|b", "role=b"]) == {"role": "b"}
    assert parse_where(["role=a|a"]) == {"role": "a"}


@pytest.mark.parametrize(
    ("clauses", "message"),
    [
        (["role=positive", "role=query"], "--where: no point matches every clause on 'role'"),
        (["role=a|b", "role=c"], "--where: no point matches every clause on 'role'"),
        (["clutter=1", "clutter=true"], "--where: no point matches every clause on 'clutter'"),
        (["=x"], "--where '=x': the key is empty"),
        (["role="], "--where 'role=': the value is empty"),
        (["scale>="], "--where 'scale>=': the value is empty"),
        (["role=a|"], "--where 'role=a|': an empty alternative in a|b"),
        (["role"], "cannot read --where 'role'"),
        (["scale>=big"], "--where 'scale>=big': 'big' is not a number"),
        (["scale>=nan"], "--where 'scale>=nan': 'nan' is not a number"),
        (["a=b>=c"], "--where 'a=b>=c': one operator per clause"),
        (["scale=0.5", "scale>0.1"], "--where: 'scale' has both a value (=) and a bound"),
        (["scale>0.1", "scale=0.5"], "--where: 'scale' has both a value (=) and a bound"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_clause(clauses, message) -> None:
    with pytest.raises(IliasError) as raised:
        parse_where(clauses)
    text = str(raised.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_importing_the_filter_language_stays_light() -> None:
    probe = (
        "import ilias.query.where, sys; "
        "print(sorted(m for m in ('torch', 'dask', 'qdrant_edge', 'qdrant_client', 'PIL') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
