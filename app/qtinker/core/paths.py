"""The one module that knows where models, outputs and caches live.

Defaults are inside the checkout (the Pinokio app folder), so Reset (which removes only
the venv) never touches them. Environment variables move each one elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

# app/qtinker/core/paths.py -> the package is one folder up, the repository root two more.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parents[1]


def _root() -> Path:
    # An editable install (requirements.txt installs `-e .`) keeps the package in the
    # checkout; a wheel install does not, and then the current directory is the root.
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT
    return Path.cwd()


def models_dir() -> Path:
    """Where downloaded and imported models live (QTINKER_MODELS_DIR, default bert_models/)."""
    return Path(os.environ.get("QTINKER_MODELS_DIR") or _root() / "bert_models")


def outputs_dir() -> Path:
    """Where distilled, quantized and exported results go (QTINKER_OUTPUTS_DIR, default outputs/)."""
    return Path(os.environ.get("QTINKER_OUTPUTS_DIR") or _root() / "outputs")


def cache_dir() -> Path:
    """Scratch space for partial downloads and teacher-output caches (QTINKER_CACHE_DIR, default cache/qtinker)."""
    return Path(os.environ.get("QTINKER_CACHE_DIR") or _root() / "cache" / "qtinker")


def bundled_data_dir() -> Path:
    """The small real datasets shipped with the package (see data/bundled/README.md)."""
    return PACKAGE_DIR / "data" / "bundled"
