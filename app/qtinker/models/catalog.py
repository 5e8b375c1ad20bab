"""The model catalog, as data in one place: every BERT-family model QTinker can fetch.

Sources: google-research/bert README (Cloud Storage paths), the Hugging Face Hub mirrors
(../shared/notes/bert-sources.md). Parameter counts are computed from the shapes (encoder,
embeddings and pooler; the pre-training heads are not counted), so sizes are exact rather
than the rounded README labels: BERT-Large is 335M parameters, 1.34 GB in fp32.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass

from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import human_bytes
from qtinker.models.resolve import is_model_folder

GCS_DEFAULT_BASE = "https://storage.googleapis.com"

# vocabulary sizes of the released checkpoints
UNCASED_EN, CASED_EN, MULTI_CASED, MULTI_UNCASED, CHINESE = 30522, 28996, 119547, 105879, 21128


@dataclass(frozen=True)
class CatalogModel:
    name: str
    family: str  # "bert", "bert-miniature", "distilbert", "tinybert", "minilm"
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    lower_case: bool  # tokenizer do_lower_case: False for every cased model
    hub_id: str
    gcs_path: str | None = None  # under <base>/bert_models/
    description: str = ""
    tokenize_chinese_chars: bool = True
    strip_accents: bool | None = None  # None: follow lower_case (HF BertTokenizer default)

    @property
    def parameters(self) -> int:
        """Embeddings + encoder (+ pooler for BERT); MLM/NSP heads not counted."""
        h, i = self.hidden, self.intermediate
        embeddings = self.vocab_size * h + 512 * h + 2 * h  # word + position + LayerNorm
        if self.family != "distilbert":
            embeddings += 2 * h  # token types (DistilBERT has none)
        layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
        pooler = 0 if self.family == "distilbert" else h * h + h
        return embeddings + self.layers * layer + pooler

    @property
    def fp32_bytes(self) -> int:
        return self.parameters * 4

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden

    def gcs_url(self, base: str | None = None) -> str | None:
        if not self.gcs_path:
            return None
        base = (base or os.environ.get("QTINKER_GCS_BASE_URL") or GCS_DEFAULT_BASE).rstrip("/")
        return f"{base}/bert_models/{self.gcs_path}"

    @property
    def sources(self) -> list[str]:
        return (["gcs"] if self.gcs_path else []) + ["hf"]


def _bert(name, layers, hidden, heads, vocab, lower, hub, gcs, desc, **kw) -> CatalogModel:
    return CatalogModel(name, "bert", layers, hidden, heads, 4 * hidden, vocab, lower, hub, gcs, desc, **kw)


def _miniatures() -> list[CatalogModel]:
    """Turc et al. 2019 ("Well-Read Students Learn Better"): L x H grid, heads H/64, FFN 4H."""
    named = {(2, 128): "bert-tiny", (4, 256): "bert-mini", (4, 512): "bert-small", (8, 512): "bert-medium"}
    models = []
    for layers in (2, 4, 6, 8, 10, 12):
        for hidden in (128, 256, 512, 768):
            heads = hidden // 64
            stem = f"uncased_L-{layers}_H-{hidden}_A-{heads}"
            name = named.get((layers, hidden), f"bert-uncased-L{layers}-H{hidden}")
            models.append(CatalogModel(
                name, "bert-miniature", layers, hidden, heads, 4 * hidden, UNCASED_EN, True,
                f"google/bert_{stem}", f"2020_02_20/{stem}.zip",
                f"Google miniature BERT {layers}/{hidden} (uncased), pre-trained with distillation in mind",
            ))
    return models


CATALOG: tuple[CatalogModel, ...] = (
    _bert("bert-large-uncased", 24, 1024, 16, UNCASED_EN, True, "google-bert/bert-large-uncased",
          "2018_10_18/uncased_L-24_H-1024_A-16.zip", "BERT-Large, uncased English"),
    _bert("bert-large-cased", 24, 1024, 16, CASED_EN, False, "google-bert/bert-large-cased",
          "2018_10_18/cased_L-24_H-1024_A-16.zip", "BERT-Large, cased English"),
    _bert("bert-large-uncased-wwm", 24, 1024, 16, UNCASED_EN, True, "google-bert/bert-large-uncased-whole-word-masking",
          "2019_05_30/wwm_uncased_L-24_H-1024_A-16.zip", "BERT-Large, uncased, whole-word masking"),
    _bert("bert-large-cased-wwm", 24, 1024, 16, CASED_EN, False, "google-bert/bert-large-cased-whole-word-masking",
          "2019_05_30/wwm_cased_L-24_H-1024_A-16.zip", "BERT-Large, cased, whole-word masking"),
    _bert("bert-base-uncased", 12, 768, 12, UNCASED_EN, True, "google-bert/bert-base-uncased",
          "2018_10_18/uncased_L-12_H-768_A-12.zip", "BERT-Base, uncased English"),
    _bert("bert-base-cased", 12, 768, 12, CASED_EN, False, "google-bert/bert-base-cased",
          "2018_10_18/cased_L-12_H-768_A-12.zip", "BERT-Base, cased English"),
    _bert("bert-multilingual-cased", 12, 768, 12, MULTI_CASED, False, "google-bert/bert-base-multilingual-cased",
          "2018_11_23/multi_cased_L-12_H-768_A-12.zip", "BERT-Base multilingual, cased, 104 languages (recommended)",
          strip_accents=False),
    _bert("bert-multilingual-uncased", 12, 768, 12, MULTI_UNCASED, True, "google-bert/bert-base-multilingual-uncased",
          "2018_11_03/multilingual_L-12_H-768_A-12.zip", "BERT-Base multilingual, uncased, 102 languages (not recommended upstream)"),
    _bert("bert-chinese", 12, 768, 12, CHINESE, False, "google-bert/bert-base-chinese",
          "2018_11_03/chinese_L-12_H-768_A-12.zip", "BERT-Base, Chinese (simplified and traditional), character-level"),
    *_miniatures(),
    CatalogModel("distilbert-base-uncased", "distilbert", 6, 768, 12, 3072, UNCASED_EN, True,
                 "distilbert/distilbert-base-uncased", None, "DistilBERT (Sanh et al. 2019), uncased English"),
    CatalogModel("distilbert-base-cased", "distilbert", 6, 768, 12, 3072, CASED_EN, False,
                 "distilbert/distilbert-base-cased", None, "DistilBERT, cased English"),
    CatalogModel("distilbert-base-multilingual-cased", "distilbert", 6, 768, 12, 3072, MULTI_CASED, False,
                 "distilbert/distilbert-base-multilingual-cased", None, "DistilBERT multilingual, cased", strip_accents=False),
    CatalogModel("tinybert-general-4l-312d", "tinybert", 4, 312, 12, 1200, UNCASED_EN, True,
                 "huawei-noah/TinyBERT_General_4L_312D", None, "TinyBERT general distillation, 4 layers, 312 wide"),
    CatalogModel("tinybert-general-6l-768d", "tinybert", 6, 768, 12, 3072, UNCASED_EN, True,
                 "huawei-noah/TinyBERT_General_6L_768D", None, "TinyBERT general distillation, 6 layers, 768 wide"),
    CatalogModel("minilm-l12-h384-uncased", "minilm", 12, 384, 12, 1536, UNCASED_EN, True,
                 "microsoft/MiniLM-L12-H384-uncased", None, "MiniLM (Wang et al. 2020), 12 layers, 384 wide"),
    CatalogModel("minilm-l6-h384-uncased", "minilm", 6, 384, 12, 1536, UNCASED_EN, True,
                 "nreimers/MiniLM-L6-H384-uncased", None, "MiniLM 6 layers, 384 wide (first 6 layers of MiniLM-L12)"),
    CatalogModel("all-minilm-l6-v2", "minilm", 6, 384, 12, 1536, UNCASED_EN, True,
                 "sentence-transformers/all-MiniLM-L6-v2", None, "all-MiniLM-L6-v2 sentence encoder (BERT architecture)"),
)

_BY_NAME = {m.name: m for m in CATALOG}


def get_model(name: str) -> CatalogModel:
    """Catalog entry by name; an unknown name is an error listing close matches."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    import difflib

    close = difflib.get_close_matches(name, list(_BY_NAME), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run `qtinker models` to list them"
    raise QTinkerError(f"unknown model {name!r}: {hint}")


def catalog_rows(models_dir=None) -> list[dict]:
    """One dict per catalog model, with computed size and local presence (for CLI, UI, JSON)."""
    from qtinker.core import paths

    root = models_dir or paths.models_dir()
    rows = []
    for m in CATALOG:
        row = asdict(m)
        row.update(
            parameters=m.parameters,
            fp32_bytes=m.fp32_bytes,
            fp32_size=human_bytes(m.fp32_bytes),
            embedding_share=round(m.embedding_parameters / m.parameters, 3),
            gcs_url=m.gcs_url(),
            sources=m.sources,
            present=is_model_folder(root / m.name),
        )
        rows.append(row)
    return rows


def configure_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="emit the catalog as JSON (for scripts)")
    parser.add_argument("--models-dir", default=None, help="models folder to check for presence (default: bert_models/)")


def run_models(args: argparse.Namespace) -> int:
    from pathlib import Path

    rows = catalog_rows(Path(args.models_dir) if args.models_dir else None)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':34} {'family':15} {'L/H/A':12} {'params':>8} {'fp32':>9}  {'sources':8} present"
    print(header)
    print("-" * len(header))
    for r in rows:
        shape = f"{r['layers']}/{r['hidden']}/{r['heads']}"
        print(f"{r['name']:34} {r['family']:15} {shape:12} {r['parameters'] / 1e6:7.1f}M {r['fp32_size']:>9}  "
              f"{'+'.join(r['sources']):8} {'yes' if r['present'] else '-'}")
    print(f"\n{len(rows)} models. Download one with: qtinker download NAME [--source gcs|hf]")
    return 0
