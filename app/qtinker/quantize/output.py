"""The end of every quantize run (TorchAO or ONNX Runtime): a staging folder beside OUT to save into, and
the checked folder's records, card and move into place.

    with staged_output(out) as tmp:
        ... save into tmp, reload, check ...
        finish_folder(tmp, out, metrics, config, source, events)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from qtinker.core import fsutil
from qtinker.core.config import save_config
from qtinker.core.fsutil import write_json
from qtinker.export.card import write_model_card
from qtinker.export.package import copy_source_records
from qtinker.quantize.config import QuantizeConfig


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A hidden staging folder beside `out` (same filesystem: the final move is atomic); whatever the run
    leaves there is removed if it ends before finish_folder moved the folder into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = fsutil.staging_folder(out)
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def finish_folder(tmp: Path, out: Path, metrics: dict, config: QuantizeConfig, source: Path, events) -> None:
    """metrics.json, the run config, the source's records and the model card into the checked staging
    folder, then move it into place (a previous OUT goes only now, under --overwrite); then the "done" event."""
    write_json(tmp / "metrics.json", metrics)
    save_config(dataclasses.replace(config, model=str(source), out=str(out)), tmp / "quantize_config.json")
    copy_source_records(source, tmp)
    write_model_card(tmp)
    (tmp / fsutil.OWNER_FILE).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    events.emit("done", result={k: metrics[k] for k in ("scheme", "ratios", "output_cosine")}, out=str(out))
