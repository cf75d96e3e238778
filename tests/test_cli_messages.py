"""The CLI prints a user's error as written: a message naming a TOML table (``[encoder]``)
must not lose its brackets to rich's markup."""

from __future__ import annotations

import subprocess
import sys


def test_error_text_is_printed_verbatim(tmp_path):
    run = tmp_path / "run.toml"
    run.write_text('[dataset]\npath = "/nonexistent"\n')
    done = subprocess.run(
        [sys.executable, "-m", "ilias", "eval", "run", str(run)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "[encoder]" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
