"""Export: the load twin for float folders, the model card (whose load snippet really runs),
and the download zip (relative names only, symlinks never followed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch

from qtinker.core.errors import QTinkerError
from qtinker.export.card import render_model_card, write_model_card
from qtinker.export.package import export_zip
from qtinker.models.resolve import load_model
from qtinker.quantize import QuantizeConfig, quantize


def run_card_snippet(folder) -> str:
    """The first ```python block of README.md, run as a plain script inside the folder."""
    card = (folder / "README.md").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert "qtinker" not in code  # plain Python: works for someone without QTinker
    proc = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def unzip(zip_path, dest):
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        for name in names:
            assert not name.startswith("/") and ".." not in name.split("/") and ":" not in name, name
        zf.extractall(dest)
    return names


def test_float_folder_loads_like_transformers(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    folder = tiny_bert(num_labels=2)
    model, tok = load_model(folder)
    ref = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    enc = tok(["the king said"], return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(model(**enc).logits, ref(**enc).logits)
    assert not model.training


def test_quantized_zip_card_snippet_runs(tiny_bert, tmp_path):
    source = tiny_bert(name="student", num_labels=2)
    (source / "run_config.json").write_text(json.dumps({"teacher": str(tmp_path / "models" / "bert-mini"), "student_config": "2,32,2",
                                                        "method": "logit", "data": str(tmp_path / "data" / "train.csv")}))
    (source / "metrics.json").write_text(json.dumps({"method": "logit", "teacher_metrics": {"accuracy": 0.8},
                                                     "student_metrics": {"accuracy": 0.75}, "retention": 0.9375}))
    out = tmp_path / "outputs" / "student-int8"
    metrics = quantize(QuantizeConfig(model=str(source), out=str(out), compile=False, latency_iters=1,
                                      cold_start=False))
    card = (out / "README.md").read_text()
    assert "AutoModelForSequenceClassification.from_pretrained(folder)" in card  # plain transformers, first
    assert "torch._inductor.config.freezing = True" in card
    # names, not local paths; a results table people read (no raw metrics dump)
    assert str(tmp_path) not in card
    size = metrics["before"]["weights_bytes"] / metrics["after"]["weights_bytes"]
    for text in ("teacher: `bert-mini`", "data: `train.csv`", "method: `logit`", "scheme: `int8-dynamic`",
                 "| accuracy | 0.8000 | 0.7500 |", "Retention (student / teacher) **0.9375**",
                 "| quantization | float | int8-dynamic | change |", f"{size:.1f}× smaller |",
                 "| latency batch 16, seq 128 (eager) |", f"**int8-dynamic: {size:.1f}× smaller, ",
                 "every figure is in `metrics.json` and `source_metrics.json`",
                 "left in full precision: classifier", "torchao 0.18"):
        assert text in card, text
    assert "after.latency" not in card and "ratios.size" not in card
    zip_path = export_zip(out, tmp_path / "student.zip")
    names = unzip(zip_path, tmp_path / "unzipped")
    assert {"student-int8/README.md", "student-int8/model.safetensors", "student-int8/quantization.json",
            "student-int8/metrics.json", "student-int8/config.json", "student-int8/source_metrics.json"} <= set(names)
    printed = run_card_snippet(tmp_path / "unzipped" / "student-int8")
    # the snippet's logits equal qtinker.load's on the same sentence
    model, tok = load_model(tmp_path / "unzipped" / "student-int8")
    with torch.inference_mode():
        logits = model(**tok(["an example sentence"], return_tensors="pt")).logits
    shown = [float(x) for x in printed.split("[[", 1)[1].split("]]", 1)[0].split(",")]
    assert torch.allclose(logits[0], torch.tensor(shown), atol=1e-3)


def test_float_zip_keeps_foreign_readme_and_snippet_runs(tiny_bert, tmp_path):
    folder = tiny_bert(name="downloaded", num_labels=3)
    (folder / "README.md").write_text("# upstream card\n")
    names = unzip(export_zip(folder, tmp_path / "d.zip"), tmp_path / "u")
    assert "downloaded/ORIGINAL_README.md" in names and "downloaded/README.md" in names
    assert (tmp_path / "u/downloaded/ORIGINAL_README.md").read_text() == "# upstream card\n"
    assert (folder / "README.md").read_text() == "# upstream card\n"  # the source folder is not touched
    assert "tensor([[" in run_card_snippet(tmp_path / "u" / "downloaded")


def test_zip_never_follows_symlinks_out(tiny_bert, tmp_path):
    folder = tiny_bert(num_labels=2)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (folder / "link.txt").symlink_to(secret)
    (folder / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("inside")
    names = unzip(export_zip(folder, tmp_path / "z.zip"), tmp_path / "u")
    assert "tiny/sub/notes.txt" in names
    assert not any("link" in n or "secret" in n for n in names)
    with pytest.raises(QTinkerError, match="already exists; choose another --zip or pass --overwrite"):
        export_zip(folder, tmp_path / "z.zip")
    assert export_zip(folder, tmp_path / "z.zip", overwrite=True).exists()


def test_a_distilled_model_zips_with_qtinkers_own_card(tiny_bert, tmp_path):
    from qtinker.export.card import write_model_card

    folder = tiny_bert(name="student", num_labels=2)
    metrics = {"task": "classification", "method": "logit", "teacher": str(tmp_path / "models" / "bert-base"),
               "teacher_layers": 12, "teacher_parameters": 109_000_000, "student": "teacher layers [0, 11]",
               "student_layers": 2, "student_parameters": 4_000_000, "teacher_metrics": {"accuracy": 0.9},
               "student_metrics": {"accuracy": 0.85}, "retention": 0.9444, "agreement": 0.9, "best_epoch": 2,
               "epochs_run": 3, "train_examples_per_s": 120.5, "device": "cpu", "layer_map": "logits only",
               "hyperparameters": {"temperature": 4.0, "kd_weight": 0.5, "hard_label_weight": 0.5, "lr": 5e-5,
                                   "epochs": 3, "batch_size": 16, "grad_accum": 1, "max_length": 128, "seed": 0}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "README.md").write_text("---\nlibrary_name: transformers\ntags:\n- qtinker\n---\n# an older card\n")
    card = write_model_card(folder).read_text()
    assert not (folder / "ORIGINAL_README.md").exists()  # the older card was ours too: rewritten, not kept
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    for text in ("from **bert-base** (12 layers, 109,000,000 parameters) into a 2-layer student", "Retention",
                 "## How to load", "## Training", "T = 4.0, kd_weight = 0.5", "Best epoch: 2 of 3"):
        assert text in card, text
    assert str(tmp_path) not in card
    names = unzip(export_zip(folder, tmp_path / "student.zip"), tmp_path / "u")
    assert "student/README.md" in names and "student/ORIGINAL_README.md" not in names
    assert (tmp_path / "u" / "student" / "README.md").read_text() == card


def test_card_for_mlm_encoder_and_write_model_card(tiny_bert):
    folder = tiny_bert(name="mlm")
    text = render_model_card(folder)
    assert "AutoModelForMaskedLM.from_pretrained(folder)" in text and "None: float weights." in text
    (folder / "README.md").write_text("their card")
    write_model_card(folder)
    assert (folder / "ORIGINAL_README.md").read_text() == "their card"
    write_model_card(folder)  # ours is rewritten in place; theirs stays
    assert (folder / "ORIGINAL_README.md").read_text() == "their card"


def test_loading_refuses_pickle_only_and_non_bert(tiny_bert, tmp_path):
    folder = tiny_bert(num_labels=2)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(QTinkerError, match="safetensors only"):
        load_model(folder)
    with pytest.raises(QTinkerError, match="not a BERT-family"):
        other = tiny_bert(name="other")
        (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
        export_zip(other, tmp_path / "o.zip")
    assert not (tmp_path / "o.zip").exists()


def test_cli_export(tiny_bert, tmp_path, capsys):
    from qtinker.cli import main

    folder = tiny_bert(num_labels=2)
    assert main(["export", str(folder), "--zip", str(tmp_path / "x.zip")]) == 0
    assert capsys.readouterr().out.strip().endswith("x.zip")
    assert main(["export", str(tmp_path / "nope"), "--zip", str(tmp_path / "y.zip")]) == 2
    assert "no such model folder" in capsys.readouterr().err


def test_cli_failure_is_printed_once_and_recorded_once(tmp_path, capsys):
    import json

    from qtinker.cli import main

    events = tmp_path / "ev.jsonl"
    assert main(["export", "/nonexistent", "--events", str(events)]) == 2
    captured = capsys.readouterr()
    failures = [line for line in captured.err.splitlines() if "no such model folder" in line]
    assert failures == [failures[0]] and failures[0].startswith("qtinker: /nonexistent: no such model folder")
    assert captured.out == ""
    kinds = [json.loads(line)["type"] for line in events.read_text().splitlines()]
    assert kinds == ["start", "error"]


def test_zip_members_are_readable_by_everyone(tiny_bert, tmp_path):
    import os
    import stat
    import zipfile

    folder = tiny_bert(num_labels=2)
    os.chmod(folder / "config.json", 0o600)  # e.g. written through a temporary file
    with zipfile.ZipFile(export_zip(folder, tmp_path / "z.zip")) as zf:
        modes = {info.filename: stat.S_IMODE(info.external_attr >> 16) for info in zf.infolist()}
    assert "tiny/README.md" in modes and "tiny/config.json" in modes
    assert set(modes.values()) == {0o644}
