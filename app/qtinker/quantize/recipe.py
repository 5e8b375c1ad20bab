"""Quantize a BERT-family model with TorchAO 0.18 and measure it before and after.

`qtinker quantize MODEL --scheme int8-dynamic --out DIR [--eval-data test.csv]`

The run, top to bottom in `_quantize`: setup (the gate, the data, the float model) -> measure it (size,
accuracy, latency) -> `quantize_model_` (plan which layers get which TorchAO config, and which are skipped
and why, then `quantize_`) -> measure again on the same machine in the same process -> save into a
staging folder (safetensors + quantization.json), reload it and check the outputs match -> metrics.json
+ model card -> move it into place (quantize/output.py). `quantize_model_` is the same step without
files, for a model you already hold.

torchao enters only through `models.serialization.import_torchao`, always lazily (inside functions): importing
it prints extension-loading noise on CPU-only machines and costs a second.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from qtinker.core import fsutil
from qtinker.core.config import add_arguments, from_args
from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events
from qtinker.quantize.config import HEAD_NAMES, ONNX_SCHEMES, SCHEMES, QuantizeConfig
from qtinker.quantize.formats import verdict
from qtinker.quantize.measure import cold_starts
from qtinker.quantize.measure import measure_model as _measure
from qtinker.quantize.measure import output_cosine as _output_cosine
from qtinker.quantize.measure import public as _public
from qtinker.quantize.measure import ratios as _ratios
from qtinker.quantize.measure import warn_on_accuracy_loss, weights_bytes  # noqa: F401  (weights_bytes: bench's import)
from qtinker.quantize.output import finish_folder, staged_output
from qtinker.models.resolve import load_model, read_quantization, resolve_model
from qtinker.models.serialization import import_torchao


def available_schemes() -> dict[str, str | None]:
    """scheme -> None if it runs on this machine, else the reason (the UI greys it out)."""
    result: dict[str, str | None] = {"int8-dynamic": None, "int8-weight": None, "int4-weight": None}
    try:
        from qtinker.models.onnx_session import import_onnxruntime

        import_onnxruntime()
        result.update({s: None for s in ONNX_SCHEMES})
    except QTinkerError as exc:
        result.update({s: str(exc) for s in ONNX_SCHEMES})
    if not torch.cuda.is_available():
        result["int4-weight"] = ("int4-weight needs a CUDA GPU (TorchAO's int4 kernels are CUDA-only; its CPU int4 is a "
                                 "prototype whose weights cannot be saved as safetensors); on this machine use int8-dynamic "
                                 "(fastest on CPU) or int8-weight")
    elif torch.cuda.get_device_capability() < (8, 0):
        major, minor = torch.cuda.get_device_capability()
        result["int4-weight"] = (f"int4-weight needs a GPU with compute capability >= 8.0 (bf16 tinygemm); this one is "
                                 f"{major}.{minor}; use int8-dynamic or int8-weight")
    return result


def config_device(config: QuantizeConfig) -> str:
    return "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"


def _pick_device(config: QuantizeConfig) -> str:
    if config.scheme in ONNX_SCHEMES:
        if config.device == "cuda":
            raise QTinkerError(f"--scheme {config.scheme} --device cuda: QTinker's ONNX formats run on CPU "
                               "(CPUExecutionProvider); use --device cpu or auto")
        return "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise QTinkerError("--device cuda: no CUDA GPU is visible here; use --device cpu (or auto)")
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


# ---------------------------------------------------------------- the plan: which layer gets what

@dataclass(frozen=True)
class LayerPlan:
    name: str
    kind: str  # "linear" | "embedding"
    action: str  # "int8-dynamic" | "int8-weight" | "int4-weight" | "int8-rows" | "tied" | "float"
    reason: str = ""
    tied_to: str = ""  # the embedding whose weight a tied output layer shares


def plan_layers(model: torch.nn.Module, config: QuantizeConfig) -> list[LayerPlan]:
    """Every Linear and Embedding, with what happens to it and why (nothing is skipped silently)."""
    embedding_weights = {id(m.weight): n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    plans = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding):
            if config.embeddings == "int8":
                plans.append(LayerPlan(name, "embedding", "int8-rows"))
            else:
                plans.append(LayerPlan(name, "embedding", "float", "--embeddings none"))
        elif isinstance(module, torch.nn.Linear):
            tied_to = embedding_weights.get(id(module.weight))
            if tied_to is not None:
                if config.embeddings == "int8":
                    plans.append(LayerPlan(name, "linear", "tied", f"shares the int8 weight of {tied_to}", tied_to))
                else:
                    plans.append(LayerPlan(name, "linear", "float", f"weight tied to the float embedding {tied_to}"))
            elif name.split(".")[-1] in HEAD_NAMES and not config.quantize_head:
                plans.append(LayerPlan(name, "linear", "float", "task head kept in full precision (--quantize-head to change)"))
            elif config.scheme == "int4-weight" and module.in_features % config.group_size:
                plans.append(LayerPlan(name, "linear", "float",
                                       f"input width {module.in_features} is not divisible by group size {config.group_size}"))
            elif config.scheme == "int4-weight" and module.out_features < 8:
                plans.append(LayerPlan(name, "linear", "float", f"only {module.out_features} outputs; int4 tiles need >= 8"))
            else:
                plans.append(LayerPlan(name, "linear", config.scheme))
    return plans


def _torchao_config(action: str, config: QuantizeConfig):
    from torchao.quantization import (Int4WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig,
                                      Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerAxis)

    if action == "int8-dynamic":
        from torchao.utils import should_reduce_range

        # CPUs without VNNI can overflow int8 x int8 sums; TorchAO's helper says when to use 7-bit ranges.
        return Int8DynamicActivationInt8WeightConfig(reduce_range=should_reduce_range(torch.device(config_device(config))))
    if action == "int8-weight":
        return Int8WeightOnlyConfig()
    if action == "int4-weight":
        # The default "plain" packing needs the optional mslk package; tinygemm's tile-packed
        # format ships with torch (CUDA, bf16, SM80+) but pads in_features to a multiple of 1024.
        try:
            import mslk  # noqa: F401

            return Int4WeightOnlyConfig(group_size=config.group_size)
        except ImportError:
            from torchao.quantization.quantize_.workflows.int4.int4_packing_format import Int4PackingFormat

            return Int4WeightOnlyConfig(group_size=config.group_size,
                                        int4_packing_format=Int4PackingFormat.TILE_PACKED_TO_4D)
    if action == "int8-rows":
        return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    raise ValueError(action)


def fqn_config(plans: list[LayerPlan], config: QuantizeConfig):
    """The plan as one TorchAO FqnToConfig (layer name -> config); None when nothing is quantized."""
    import_torchao()
    from torchao.quantization import FqnToConfig

    mapping = {p.name: _torchao_config(p.action, config) for p in plans if p.action not in ("float", "tied")}
    return FqnToConfig(mapping) if mapping else None


def transformers_config(plans: list[LayerPlan], config: QuantizeConfig):
    """transformers' TorchAoConfig for the plan: written into config.json, it makes plain
    `from_pretrained(DIR)` rebuild the TorchAO tensors from model.safetensors."""
    from transformers import TorchAoConfig

    return TorchAoConfig(quant_type=fqn_config(plans, config),
                         modules_to_not_convert=[p.name for p in plans if p.action == "float"] or None,
                         include_input_output_embeddings=config.embeddings == "int8")


def apply_plan(model: torch.nn.Module, plans: list[LayerPlan], config: QuantizeConfig) -> torch.nn.Module:
    """quantize_ in place with one FqnToConfig, then re-tie output layers to their int8 embedding."""
    from torchao.quantization import quantize_

    fqn = fqn_config(plans, config)
    if fqn is not None:
        # filter_fn=None is required with FqnToConfig (the default Linear filter conflicts with it).
        quantize_(model, fqn, filter_fn=None)
    for source, target in tied_pairs(plans):
        _set_param(model, target, _get_module(model, source).weight)
    return model


def tied_pairs(plans: list[LayerPlan]) -> list[tuple[str, str]]:
    """(embedding, linear) pairs whose linear reuses the embedding's quantized weight."""
    return [(p.tied_to, p.name) for p in plans if p.action == "tied"]


def _get_module(model, name):
    return model.get_submodule(name) if name else model


def _set_param(model, module_name, weight):
    module = _get_module(model, module_name)
    module.weight = weight if isinstance(weight, torch.nn.Parameter) else torch.nn.Parameter(weight, requires_grad=False)


# ---------------------------------------------------------------- the run

def quantize(config: QuantizeConfig, events: Events | None = None) -> dict:
    """Quantize config.model into config.out; returns the metrics written to OUT/metrics.json.

    A full disk while saving ends as one line; nothing is left at OUT but the previous result, if any."""
    try:
        return _quantize(config, events)
    except QTinkerError:
        raise
    except Exception as exc:  # OSError, or a library's own error type around ENOSPC (safetensors, torch.save)
        if not fsutil.disk_full(exc) and not _says_disk_full(exc):
            raise
        out = Path(config.out).expanduser().resolve()
        free = shutil.disk_usage(next(p for p in out.parents if p.exists())).free / 2**20
        kept = "; the previous folder there is kept" if out.exists() else ""
        raise QTinkerError(f"{out}: the disk is full ({free:.0f} MB free) while saving the quantized model; "
                           f"free some space and run the command again{kept}") from exc


def _says_disk_full(exc: BaseException) -> bool:
    return any(text in str(exc) for text in ("No space left on device", "Disk quota exceeded", "StorageFull"))


def quantize_model_(model: torch.nn.Module, config: QuantizeConfig) -> list[LayerPlan]:
    """Quantize `model` in place with config's TorchAO scheme (one FqnToConfig through torchao's `quantize_`,
    tied output layers re-tied); returns the plan: what each Linear and Embedding became, and why. No files."""
    plans = plan_layers(model, config)
    apply_plan(model, plans, config)
    return plans


def _quantize(config: QuantizeConfig, events: Events | None = None) -> dict:
    """Quantize config.model into config.out; returns the metrics written to OUT/metrics.json."""
    from qtinker.export import package as export  # the save twin (the load twin: models.resolve)

    # --- setup: the gate, the data, the float model
    events = events or Events(echo=False)
    source, out, device = _check_run(config)
    torchao = import_torchao()
    events.emit("start", model=str(source), scheme=config.scheme, device=device, threads=torch.get_num_threads())
    data, model, tokenizer = _setup_model(config, source, device)
    dtype = next(model.parameters()).dtype

    # --- before
    events.log(f"measuring the float model on {device} ({torch.get_num_threads()} threads)")
    timing = "accuracy, then latency eager" + (" and compiled (compiling takes a while)" if config.compile else "")
    events.emit("progress", stage="measure-float", message=timing)
    before = _measure(model, tokenizer, data, config, device, events, "before")
    before["cold_start_s"] = cold_starts(source, "torch", config, device, events, "before")
    if config.scheme in ONNX_SCHEMES:  # export, fuse, (int8), measure, save: same gate, other runtime
        from qtinker.quantize.onnx_recipe import quantize_to_onnx

        return quantize_to_onnx(config, source, out, model, tokenizer, data, before, events)

    # --- quantize
    events.emit("progress", stage="quantize", message=config.scheme)
    quantized = copy.deepcopy(model)
    plans = quantize_model_(quantized, config)
    skipped = [{"name": p.name, "kind": p.kind, "reason": p.reason} for p in plans if p.action == "float"]
    for layer in skipped:
        events.emit("warning", message=f"left in full precision: {layer['name']} ({layer['reason']})")
    events.log(f"quantized {sum(p.action not in ('float',) for p in plans)} of {len(plans)} layers with {config.scheme}")

    # --- after
    events.emit("progress", stage="measure-quantized", message=timing)
    after = _measure(quantized, tokenizer, data, config, device, events, "after",
                     reference=before.get("predictions"))
    fidelity = _output_cosine(model, quantized, tokenizer, device)

    # --- save, reload, check
    events.emit("progress", stage="save", message="saving, reloading and comparing outputs")
    versions = {"torch": torch.__version__, "torchao": torchao.__version__, "transformers": _transformers_version()}
    with staged_output(out) as tmp:
        marker = {
            "scheme": config.scheme, "embeddings": config.embeddings,
            "group_size": config.group_size if config.scheme == "int4-weight" else None,
            "dtype": str(dtype).replace("torch.", ""), "load_device": "cuda" if config.scheme == "int4-weight" else "any",
            "quantized_on": device, **versions, "source": source.name,
            "skipped_layers": skipped, "tied": [list(p) for p in tied_pairs(plans)],
            "layers": {p.name: p.action for p in plans},
        }
        export.save_quantized(quantized, tokenizer, tmp, marker, transformers_config(plans, config))
        reloaded, _ = load_model(tmp, device=device)
        reload_cosine = _output_cosine(quantized, reloaded, tokenizer, device)
        if reload_cosine < 0.999:
            raise QTinkerError(f"{out}: the saved model reloads with different outputs (cosine {reload_cosine:.4f}); "
                               "this is a bug, please report it with the model folder")
        after["cold_start_s"] = cold_starts(tmp, "torch", config, device, events, "after")
        found = _ratios(before, after)
        metrics = {
            "scheme": config.scheme, "scheme_description": SCHEMES[config.scheme], "device": device,
            "threads": torch.get_num_threads(), "embeddings": config.embeddings,
            "before": _public(before), "after": _public(after),
            "ratios": found, "output_cosine": round(fidelity, 5),
            "reload_output_cosine": round(reload_cosine, 6),
            "accuracy_warning": warn_on_accuracy_loss(found, config.scheme, events),
            "skipped_layers": skipped, "quantized_layers": sum(p.action != "float" for p in plans),
            "versions": versions,
        }
        finish_folder(tmp, out, metrics, config, source, events)
    return metrics


def _check_run(config: QuantizeConfig) -> tuple[Path, Path, str]:
    """(source folder, OUT, device) once the run can start: before anything loads."""
    source = resolve_model(config.model)
    if not config.out:
        raise QTinkerError("--out: missing; name the folder for the quantized model, e.g. --out outputs/my-model-int8")
    out = Path(config.out).expanduser().resolve()
    if out.exists() and not config.overwrite:
        raise QTinkerError(f"{out}: already exists; choose another --out or pass --overwrite")
    reason = available_schemes().get(config.scheme, f"unknown scheme; choose one of {', '.join(SCHEMES)}")
    if reason:
        raise QTinkerError(f"--scheme {config.scheme}: {reason}")
    device = _pick_device(config)
    if config.scheme == "int4-weight" and device != "cuda":
        raise QTinkerError(f"--scheme int4-weight --device {device}: int4 runs on CUDA only; use --device cuda or int8-dynamic")
    return source, out, device


def _setup_model(config: QuantizeConfig, source: Path, device: str):
    """(eval data or None, the float model on `device` in the scheme's dtype, its tokenizer)."""
    data = None
    if config.eval_data:
        from qtinker.data.loaders import load_labelled

        data = load_labelled(config.eval_data)
    model, tokenizer = load_model(source, device="cpu")
    if read_quantization(source):
        raise QTinkerError(f"{source}: is already quantized; quantize the float model it came from")
    dtype = torch.bfloat16 if config.scheme == "int4-weight" else torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    if config.scheme in ONNX_SCHEMES:
        from qtinker.quantize.onnx import check_exportable

        check_exportable(model)  # before minutes of measuring
    return data, model, tokenizer


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# ---------------------------------------------------------------- CLI

def configure_quantize(parser) -> None:
    parser.add_argument("model", help=QuantizeConfig.__dataclass_fields__["model"].metadata["help"])
    add_arguments(parser, QuantizeConfig, skip=("model",))
    parser.add_argument("--events", default=None, help="Write progress events (JSON lines) to this file.")
    parser.add_argument("--stop-file", default=None, help="Stop (nothing is written) once this file exists; checked between measurements.")


def run_quantize(args) -> int:
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one line per event on the console, not bars
    config = from_args(QuantizeConfig, args)
    metrics = quantize(config, Events(args.events, echo=True, stop_file=args.stop_file))  # failures: cli.main
    print(format_metrics(metrics))
    print(f"saved to {Path(config.out).resolve()}  (load it with qtinker.load(...))")
    print(verdict(metrics))  # the last line: the run in a sentence
    return 0


def format_metrics(metrics: dict) -> str:
    """Before vs after as a small table for the console."""
    b, a, r = metrics["before"], metrics["after"], metrics["ratios"]
    mb = lambda n: f"{n / 1e6:.2f} MB"  # noqa: E731
    rows = [("weights (total)", mb(b["weights_bytes"]), mb(a["weights_bytes"]), f"x{r['size']:.3f}"),
            ("weights (no embeddings)", mb(b["weights_bytes_without_embeddings"]), mb(a["weights_bytes_without_embeddings"]),
             f"x{r['size_without_embeddings']:.3f}")]
    for key in ("accuracy", "macro_f1"):
        if key in a:
            rows.append((key, f"{b[key]:.4f}", f"{a[key]:.4f}", f"{(a[key] - b[key]) * 100:+.2f} pts"))
    if "agreement" in a:
        rows.append(("agreement with float", "", f"{a['agreement']:.4f}", ""))
    for key, value in a["latency"].items():
        if key.endswith("_ms"):
            rows.append((f"latency {key[:-3]} (ms)", f"{b['latency'].get(key, float('nan')):.2f}", f"{value:.2f}",
                         f"{r.get('speedup_' + key[:-3], float('nan')):.2f}x speed"))
    for kind, seconds in a.get("cold_start_s", {}).items():
        rows.append((f"cold start {kind} (s)", f"{b.get('cold_start_s', {}).get(kind, float('nan')):.2f}", f"{seconds:.2f}",
                     "fresh process"))
    lines = [f"{metrics['scheme']} on {metrics['device']}, {metrics['threads']} threads, seq {a['latency']['seq']}; "
             f"output cosine vs float {metrics['output_cosine']:.4f}",
             f"{'':26}{'before':>14}{'after':>14}{'change':>18}"]
    lines += [f"{name:26}{x:>14}{y:>14}{z:>18}" for name, x, y, z in rows]
    for layer in metrics.get("skipped_layers", []):
        lines.append(f"left in full precision: {layer['name']} ({layer['reason']})")
    if metrics.get("fused_operators"):
        lines.append("fused operators: " + ", ".join(f"{k} {v}" for k, v in metrics["fused_operators"].items() if v))
    if metrics.get("runtime", "torch") == "torch" and a["latency"].get("batch1_eager_ms", 0) > b["latency"].get("batch1_eager_ms", 1e9):
        lines.append(f"{metrics['scheme']} eager is slower than float here: it needs torch.compile (see the compiled rows; "
                     "the model card shows how), or choose onnx-int8")
    if metrics.get("accuracy_warning"):
        lines.append("WARNING: " + metrics["accuracy_warning"])
    return "\n".join(lines)
