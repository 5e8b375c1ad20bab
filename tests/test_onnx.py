"""ONNX Runtime formats on tiny random BERTs: `--scheme onnx` / `onnx-int8` export, fuse, quantize,
measure and leave a folder that runs with onnxruntime + tokenizers + numpy in a process where
torch cannot even be imported; models that cannot export and bad scheme names get one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from qtinker.core.errors import QTinkerError
from qtinker.quantize import QuantizeConfig, quantize
from test_quantize import eval_csv  # noqa: F401  (the same 12-row labelled file)

TEXTS = ["the king said unto them", "she was not at the house", "love and faith and grace"]

# Run `code` with torch unimportable: what a deployment with only onnxruntime, tokenizers and numpy sees.
NO_TORCH = textwrap.dedent("""
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is not installed here")
    sys.meta_path.insert(0, _NoTorch())
""")


def run_without_torch(code: str, cwd) -> str:
    proc = subprocess.run([sys.executable, "-c", NO_TORCH + code + "\nassert 'torch' not in sys.modules\n"], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def float_logits(folder, texts=TEXTS):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        return model(**AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")).logits


@pytest.mark.parametrize("scheme", ["onnx-int8", "onnx"])
def test_onnx_folder_runs_without_torch_and_matches_float(tiny_bert, tmp_path, eval_csv, scheme):
    source = tiny_bert(num_labels=3)
    out = tmp_path / scheme
    metrics = quantize(QuantizeConfig(model=str(source), scheme=scheme, out=str(out), eval_data=str(eval_csv),
                                      compile=False, latency_iters=1))
    assert {"model.onnx", "tokenizer.json", "config.json", "metrics.json", "README.md", "quantization.json"} <= \
        {p.name for p in out.iterdir()}
    assert not list(tmp_path.glob(f".{scheme}.*"))  # the staging folder is gone
    # every fusion happened: one embedding block, attention in both layers, two skip-layernorms per layer
    assert metrics["fused_operators"]["EmbedLayerNormalization"] == 1
    assert metrics["fused_operators"]["Attention"] == 2 and metrics["fused_operators"]["SkipLayerNormalization"] == 4
    assert metrics["runtime"] == "onnxruntime" and metrics["reload_output_cosine"] > 0.999
    assert metrics["after"]["n"] == 12 and metrics["after"]["agreement"] >= 0.9
    assert metrics["after"]["latency"]["batch16_eager_ms"] > 0 and metrics["accuracy_warning"] is None
    # cold start: a fresh process creates the session and predicts (float: loads torch and transformers)
    assert 0 < metrics["after"]["cold_start_s"]["eager"] < 60 and metrics["before"]["cold_start_s"]["eager"] > 0
    if scheme == "onnx-int8":  # int8 weights, embeddings included: about a quarter of the float bytes
        assert metrics["ratios"]["size"] < 0.35 and metrics["ratios"]["size_without_embeddings"] < 0.45
    else:
        assert 0.9 < metrics["ratios"]["size"] < 1.1
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}

    # the model card's snippet, run as is in a process where `import torch` fails
    card = (out / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert "import onnxruntime" in snippet and "torch" not in snippet
    assert f"| quantization | float | {scheme} | change |" in card and "| accuracy |" in card  # a table, not a dump
    assert f"**{scheme}: " in card and "(onnxruntime) |" in card and str(tmp_path) not in card
    printed = run_without_torch(snippet, out).splitlines()
    reference = float_logits(source, ["an example sentence"])
    shown = torch.tensor(json.loads(printed[0]))
    assert torch.allclose(shown, reference, atol=0.02 if scheme == "onnx-int8" else 1e-4)
    assert printed[1] == str([f"LABEL_{reference.argmax(-1).item()}"])

    # a batch with padding, without torch, against the float model
    batch = run_without_torch(textwrap.dedent(f"""
        import json, numpy as np, onnxruntime
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file("tokenizer.json"); tok.enable_padding(pad_id=0)
        enc = tok.encode_batch({TEXTS!r})
        feed = {{"input_ids": np.array([e.ids for e in enc]), "attention_mask": np.array([e.attention_mask for e in enc]),
                "token_type_ids": np.array([e.type_ids for e in enc])}}
        s = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
        print(json.dumps(s.run(["logits"], feed)[0].tolist()))
    """), out)
    logits = torch.tensor(json.loads(batch))
    reference = float_logits(source)
    assert torch.equal(logits.argmax(-1), reference.argmax(-1))
    assert torch.allclose(logits, reference, atol=0.02 if scheme == "onnx-int8" else 1e-4)


def test_qtinker_load_opens_an_onnx_folder(tiny_bert, tmp_path):
    import qtinker
    from qtinker.models.onnx_session import OnnxClassifier

    source = tiny_bert(num_labels=2)
    quantize(QuantizeConfig(model=str(source), scheme="onnx-int8", out=str(tmp_path / "o"), compile=False, latency_iters=1,
                            cold_start=False))
    model, tokenizer = qtinker.load(tmp_path / "o")
    assert isinstance(model, OnnxClassifier)
    logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    assert torch.equal(logits.argmax(-1), float_logits(source).argmax(-1))


def test_mlm_head_cannot_export_one_line(tiny_bert, tmp_path, capsys):
    from qtinker.cli import main

    source = tiny_bert(name="mlm")  # masked-LM head, no classifier
    with pytest.raises(QTinkerError, match="BertForMaskedLM has no sequence-classification head") as info:
        quantize(QuantizeConfig(model=str(source), scheme="onnx-int8", out=str(tmp_path / "o"), compile=False))
    assert "\n" not in str(info.value) and not (tmp_path / "o").exists()
    assert main(["quantize", str(source), "--scheme", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("qtinker: --scheme onnx: BertForMaskedLM")


def test_bad_scheme_is_one_line(tiny_bert, tmp_path, capsys):
    from qtinker.cli import main

    source = tiny_bert(num_labels=2)
    with pytest.raises(QTinkerError, match="--scheme onnx-int4: unknown scheme; choose one of .*onnx-int8"):
        quantize(QuantizeConfig(model=str(source), scheme="onnx-int4", out=str(tmp_path / "o")))
    with pytest.raises(SystemExit) as exit_:
        main(["quantize", str(source), "--scheme", "onnx-int4", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "invalid choice: 'onnx-int4'" in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(QTinkerError, match="--device cuda: QTinker's ONNX formats run on CPU"):
        quantize(QuantizeConfig(model=str(source), scheme="onnx", device="cuda", out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_minilm_onnx_int8_keeps_accuracy_on_the_bundled_test_set(minilm_classifier, tmp_path):
    """The fine-tuned all-MiniLM-L6-v2 as ONNX int8, run without torch, within 0.5 point of float accuracy."""
    from qtinker.data import load_labelled, sample_eval_path

    out = tmp_path / "minilm-onnx-int8"
    metrics = quantize(QuantizeConfig(model=str(minilm_classifier), scheme="onnx-int8", out=str(out),
                                      eval_data=str(sample_eval_path()), compile=False, latency_iters=2,
                                      cold_start=False))
    assert metrics["fused_operators"]["Attention"] == 6
    assert metrics["ratios"]["accuracy_change_points"] >= -0.5 and metrics["ratios"]["size"] <= 0.26
    data = load_labelled(sample_eval_path())
    (tmp_path / "texts.json").write_text(json.dumps(list(data.texts)))  # a file: the texts exceed argv's limit
    printed = run_without_torch(textwrap.dedent(f"""
        import json, numpy as np, onnxruntime
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file("tokenizer.json"); tok.enable_truncation(max_length=128); tok.enable_padding(pad_id=0)
        s = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
        texts = json.load(open({json.dumps(str(tmp_path / "texts.json"))}))
        preds = []
        for i in range(0, len(texts), 32):
            enc = tok.encode_batch(texts[i:i + 32])
            feed = {{"input_ids": np.array([e.ids for e in enc]), "attention_mask": np.array([e.attention_mask for e in enc]),
                    "token_type_ids": np.array([e.type_ids for e in enc])}}
            preds += s.run(["logits"], feed)[0].argmax(-1).tolist()
        print(json.dumps(preds))
    """), out)
    from qtinker.evaluate import label_order

    preds = json.loads(printed)
    labels = json.loads((out / "config.json").read_text())["id2label"]
    order, _ = label_order([labels[str(i)] for i in range(len(labels))], data)
    accuracy = sum(p == order[y] for p, y in zip(preds, data.labels)) / len(data)
    assert accuracy >= metrics["before"]["accuracy"] - 0.005  # torch-free run: within 0.5 point of float


def test_recommendation_is_the_fastest_across_shapes_within_half_a_point_and_never_eager_int8():
    from qtinker.quantize.formats import format_rows, recommend, recommendation_line

    def measured(acc, b1, b16, c1=None, c16=None):
        lat = {"batch1_eager_ms": b1, "batch1_seq32_eager_ms": b1 / 2, "batch16_eager_ms": b16}
        lat.update({"batch1_compiled_ms": c1, "batch16_compiled_ms": c16} if c1 else {})
        cold = {"eager": 5.0, **({"compiled": 30.0} if c1 else {})}
        return {"weights_bytes": 100, "accuracy": acc, "latency": lat, "cold_start_s": cold}

    float_ = measured(0.900, 30.0, 400.0, 26.0, 390.0)
    runs = [("out/m-int8-dynamic", {"scheme": "int8-dynamic", "before": float_, "after": measured(0.899, 90.0, 450.0, 12.0, 160.0)}),
            ("out/m-onnx-int8", {"scheme": "onnx-int8", "runtime": "onnxruntime", "before": float_,
                                 "after": measured(0.901, 9.5, 150.0)}),
            ("out/m-lossy", {"scheme": "int8-weight", "runtime": "onnxruntime", "before": float_,
                             "after": measured(0.890, 5.0, 100.0)})]  # fastest, but 1 point lost
    rows = format_rows(runs)
    assert [r["format"] for r in rows] == ["float eager", "float compiled", "int8-dynamic eager", "int8-dynamic compiled",
                                           "onnx-int8", "int8-weight"]
    assert rows[2]["note"] == "needs torch.compile"
    assert [r["cold_start_s"] for r in rows[:4]] == [5.0, 30.0, 5.0, 30.0]
    assert [r["batch1_seq32_ms"] for r in rows] == [15.0, None, 45.0, None, 4.75, 2.5]  # not compiled at seq 32 here
    assert recommend(rows)["folder"] == "out/m-onnx-int8"
    assert recommendation_line(rows) == ("Recommended for this machine: onnx-int8 (fastest within 0.5 accuracy point of "
                                         "float, 3.0x float eager over batch 1 and batch 16, first prediction 5.0 s after a "
                                         "fresh start).")
    runs[1][1]["after"]["latency"]["batch1_eager_ms"] = 6.0  # ONNX faster for one text, but slower for batches:
    runs[1][1]["after"]["latency"]["batch16_eager_ms"] = 500.0  # compiled TorchAO is faster overall
    assert recommend(format_rows(runs))["format"] == "int8-dynamic compiled"
    # what the deploy bench measured for a 2-layer student: compiled TorchAO 6.9x at batch 1 but 1.3x at batch 16,
    # ONNX int8 4.9x and 5.1x: ONNX is the faster format for this model
    runs[0][1]["after"]["latency"].update(batch1_compiled_ms=30 / 6.9, batch16_compiled_ms=400 / 1.3)
    runs[1][1]["after"]["latency"].update(batch1_eager_ms=30 / 4.9, batch1_seq32_eager_ms=15 / 4.9,
                                          batch16_eager_ms=400 / 5.1)
    assert recommend(format_rows(runs))["format"] == "onnx-int8"
