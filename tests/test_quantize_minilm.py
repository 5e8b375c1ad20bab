"""Integration: the real all-MiniLM-L6-v2, fine-tuned on the bundled dataset (conftest's
`minilm_classifier`), quantized int8-dynamic.

Weights (embeddings included) <= 30% of fp32, a fresh process reloads it through qtinker.load with
matching outputs (cosine >= 0.99), and it loses <= 1 accuracy point on the bundled eval set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.slow

TEXTS = ["In the beginning God created the heaven and the earth.",
         "Blessed are the meek: for they shall inherit the earth.",
         "And the king said unto Nathan, go and do all that is in thine heart."]


def test_minilm_int8_dynamic_shrinks_reloads_and_keeps_accuracy(minilm_classifier, tmp_path):
    classifier = minilm_classifier  # conftest: MiniLM fine-tuned on the bundled dataset, shared by the slow tests
    from qtinker.data import sample_eval_path
    from qtinker.export import load_model
    from qtinker.quantize import QuantizeConfig, quantize

    out = tmp_path / "minilm-int8"
    metrics = quantize(QuantizeConfig(model=str(classifier), scheme="int8-dynamic", out=str(out),
                                      eval_data=str(sample_eval_path()), compile=False, latency_iters=2,
                                      cold_start=False))
    before, after = metrics["before"], metrics["after"]
    assert after["weights_bytes"] <= 0.30 * before["weights_bytes"]
    assert before["accuracy"] - after["accuracy"] <= 0.01, (before["accuracy"], after["accuracy"])
    assert after["agreement"] >= 0.95

    code = textwrap.dedent(f"""
        import json, torch, qtinker
        model, tok = qtinker.load({str(out)!r})
        with torch.inference_mode():
            logits = model(**tok({TEXTS!r}, padding=True, return_tensors="pt")).logits
        print("RESULT" + json.dumps(logits.tolist()))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reloaded = torch.tensor(json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))[6:]))
    model, tok = load_model(classifier)
    with torch.inference_mode():
        reference = model(**tok(TEXTS, padding=True, return_tensors="pt")).logits
    assert torch.nn.functional.cosine_similarity(reloaded, reference).min() >= 0.99
