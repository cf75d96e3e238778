"""``ilias ... --help`` as a user reads it: the rendered rich help of real commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ilias.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def rendered(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def option_row(text: str, option: str) -> str:
    """The first line of the options table that starts with ``option``."""
    for line in text.splitlines():
        cells = line.strip("│ ").split()
        if cells and cells[0] == option:
            return line
    raise AssertionError(f"{option} not in:\n{text}")


@pytest.mark.parametrize(
    ("command", "flag"),
    [(("search",), "--json"), (("search",), "--exact"), (("load",), "--versioned"),
     (("eval", "run"), "--overwrite"), (("delete",), "--yes"), ((), "--install-completion")],
)  # fmt: skip
def test_flags_show_no_value_type(command: tuple[str, ...], flag: str) -> None:
    row = option_row(rendered(*command), flag)
    assert "<bool>" not in row
    assert not re.search(rf"{flag}\s+<", row), row  # no value type column


def test_repeatable_options_and_arguments_show_their_element_type() -> None:
    search = rendered("search")
    assert "<str>" in option_row(search, "--where")
    assert "<str>" in option_row(search, "--rerank")
    delete = rendered("delete")
    assert "list[" not in search + delete
    assert re.search(r"ids\.\.\.\s+<str>", delete)
    assert "--hnsw-ef" in search and "<int>" in option_row(search, "--hnsw-ef")


def test_positionals_read_as_names_in_the_usage_line() -> None:
    assert re.search(r"Usage: \S+ eval run \[OPTIONS\] CONFIG\s", rendered("eval", "run"))
    assert re.search(r"Usage: \S+ delete \[OPTIONS\] \[IDS\]\.\.\.\s", rendered("delete"))
    assert re.search(r"eval compare \[OPTIONS\] RUN_A RUN_B\s", rendered("eval", "compare"))


def test_help_texts_keep_their_brackets() -> None:
    run = rendered("eval", "run")
    assert "Override [extraction] scheduler" in run
    assert "override the file's [extraction] device / precision" in run
    assert "Load into <collection>-v<N>" in " ".join(rendered("load").split())


def test_eval_help_shows_the_default_commands_options() -> None:
    text = rendered("eval")
    assert "runs `benchmark`" in text
    for subcommand in ("run", "compare", "score", "benchmark"):
        assert re.search(rf"│ {subcommand}\s", text), subcommand
    assert re.search(r"Usage: \S+ eval \[OPTIONS\] \[DATASET\]\s", text)
    for option in ("--output", "--approximate", "--queries", "--select"):
        option_row(text, option)


def test_a_multi_line_command_description_is_one_paragraph_in_the_list() -> None:
    text = rendered()
    lines = text.splitlines()
    at = next(n for n, line in enumerate(lines) if "│ mine " in line)
    words = " ".join(" ".join(lines[at : at + 2]).replace("│", " ").split())
    assert "and write the top N as a selection list" in words
    assert lines[at].rstrip("│ ").endswith("the top N as a")  # the line is filled, not cut


def test_help_imports_no_numerical_or_engine_library() -> None:
    """``ilias --help`` answers in a fraction of a second: it loads the CLI's own light
    modules only (numpy, pydantic, torch, dask, Qdrant come when a command runs)."""
    probe = (
        "import sys\nfrom ilias.cli import main\nsys.argv = ['ilias', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('numpy', 'pydantic', 'torch', 'dask', 'distributed', 'qdrant_edge', "
        "'qdrant_client', 'timm', 'rich.progress', 'rich.markdown', 'rich.traceback', "
        "'pygments', 'markdown_it')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)"
    )
    done = _probe(probe)
    assert "Usage:" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr


def test_the_rich_classes_help_defers_are_the_real_ones_when_used() -> None:
    """typer.rich_utils got stand-ins for rich's Markdown and Traceback (not imported for
    help): used, they are rich's own, and the modules import as they are."""
    probe = (
        "import sys\nimport ilias.cli\nfrom typer import rich_utils\n"
        "assert 'rich.markdown' not in sys.modules\n"
        "shown = rich_utils.Markdown('# Title')\n"
        "import rich.markdown, rich.traceback\n"
        "assert type(shown) is rich.markdown.Markdown, type(shown)\n"
        "assert rich_utils.Traceback.from_exception is not None\n"
        "print(rich.markdown.Markdown.__module__, rich.traceback.Traceback.__name__)\n"
    )
    done = _probe(probe)
    assert done.stdout.split() == ["rich.markdown", "Traceback"]


def _probe(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter importing this checkout; it must exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done
