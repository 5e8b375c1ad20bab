"""The README's setup without Pinokio: its commands install the pinned CPU build of torch on Linux
without a separate step, and its CLI examples run as written once the venv is activated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def test_cpu_only_linux_setup_is_the_same_one_command_with_the_cpu_index():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = [line.strip() for line in readme.splitlines() if line.startswith("    python3 -m venv env")]
    assert len(commands) == 2, commands
    plain, cpu = commands
    assert cpu == plain.replace("-r requirements.txt", f"-r requirements.txt {CPU_INDEX}")
    # the CPU index's torch satisfies the exact pin (a local +cpu label matches ==X), so no torch step is needed
    pin = re.search(r"^torch==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert f"`{pin}+cpu`" in readme


def test_cli_examples_run_after_activating_the_venv():
    requirements = (REPO / "requirements.txt").read_text().splitlines()
    assert "-e ." in requirements  # the install puts the `qtinker` entry point into the venv
    assert 'qtinker = "qtinker.cli:main"' in (REPO / "pyproject.toml").read_text()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## The CLI", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].startswith(". env/bin/activate")
    assert all(not line or line.startswith(("qtinker ", "    ")) for line in block[1:]), block
    # this test's own venv, activated as the README says: `qtinker` is on the PATH and runs
    found = subprocess.run(["bash", "-c", f". {sys.prefix}/bin/activate && qtinker --help"], capture_output=True, text=True,
                           timeout=120)
    assert found.returncode == 0 and "usage: qtinker" in found.stdout, found.stderr
