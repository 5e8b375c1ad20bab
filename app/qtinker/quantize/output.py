"""The last step of every quantize run (TorchAO or ONNX Runtime): the checked staging folder gets its
records and card, then moves into place."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from qtinker.core import fsutil
from qtinker.core.config import save_config
from qtinker.core.fsutil import write_json
from qtinker.export.card import write_model_card
from qtinker.export.package import copy_source_records
from qtinker.quantize.config import QuantizeConfig


def finish_folder(tmp: Path, out: Path, metrics: dict, config: QuantizeConfig, source: Path) -> None:
    """metrics.json, the run config, the source's records and the model card into the checked staging
    folder, then move it into place (a previous OUT goes only now, under --overwrite)."""
    write_json(tmp / "metrics.json", metrics)
    save_config(dataclasses.replace(config, model=str(source), out=str(out)), tmp / "quantize_config.json")
    copy_source_records(source, tmp)
    write_model_card(tmp)
    (tmp / fsutil.OWNER_FILE).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
