"""Quantization on tiny random BERTs: every CPU scheme quantizes, shrinks, reloads in a fresh
process with the same outputs, and reports what it left in full precision; int4 on CPU is
refused with a message that says what works here."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from qtinker.core.errors import QTinkerError
from qtinker.quantize.recipe import QuantizeConfig, available_schemes, plan_layers, quantize

TEXTS = ["the king said unto them", "she was not at the house", "love and faith and grace"]


def fast(**kwargs) -> QuantizeConfig:
    """Latency kept tiny in tests: eager only, 2 timed calls, no cold start (tests never check timings)."""
    return QuantizeConfig(compile=False, latency_iters=2, **{"cold_start": False, **kwargs})


@pytest.fixture
def eval_csv(tmp_path):
    path = tmp_path / "eval.csv"
    words = "love faith grace sin law heaven earth god king land house son".split()
    path.write_text("text,label\n" + "".join(f"the {w} said unto them,{i % 2}\n" for i, w in enumerate(words)))
    return path


def logits_in_subprocess(folders, plain: bool = False) -> dict:
    """qtinker.load in a fresh interpreter (nothing cached from this process) -> outputs as lists.
    plain: transformers' own from_pretrained instead, with qtinker never imported."""
    load = ("from transformers import AutoModelForSequenceClassification as A, AutoTokenizer as T\n"
            "            model, tok = A.from_pretrained(folder).eval(), T.from_pretrained(folder)") if plain else \
        "import qtinker; model, tok = qtinker.load(folder)"
    code = textwrap.dedent(f"""
        import json, sys, torch
        out = {{}}
        for folder in {[str(f) for f in folders]!r}:
            {load}
            enc = tok({TEXTS!r}, padding=True, return_tensors="pt")
            with torch.inference_mode():
                o = model(**enc)
            out[folder] = (o.logits if getattr(o, "logits", None) is not None else o.last_hidden_state[:, 0]).tolist()
        assert ("qtinker" in sys.modules) != {plain!r}
        print("RESULT" + json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return {k: torch.tensor(v) for k, v in json.loads(line[6:]).items()}


def float_logits(folder):
    from qtinker.export import load_model

    model, tok = load_model(folder)
    with torch.inference_mode():
        o = model(**tok(TEXTS, padding=True, return_tensors="pt"))
    return o.logits if getattr(o, "logits", None) is not None else o.last_hidden_state[:, 0]


def test_quantize_model_works_in_place_without_files(tiny_bert, tmp_path):
    from qtinker.export import load_model
    from qtinker.quantize import quantize_model_

    folder = tiny_bert(num_labels=2)
    model, tok = load_model(folder)
    reference = float_logits(folder)
    before = set(tmp_path.rglob("*"))
    plans = quantize_model_(model, QuantizeConfig(scheme="int8-weight"))
    assert set(tmp_path.rglob("*")) == before  # nothing written
    actions = {p.name: p.action for p in plans}
    assert actions["bert.encoder.layer.0.attention.self.query"] == "int8-weight"
    assert actions["classifier"] == "float"  # the head stays in full precision by default
    assert type(model.bert.encoder.layer[0].attention.self.query.weight).__name__ != "Parameter"  # a TorchAO tensor
    with torch.inference_mode():
        logits = model(**tok(TEXTS, padding=True, return_tensors="pt")).logits
    assert torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0) > 0.99


def test_available_schemes_names_what_runs_here():
    schemes = available_schemes()
    assert set(schemes) == {"int8-dynamic", "int8-weight", "int4-weight", "onnx", "onnx-int8"}
    assert schemes["int8-dynamic"] is None and schemes["int8-weight"] is None
    assert schemes["onnx"] is None and schemes["onnx-int8"] is None
    if not torch.cuda.is_available():
        assert "CUDA" in schemes["int4-weight"] and "int8-dynamic" in schemes["int4-weight"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_int4_on_cpu_is_refused_with_what_works(tiny_bert, tmp_path, capsys):
    from qtinker.cli import main

    model = tiny_bert(num_labels=2)
    with pytest.raises(QTinkerError, match="int4-weight.*CUDA.*int8-dynamic"):
        quantize(fast(model=str(model), scheme="int4-weight", out=str(tmp_path / "q4")))
    assert not (tmp_path / "q4").exists()
    events = tmp_path / "ev.jsonl"
    assert main(["quantize", str(model), "--scheme", "int4-weight", "--out", str(tmp_path / "q4"),
                 "--events", str(events)]) == 2
    assert "qtinker: --scheme int4-weight: int4-weight needs a CUDA GPU" in capsys.readouterr().err
    kinds = [json.loads(l)["type"] for l in events.read_text().splitlines()]
    assert "error" in kinds and "done" not in kinds


def test_cpu_schemes_shrink_reload_and_report(tiny_bert, tmp_path, eval_csv):
    model = tiny_bert(num_labels=2)
    outs = {}
    for scheme in ("int8-dynamic", "int8-weight"):
        out = tmp_path / scheme
        metrics = quantize(fast(model=str(model), scheme=scheme, out=str(out), eval_data=str(eval_csv)))
        outs[scheme] = out
        assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
        before, after = metrics["before"], metrics["after"]
        # embeddings are int8 too, so the total really shrinks (fp32 -> int8 is 4x, scales and the float head aside)
        assert after["weights_bytes"] < 0.35 * before["weights_bytes"]
        assert after["weights_bytes_without_embeddings"] < 0.4 * before["weights_bytes_without_embeddings"]
        assert before["n"] == after["n"] == 12 and 0 <= after["accuracy"] <= 1 and after["agreement"] >= 0.9
        for key in ("batch1_eager_ms", "batch1_seq32_eager_ms", "batch16_eager_ms"):  # one short text too
            assert before["latency"][key] > 0 and after["latency"][key] > 0
        assert before["latency"]["threads"] == torch.get_num_threads() and before["latency"]["seq"] == 128
        assert metrics["skipped_layers"] == [{"name": "classifier", "kind": "linear",
                                              "reason": "task head kept in full precision (--quantize-head to change)"}]
        assert metrics["output_cosine"] > 0.99 and metrics["reload_output_cosine"] > 0.999
        marker = json.loads((out / "quantization.json").read_text())
        assert marker["scheme"] == scheme and marker["load_device"] == "any" and marker["torchao"].startswith("0.")
        assert marker["skipped_layers"] == metrics["skipped_layers"] and marker["weights"] == "model.safetensors"
        quantization_config = json.loads((out / "config.json").read_text())["quantization_config"]
        assert quantization_config["quant_method"] == "torchao"
        assert quantization_config["modules_to_not_convert"] == ["classifier"]  # the head stays float
        assert "## Quantization" in (out / "README.md").read_text()
    reloaded = logits_in_subprocess(outs.values())
    plain = logits_in_subprocess(outs.values(), plain=True)
    reference = float_logits(model)
    for scheme, out in outs.items():
        in_process = float_logits(out)
        assert torch.allclose(reloaded[str(out)], in_process, atol=1e-5), scheme
        assert torch.allclose(plain[str(out)], in_process, atol=1e-5), scheme  # transformers alone, same outputs
        assert torch.allclose(reloaded[str(out)], reference, atol=0.05), scheme


def test_tied_mlm_head_and_float_embeddings(tiny_bert, tmp_path):
    """A masked-LM head tied to the word embeddings shares the int8 table and is saved once;
    with --embeddings none the tables stay float and are listed."""
    model = tiny_bert(name="mlm")
    metrics = quantize(fast(model=str(model), out=str(tmp_path / "q8")))
    marker = json.loads((tmp_path / "q8" / "quantization.json").read_text())
    assert marker["aliases"] == {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                                 "cls.predictions.decoder.bias": "cls.predictions.bias"}
    assert marker["layers"]["cls.predictions.decoder"] == "tied"
    float_emb = quantize(fast(model=str(model), out=str(tmp_path / "qf"), embeddings="none"))
    assert {s["name"] for s in float_emb["skipped_layers"]} >= {"bert.embeddings.word_embeddings",
                                                               "bert.embeddings.position_embeddings"}
    assert float_emb["after"]["weights_bytes"] > 1.5 * metrics["after"]["weights_bytes"]
    reloaded = logits_in_subprocess([tmp_path / "q8"])[str(tmp_path / "q8")]
    ref = float_logits(model)
    assert torch.nn.functional.cosine_similarity(reloaded.flatten(1), ref.flatten(1)).min() > 0.99


def test_int4_plan_lists_layers_whose_width_does_not_divide(tiny_bert):
    """Planning is pure Python, so it is checked on CPU: width 32 does not divide into groups of 64."""
    from qtinker.export import load_model

    model, _ = load_model(tiny_bert(num_labels=2, hidden=32, intermediate=64))
    plans = {p.name: p for p in plan_layers(model, QuantizeConfig(scheme="int4-weight", group_size=64))}
    assert plans["bert.encoder.layer.0.attention.self.query"].action == "float"
    assert "input width 32 is not divisible by group size 64" in plans["bert.encoder.layer.0.attention.self.query"].reason
    assert plans["bert.encoder.layer.0.output.dense"].action == "int4-weight"  # in_features 64
    assert plans["bert.embeddings.word_embeddings"].action == "int8-rows"


@pytest.mark.parametrize("case", ["missing", "garbage-config", "not-bert", "no-weights", "corrupt-weights"])
def test_bad_folders_give_one_line_messages(tiny_bert, tmp_path, case):
    folder = tmp_path / case
    expected = {"missing": "no such model folder", "garbage-config": "unreadable JSON", "not-bert": "not a BERT-family",
                "no-weights": "safetensors only", "corrupt-weights": "cannot load the model"}[case]
    if case != "missing":
        folder = tiny_bert(name=case, num_labels=2)
    if case == "garbage-config":
        (folder / "config.json").write_text("{not json")
    elif case == "not-bert":
        (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    elif case == "no-weights":
        (folder / "model.safetensors").unlink()
    elif case == "corrupt-weights":
        (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(QTinkerError, match=expected) as info:
        quantize(fast(model=str(folder), out=str(tmp_path / "q")))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "q").exists()


def test_corrupt_quantized_weights_and_existing_out(tiny_bert, tmp_path):
    from qtinker.export import load_model

    model = tiny_bert(num_labels=2)
    out = tmp_path / "q"
    quantize(fast(model=str(model), out=str(out)))
    with pytest.raises(QTinkerError, match="already exists; choose another --out or pass --overwrite"):
        quantize(fast(model=str(model), out=str(out)))
    with pytest.raises(QTinkerError, match="is already quantized"):
        quantize(fast(model=str(out), out=str(tmp_path / "qq")))
    data = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(QTinkerError, match="cannot load the quantized model .*quantize the model again") as info:
        load_model(out)
    assert "\n" not in str(info.value)


def test_cli_prints_before_after_and_events(tiny_bert, tmp_path, capsys):
    from qtinker.cli import main

    model = tiny_bert(num_labels=2)
    events = tmp_path / "events.jsonl"
    rc = main(["quantize", str(model), "--scheme", "int8-dynamic", "--out", str(tmp_path / "q"), "--no-compile",
               "--latency-iters", "1", "--events", str(events)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "weights (total)" in printed and "latency batch16_eager" in printed and "left in full precision: classifier" in printed
    assert printed.strip().splitlines()[-1].startswith("int8-dynamic: ") and "× smaller" in printed  # the verdict last
    kinds = [json.loads(l)["type"] for l in events.read_text().splitlines()]
    assert kinds[0] == "start" and kinds[-1] == "done" and "error" not in kinds


def test_cold_start_is_a_fresh_process_predicting_from_the_saved_folder(tiny_bert, tmp_path):
    from qtinker.quantize.formats import format_rows

    out, source = tmp_path / "q", tiny_bert(num_labels=2)
    metrics = quantize(fast(model=str(source), out=str(out), cold_start=True))
    # eager only without --compile: seconds from spawning Python to the first prediction, imports included
    for side in ("before", "after"):
        assert list(metrics[side]["cold_start_s"]) == ["eager"] and 0.5 < metrics[side]["cold_start_s"]["eager"] < 300
    assert json.loads((out / "metrics.json").read_text())["after"]["cold_start_s"] == metrics["after"]["cold_start_s"]
    rows = format_rows([(str(out), metrics)])
    assert [r["cold_start_s"] for r in rows] == [metrics["before"]["cold_start_s"]["eager"],
                                                 metrics["after"]["cold_start_s"]["eager"]]
    from qtinker.quantize.measure import cold_start_seconds

    (source / "model.safetensors").unlink()
    with pytest.raises(RuntimeError, match="model.safetensors|weights"):  # the child's last error line, for the warning
        cold_start_seconds(source, "torch")


def test_console_table_says_eager_int8_slower_than_float_needs_compile():
    from qtinker.quantize.recipe import format_metrics

    def side(size, eager_ms, **extra):
        return {"weights_bytes": size, "weights_bytes_without_embeddings": size, "cold_start_s": {"eager": 5.0},
                "latency": {"batch1_eager_ms": eager_ms, **extra, "seq": 128}}

    metrics = {"scheme": "int8-dynamic", "device": "cpu", "threads": 2, "output_cosine": 0.999,
               "before": side(400, 10.0, batch1_compiled_ms=8.0), "after": side(100, 30.0, batch1_compiled_ms=4.0),
               "ratios": {"size": 0.25, "size_without_embeddings": 0.25, "speedup_batch1_eager": 0.333,
                          "speedup_batch1_compiled": 2.0}}
    printed = format_metrics(metrics)
    assert "int8-dynamic eager is slower than float here: it needs torch.compile" in printed
    assert "cold start eager (s)" in printed and "0.33x speed" in printed and "2.00x speed" in printed
    metrics["after"]["latency"]["batch1_eager_ms"] = 9.0
    assert "needs torch.compile" not in format_metrics(metrics)


@pytest.mark.slow
def test_compiled_int8_uses_the_fused_onednn_kernel(tiny_bert):
    """Under our compile_context (freezing + TorchAO's x86 patterns), Inductor's generated code calls
    oneDNN's fused int8 linear instead of `_int_mm` followed by separate rescales. Found here: query, key
    and value share one activation quantization (Inductor merges the three identical ones), which the
    single-user fusion pattern does not match, so those three stay `_int_mm` per layer."""
    from torch._inductor.utils import run_and_get_code

    from qtinker.export import load_model
    from qtinker.quantize.latency import compile_context, compiled, example_inputs
    from qtinker.quantize.recipe import apply_plan

    model, _ = load_model(tiny_bert(num_labels=2))
    config = QuantizeConfig(scheme="int8-dynamic")
    quantized = apply_plan(model, plan_layers(model, config), config)
    with compile_context("cpu"), torch.no_grad():
        _, code = run_and_get_code(compiled(quantized), **example_inputs(model.config.vocab_size, 2, 16))
    torch._dynamo.reset()
    calls = [line.strip() for line in "\n".join(code).splitlines() if not line.strip().startswith("#")]
    fused = [c for c in calls if "= torch.ops.onednn.qlinear_pointwise" in c]
    unfused = [c for c in calls if "_int_mm(" in c]
    # 2 layers x (attention output, intermediate, output) + the pooler; the float classifier is not int8
    assert len(fused) == 7, fused
    assert len(unfused) <= 6, unfused  # at most query, key, value per layer


@pytest.mark.slow
def test_compiled_latency_is_measured(tiny_bert, tmp_path):
    metrics = quantize(QuantizeConfig(model=str(tiny_bert(num_labels=2)), out=str(tmp_path / "q"), latency_iters=2,
                                      cold_start=False))
    for side in ("before", "after"):
        assert metrics[side]["latency"]["batch16_compiled_ms"] > 0 and metrics[side]["latency"]["batch1_seq32_compiled_ms"] > 0
    assert metrics["ratios"]["speedup_batch16_compiled"] > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int4_on_cuda_quantizes_and_reloads(tiny_bert, tmp_path):
    model = tiny_bert(num_labels=2, hidden=128, heads=2, intermediate=256)
    out = tmp_path / "q4"
    metrics = quantize(fast(model=str(model), scheme="int4-weight", group_size=128, out=str(out), device="cuda"))
    assert json.loads((out / "quantization.json").read_text())["load_device"] == "cuda"
    assert metrics["output_cosine"] > 0.98 and metrics["reload_output_cosine"] > 0.999
    from qtinker.export import load_model

    with pytest.raises(QTinkerError, match="load on CUDA only"):
        load_model(out, device="cpu")


def test_verdict_says_the_run_in_one_line_like_with_like():
    from qtinker.quantize.formats import verdict

    def side(size, accuracy, **latency):
        return {"weights_bytes": size, "accuracy": accuracy, "latency": {**latency, "seq": 128}}

    compiled = {"scheme": "int8-dynamic",
                "before": side(400, 0.900, batch1_eager_ms=10.0, batch16_eager_ms=80.0,
                               batch1_compiled_ms=8.0, batch16_compiled_ms=64.0),
                "after": side(100, 0.899, batch1_eager_ms=30.0, batch16_eager_ms=200.0,
                              batch1_compiled_ms=4.0, batch16_compiled_ms=16.0)}
    # compiled against float compiled: geometric mean of 2x and 4x
    assert verdict(compiled) == "int8-dynamic: 4.0× smaller, 2.8× faster under compile, -0.1 pt"
    onnx = {"scheme": "onnx-int8", "runtime": "onnxruntime",
            "before": side(400, 0.9, batch1_eager_ms=10.0), "after": side(100, 0.9, batch1_eager_ms=2.0)}
    assert verdict(onnx) == "onnx-int8: 4.0× smaller, 5.0× faster, +0.0 pt"
    eager = {"scheme": "int8-weight-only", "before": side(400, None, batch1_eager_ms=10.0),
             "after": side(200, None, batch1_eager_ms=20.0)}
    assert verdict(eager) == "int8-weight-only: 2.0× smaller, 2.0× slower eager"
