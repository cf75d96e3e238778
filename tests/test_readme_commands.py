"""Every ``ilias ...`` line in README.md and docs/*.md runs as written on the demo.

The fenced bash lines are extracted (backslash continuations joined, comments dropped), the
demo's store, collection and a query image are put in place of the names the docs use, and
each line runs as a real process against a small demo built once. A line that needs data the
reader must bring is marked in the docs themselves, so a reader sees the same rule the test
applies: a path under ``/data/`` (the ILIAS data you download), or a ``needs:`` note in the
line's comment (``# needs: a vision-language collection``). Those are skipped; any other
line that fails (non-zero exit, or a traceback in its output) fails the test, so the docs
cannot drift from the code.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
TIMEOUT_S = 240


@dataclass(frozen=True)
class Line:
    source: str  # file:line, for the failure message
    command: str  # without its comment
    comment: str

    @property
    def needs_reader_data(self) -> bool:
        """Marked as needing what the reader brings: ``/data/...`` or a ``needs:`` note."""
        return "/data/" in self.command or "needs:" in self.comment


def _split_comment(line: str) -> tuple[str, str]:
    """The command and its trailing ``# comment`` (a ``#`` inside quotes is not one)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), ""


def doc_lines() -> list[Line]:
    lines = []
    for path in DOCS:
        text = path.read_text()
        for fence in FENCE.finditer(text):
            first = text.count("\n", 0, fence.start(1)) + 1
            body = fence.group(1).split("\n")
            index = 0
            while index < len(body):
                start, joined = index, body[index]
                while joined.endswith("\\") and index + 1 < len(body):
                    index += 1
                    joined = joined[:-1] + " " + body[index].strip()
                index += 1
                command, comment = _split_comment(joined.strip())
                if command.startswith("ilias "):
                    source = f"{path.relative_to(ROOT)}:{first + start}"
                    lines.append(Line(source, command, comment))
    return lines


@dataclass(frozen=True)
class Demo:
    home: Path
    store: str
    collection: str
    query: Path


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Demo:
    """A small ``ilias demo`` (3 instances, 10 distractors, in-process scheduler) in a
    temporary ILIAS_HOME: the same command the README starts with, sized to run in seconds."""
    home = tmp_path_factory.mktemp("readme-home")
    env = {**os.environ, "ILIAS_HOME": str(home)}
    args = ["demo", "--instances", "3", "--positives", "2", "--distractors", "10"]
    done = subprocess.run(
        [sys.executable, "-m", "ilias", *args, "--scheduler", "sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stderr
    qdrant = home / "demo" / "qdrant"
    (collection,) = [p.name for p in qdrant.iterdir() if p.name.startswith("ilias-demo-")]
    query = next((home / "demo" / "data" / "core").glob("*/query/Q000.jpg"))
    return Demo(home, f"edge:{qdrant}", collection, query)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_demo(command: str, demo: Demo, workdir: Path) -> list[str]:
    """The doc's command with the demo's store, collection and query image in place of the
    names the docs use; relative outputs land in ``workdir``."""
    words = shlex.split(command.rstrip("&").strip())[1:]
    words = [w for w in words if not (w.startswith("[") and w.endswith("]"))]  # [--optional]
    out = []
    previous = ""
    for word in words:
        if previous in ("-c", "--collection"):
            word = demo.collection
        elif previous == "--store":
            word = demo.store
        elif previous == "--image":
            word = str(demo.query)
        elif word.startswith("examples/"):
            word = str(ROOT / word)
        elif word.startswith("/tmp/"):
            word = str(workdir / word.removeprefix("/tmp/"))
        out.append(word)
        previous = word
    return [sys.executable, "-m", "ilias", *out]


def _serve(argv: list[str], env: dict[str, str], workdir: Path) -> str:
    """Start ``ilias serve``, wait for /health to answer, stop it; returns its output if it
    never answered."""
    port = _free_port()
    if "--port" in argv:
        argv[argv.index("--port") + 1] = str(port)
    else:
        argv += ["--port", str(port)]
    log = workdir / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(argv, env=env, cwd=workdir, stdout=sink, stderr=sink)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                        return ""
                except OSError:
                    time.sleep(0.5)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return f"never answered /health (exit {server.returncode}):\n{log.read_text()[-2000:]}"


def test_extraction_reads_the_docs() -> None:
    """The extraction sees lines from every document, joins continuations, drops comments."""
    lines = doc_lines()
    assert {line.source.split(":")[0] for line in lines} == {
        str(path.relative_to(ROOT)) for path in DOCS
    }
    assert not any("\\" in line.command or " # " in line.command for line in lines)
    assert any(line.needs_reader_data for line in lines)
    assert _split_comment('ilias search --text "a #1 hit"  # note') == (
        'ilias search --text "a #1 hit"',
        "note",
    )


def _demo_env(demo: Demo) -> dict[str, str]:
    env = {
        **os.environ,
        "ILIAS_HOME": str(demo.home),
        "ILIAS_STORE": demo.store,
        "ILIAS_COLLECTION": demo.collection,
        "COLUMNS": "200",
    }
    env.pop("ILIAS_CONFIG", None)
    return env


def run_on_demo(argv: list[str], env: dict[str, str], workdir: Path) -> str:
    """Run one doc command; what went wrong ('' when it exited 0 without a traceback)."""
    if argv[3] == "serve":
        return _serve(argv, env, workdir)
    try:
        done = subprocess.run(
            argv,
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            input="n\n",
        )
    except subprocess.TimeoutExpired:
        return f"still running after {TIMEOUT_S} s"
    output = done.stdout + done.stderr
    if done.returncode != 0 or "Traceback" in output:
        return f"exit {done.returncode}:\n{output[-1500:]}"
    return ""


def test_a_wrong_or_unmarked_line_fails(demo: Demo, tmp_path: Path) -> None:
    """The check is not vacuous: a misspelt option fails, and a line that needs the reader's
    photos but carries no mark is run (and fails) rather than skipped."""
    misspelt = Line("x:1", "ilias eval --aproximate", "")
    unmarked = Line("x:2", "ilias load ~/photos -c photos", "load your photos")
    assert not misspelt.needs_reader_data and not unmarked.needs_reader_data
    env = _demo_env(demo)
    for line in (misspelt, unmarked):
        assert run_on_demo(on_demo(line.command, demo, tmp_path), env, tmp_path).startswith("exit ")
    assert Line("x:3", unmarked.command, "needs: your photos").needs_reader_data


def test_every_doc_command_runs_on_the_demo(demo: Demo, tmp_path: Path) -> None:
    env = _demo_env(demo)
    ran, skipped, failures = [], [], []
    for number, line in enumerate(doc_lines()):
        if line.needs_reader_data:
            skipped.append(line)
            print(f"  skip  {line.source}: {line.command}")
            continue
        if line.command.split()[:2] == ["ilias", "demo"]:
            ran.append(line)  # the fixture ran it (smaller)
            continue
        workdir = tmp_path / f"line{number}"
        workdir.mkdir()
        argv = on_demo(line.command, demo, workdir)
        started = time.monotonic()
        problem = run_on_demo(argv, env, workdir)
        ran.append(line)
        print(f"{time.monotonic() - started:6.1f} s  {line.source}: {line.command}")
        if problem:
            failures.append(
                f"{line.source}: {line.command}\n  as {shlex.join(argv[3:])}\n  {problem}"
            )
    print(
        f"\n{len(ran)} doc commands ran on the demo, {len(skipped)} skipped (marked as needing "
        "the reader's data)"
    )
    assert not failures, (
        f"{len(failures)} of {len(ran)} doc commands failed on the demo (fix the line, or mark "
        "it '# needs: ...' if it needs data the reader brings):\n\n" + "\n\n".join(failures)
    )
