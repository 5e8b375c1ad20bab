"""Typed run configs: one dataclass per run, help text on every field.

The help text feeds the CLI's --help (`add_arguments`) and the UI's `info=` (`field_help`).
Each run saves its config beside its results (`save_config`), so re-running means passing
that file back (`load_config`).

Run configs themselves live next to the run that uses them (distill.DistillConfig,
quantize.QuantizeConfig, ...) and are built with `option()` below.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from qtinker.core.errors import QTinkerError


def option(default: Any, help: str, *, choices: typing.Sequence[Any] | None = None, flag: str | None = None, **kwargs: Any):
    """A config field with its help text (and optional choices / CLI flag name)."""
    metadata = {"help": help, "choices": list(choices) if choices else None, "flag": flag}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def field_help(config_cls: type, name: str) -> str:
    """Help text of one field (for the UI's `info=`)."""
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


def field_choices(config_cls: type, name: str) -> list | None:
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return f.metadata.get("choices")
    raise KeyError(name)


def _base_type(tp: Any) -> Any:
    # Optional[X] / X | None -> X
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return args[0]
    return tp


def add_arguments(parser: argparse.ArgumentParser, config_cls: type, skip: typing.Iterable[str] = ()) -> None:
    """Add one --flag per dataclass field, help and choices included."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        tp = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": f"{help_text} (default: {default})"}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if tp in (int, float, str):
                kwargs["type"] = tp
            elif typing.get_origin(tp) in (list, tuple):
                kwargs["type"] = _list_parser(typing.get_args(tp)[0] if typing.get_args(tp) else str)
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(flag, **kwargs)


def _list_parser(item_type: type):
    def parse(text: str):
        try:
            return [item_type(x) for x in text.replace(" ", "").split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {item_type.__name__}, got {text!r}")

    return parse


def from_args(config_cls: type, args: argparse.Namespace, **overrides: Any):
    """Build a config from parsed CLI args (fields not on the namespace keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    values.update(overrides)
    return config_cls(**values)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(dataclasses.asdict(config), indent=2, default=str) + "\n", encoding="utf-8")


def load_config(config_cls: type, path: str | Path):
    """Read a saved config back; unknown fields are an error naming the field."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise QTinkerError(f"{path}: cannot read the config ({exc}); pass a config.json written by qtinker") from exc
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise QTinkerError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return config_cls(**values)
