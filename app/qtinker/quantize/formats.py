"""One table across formats from quantize runs on the same model and data, and the recommended format.

Columns: size, accuracy, agreement with float, latency at batch 1 (seq 128 and 32) and 16, and cold start (seconds from a
fresh process to the first prediction from the saved folder, compiling or session creation included).

Each quantize run's metrics.json holds the float model ("before") and its format ("after"), eager
and, for torch, compiled. The table lists each variant once, with the latency as measured (compiled
rows are compiled); the recommendation is the fastest variant within 0.5 accuracy point of float: fastest as the geometric mean
of its speedups over float eager at the timed shapes, so a format that wins at batch 1 but loses at batch 16
(compiled TorchAO on a small model) does not outrank one that wins at both.
TorchAO int8 in eager mode is usually slower than float on CPU (its speed needs torch.compile): such
a row is labelled, and never recommended.
"""

from __future__ import annotations

TOLERANCE_POINTS = 0.5


def format_rows(runs: list[tuple[str, dict]]) -> list[dict]:
    """runs: (output folder, metrics) of quantize runs of one model -> rows (float first)."""
    rows: list[dict] = []
    for index, (folder, metrics) in enumerate(runs):
        before, after = metrics["before"], metrics["after"]
        if index == 0:
            rows += _variants("float", "", before, runtime="torch")
        runtime = metrics.get("runtime", "torch")
        rows += _variants(metrics["scheme"], folder, after, runtime=runtime, float_eager=before["latency"])
    return rows


def _variants(name: str, folder: str, measured: dict, runtime: str, float_eager: dict | None = None) -> list[dict]:
    lat, cold = measured.get("latency", {}), measured.get("cold_start_s", {})
    base = {"folder": folder, "size_bytes": measured.get("weights_bytes"), "accuracy": measured.get("accuracy"),
            "agreement": measured.get("agreement"), "note": ""}
    if runtime == "onnxruntime":
        return [{**base, "format": name, **_timings(lat, cold, "eager")}]
    rows = [{**base, "format": f"{name} eager", **_timings(lat, cold, "eager")}]
    if float_eager and rows[0]["batch1_ms"] and float_eager.get("batch1_eager_ms") \
            and rows[0]["batch1_ms"] > float_eager["batch1_eager_ms"]:
        rows[0]["note"] = "needs torch.compile"  # slower than float when run eagerly: never the recommendation
    if lat.get("batch1_compiled_ms"):
        rows.append({**base, "format": f"{name} compiled", **_timings(lat, cold, "compiled"),
                     "note": "torch.compile (freezing)"})
    return rows


def _timings(lat: dict, cold: dict, kind: str) -> dict:
    """One variant's latencies (batch 1 at seq 128 and 32, batch 16) and cold start; ONNX's session is "eager"."""
    return {"batch1_ms": lat.get(f"batch1_{kind}_ms"), "batch1_seq32_ms": lat.get(f"batch1_seq32_{kind}_ms"),
            "batch16_ms": lat.get(f"batch16_{kind}_ms"), "cold_start_s": cold.get(kind)}


SHAPES = ("batch1_ms", "batch1_seq32_ms", "batch16_ms")


def speedup(row: dict, float_eager: dict | None) -> float | None:
    """How many times faster than float eager, as the geometric mean over the shapes both timed (batch 1 at
    seq 128 and 32, batch 16): a format that wins one short text but loses batches is not called fast."""
    if not float_eager:
        return None
    ratios = [float_eager[k] / row[k] for k in SHAPES if row.get(k) and float_eager.get(k)]
    if not ratios:
        return None
    product = 1.0
    for ratio in ratios:
        product *= ratio
    return product ** (1 / len(ratios))


def recommend(rows: list[dict], tolerance_points: float = TOLERANCE_POINTS) -> dict | None:
    """The fastest row (speedup over float eager across the timed shapes; batch 1 alone when float was not
    timed) whose accuracy is within tolerance of float's (all rows when no accuracy was measured); None when
    nothing was timed. Eager TorchAO int8 slower than float is never recommended."""
    reference = next((r["accuracy"] for r in rows if r["format"].startswith("float")), None)
    float_eager = next((r for r in rows if r["format"] == "float eager"), None)
    candidates = [r for r in rows if r.get("batch1_ms") and r["note"] != "needs torch.compile"
                  and (reference is None or r.get("accuracy") is None
                       or (r["accuracy"] - reference) * 100 >= -tolerance_points)]
    if float_eager and float_eager.get("batch1_ms"):
        return max(candidates, key=lambda r: speedup(r, float_eager) or 0.0, default=None)
    return min(candidates, key=lambda r: (r["batch1_ms"], r.get("batch16_ms") or 0), default=None)


def recommendation_line(rows: list[dict]) -> str:
    best = recommend(rows)
    if best is None:
        return "No recommendation yet: no format was timed."
    gain = speedup(best, next((r for r in rows if r["format"] == "float eager"), None))
    speed = f", {gain:.1f}x float eager over batch 1 and batch 16" if gain else ""
    cold = f", first prediction {best['cold_start_s']:.1f} s after a fresh start" if best.get("cold_start_s") else ""
    return (f"Recommended for this machine: {best['format']} (fastest within {TOLERANCE_POINTS} accuracy point of "
            f"float{speed}{cold}).")


def verdict(metrics: dict) -> str:
    """One quantize run in a line: "int8-dynamic: 3.9× smaller, 2.4× faster under compile, -0.1 pt".

    Size: float's weights over the format's. Speed: the geometric mean over the timed shapes, like with like
    (compiled against float compiled when both were compiled, else eager against float eager; ONNX's session
    against float eager). Accuracy: the change in points against float, when it was measured."""
    rows = format_rows([("", metrics)])
    by_format = {r["format"]: r for r in rows}
    scheme = metrics["scheme"]
    parts = []
    before, after = metrics["before"].get("weights_bytes"), metrics["after"].get("weights_bytes")
    if before and after:
        parts.append(f"{before / after:.1f}× smaller")
    if f"{scheme} compiled" in by_format and "float compiled" in by_format:
        gain, how = speedup(by_format[f"{scheme} compiled"], by_format["float compiled"]), " under compile"
    else:
        row = by_format.get(scheme) or by_format.get(f"{scheme} eager")
        gain, how = speedup(row, by_format.get("float eager")), "" if scheme in by_format else " eager"
    if gain:
        parts.append(f"{gain:.1f}× faster{how}" if gain >= 1 else f"{1 / gain:.1f}× slower{how}")
    acc_before, acc_after = metrics["before"].get("accuracy"), metrics["after"].get("accuracy")
    if acc_before is not None and acc_after is not None:
        points = round((acc_after - acc_before) * 100, 1)
        parts.append(f"{points:+.1f} pt")  # ASCII sign: a redirected Windows console log may be cp1252
    return f"{scheme}: " + (", ".join(parts) or "nothing measured")
