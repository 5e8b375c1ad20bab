"""The Pinokio launcher (install.js, start.js, update.js, reset.js, torch.js, pinokio.js) checked
against Pinokio's real kernel: runs `node --test tests/launcher/` (npm `pinokiod`, pinned in
package.json; `npm ci` installs it) and fails with node's output when any launcher test fails.

Locally a checkout without node_modules/pinokiod skips with the reason; in CI (CI=true) that is a
failure, so the launcher is never silently untested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (the launcher tests need Node 20 or 22)"
    if not (REPO / "node_modules" / "pinokiod").is_dir():
        return "node_modules/pinokiod is missing: run `npm ci` in the repository root"
    return None


def test_launcher_in_pinokio_kernel():
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail(f"launcher tests cannot run in CI: {reason}")
        pytest.skip(reason)
    env = dict(os.environ)
    # the kernel's start.js test runs the app with this venv's Python (it has the dependencies)
    env["QTINKER_TEST_VENV"] = sys.prefix
    proc = subprocess.run(
        ["node", "--test", "--test-force-exit", "--test-reporter=spec", "tests/launcher/"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"node --test tests/launcher/ failed (exit {proc.returncode}):\n{output[-12000:]}"
    assert "# fail 0" in output or "ℹ fail 0" in output, output[-4000:]
