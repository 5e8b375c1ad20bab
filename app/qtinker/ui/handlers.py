"""Handlers adapt between widgets and the library: no ML logic here."""

from __future__ import annotations

import pandas as pd

from qtinker.models.catalog import catalog_rows


def catalog_table() -> pd.DataFrame:
    rows = catalog_rows()
    return pd.DataFrame(
        [{
            "name": r["name"],
            "family": r["family"],
            "layers/hidden/heads": f"{r['layers']}/{r['hidden']}/{r['heads']}",
            "parameters": f"{r['parameters'] / 1e6:.1f}M",
            "fp32 size": r["fp32_size"],
            "sources": " + ".join("Google Cloud Storage" if s == "gcs" else "Hugging Face Hub" for s in r["sources"]),
            "present": "yes" if r["present"] else "",
        } for r in rows]
    )
