"""Reading params.yaml and the small validator behind every section: a dataclass's fields and type hints are its
schema, and a mistake (unknown key, wrong type, value out of range) is one `PipelineError` naming the key and what
is allowed, e.g. ``params.yaml: train.lr: must be > 0, got -1``."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core import layout
from pipeline.core.errors import PipelineError

# The sections of params.yaml; each has its module in this package (`data` holds data, sbd, dataset and prepare).
SECTIONS = ("data", "sbd", "dataset", "prepare", "train", "models", "inference", "evaluate", "export", "serving",
            "render", "tracking")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a dataset's or a model's name: it names runs and registered models


def limits(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> dict:
    """A field's `metadata` for a number in [low, high] (or open at either end)."""
    return {"low": low, "high": high, "low_open": low_open, "high_open": high_open}


class ParamsFile:
    """params.yaml read once: each stage types the sections it reads (`section`) and nothing else."""

    def __init__(self, raw: Any, source: str = "params.yaml") -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise PipelineError(f"{source}: must be a mapping of sections, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(SECTIONS))
        if unknown:  # a misspelt section would otherwise leave every key of the real one at its default
            raise PipelineError(f"{source}: {unknown[0]}: unknown key; allowed keys here: {', '.join(SECTIONS)}")
        self.raw = raw
        self.source = source

    @classmethod
    def read(cls, path: str | Path = "params.yaml") -> ParamsFile:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise PipelineError(f"{path}: not found; run from the repository root or pass --params") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise PipelineError(f"{where}: not valid YAML: {problem}") from None
        return cls(raw, str(path))

    def section(self, key: str, cls: type, raw: Any = None) -> Any:
        """Section `key` (or `raw` in its place) as `cls`, with the file named in any message."""
        with self.naming_errors():
            return build(cls, self.raw.get(key) if raw is None else raw, key)

    def naming_errors(self) -> _Prefixed:
        """A context in which a `PipelineError` gets the file's name in front."""
        return _Prefixed(self.source)

    def model_keys(self) -> list[str]:
        models = self.raw.get("models")
        if not isinstance(models, dict) or not models:
            raise PipelineError(f"{self.source}: models: at least one model must be listed (a mapping of names "
                                "to their architecture and options)")
        return list(models)

    def model_key(self, name: str) -> str:
        """The `models` key for `name`, matched case-insensitively so that the tutorial's `-m FCN` works."""
        keys = self.model_keys()
        for key in keys:
            if key.lower() == name.lower():
                return key
        raise PipelineError(f"unknown model {name!r}: {self.source} lists {', '.join(keys)}")

    def dataset_name(self) -> str:
        """`dataset.name`, which names the MLflow experiment and the registered models (default voc; with a
        `preset` and no name of its own, the preset's, which is the preset's key: pipeline/core/presets.py)."""
        dataset = self.raw.get("dataset") or {}
        name = dataset.get("name", "voc") if isinstance(dataset, dict) else "voc"
        preset = dataset.get("preset") if isinstance(dataset, dict) else None
        if isinstance(preset, str) and name == "voc":
            name = preset
        with self.naming_errors():
            return check_name(name, "dataset.name")


class _Prefixed:
    def __init__(self, source: str) -> None:
        self.source = source

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, _traceback) -> None:
        if isinstance(error, PipelineError) and not str(error).startswith(f"{self.source}: "):
            raise PipelineError(f"{self.source}: {error}") from None


def source_origin(path: str, urls: list[str]) -> str:
    """Where a dataset's files came from, as a run records it: its own directory `path`, or, when `path` is the
    archive's extraction (data/source), the archive's first URL."""
    return path if Path(path) != layout.SOURCE or not urls else urls[0]


def check_sha256(value: str, key: str) -> str:
    """A pinned file's sha256: 64 hexadecimal digits (either case)."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise PipelineError(f"{key}: must be 64 hexadecimal digits, got {value!r}")
    return value


def check_name(name: Any, key: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise PipelineError(f"{key}: must be letters, digits, '_', '.' or '-' (it names the MLflow experiment and "
                            f"registered models), got {name!r}")
    return name


def as_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """`{"train.lr": 0.01, ...}`: the form MLflow logs params in."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(as_flat_dict(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def build(cls: type, raw: Any, where: str) -> Any:
    """`raw` (a mapping, or None for every default) as the dataclass `cls`; `where` is its key in params.yaml."""
    label = where or "top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PipelineError(f"{label}: must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    # A field's key in params.yaml is its name, or its metadata's "key" where the name cannot be (`from`).
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        moved = getattr(cls, "MOVED", {}).get(unknown[0])  # a key that lives in another section now
        if moved:
            raise PipelineError(f"{key}: moved to {moved}; move it there")
        raise PipelineError(f"{key}: unknown key; allowed keys here: {', '.join(fields)}")
    values = {}
    for name, spec in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in raw:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise PipelineError(f"{key}: missing (required)")
            continue
        values[spec.name] = check(hints[spec.name], raw[name], key, spec.metadata)
    try:
        return cls(**values)
    except PipelineError as error:
        raise PipelineError(f"{where}.{error}" if where else str(error)) from None


def check(hint: Any, value: Any, key: str, meta: Any = None) -> Any:
    """`value` checked against the type `hint` (and the field's `limits`), converted where YAML reads loosely."""
    meta = meta or {}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for alternative in inner:  # the first that takes the value: `Literal["auto"] | list[float]`
            try:
                return check(alternative, value, key, meta)
            except PipelineError as error:
                errors.append(str(error))
        if len(errors) == 1:
            raise PipelineError(errors[0])
        allowed = " or ".join([*map(_describe, inner), *(["null"] if type(None) in args else [])])
        raise PipelineError(f"{key}: must be {allowed}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise PipelineError(f"{key}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise PipelineError(f"{key}: must be a list, got {value!r}")
        return [check(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"{key}: must be a mapping, got {value!r}")
        if args[1] is Any:
            return dict(value)
        return {str(k): check(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise PipelineError(f"{key}: must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        ok = isinstance(value, int) if hint is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not math.isfinite(value):
            raise PipelineError(f"{key}: must be {'an integer' if hint is int else 'a finite number'}, got {value!r}")
        _check_limits(value, key, meta)
        return hint(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise PipelineError(f"{key}: must be a non-empty string, got {value!r}")
        return value
    raise TypeError(f"params schema: unsupported type {hint} at {key}")


def _describe(hint: Any) -> str:
    """A type as a message says it: `auto`, `a list`, `a mapping`."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " or ".join(map(str, typing.get_args(hint)))
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _check_limits(value: float, key: str, meta: Any) -> None:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("low_open") else value < low):
        raise PipelineError(f"{key}: must be {'>' if meta.get('low_open') else '>='} {low}, got {value}")
    if high is not None and (value >= high if meta.get("high_open") else value > high):
        raise PipelineError(f"{key}: must be {'<' if meta.get('high_open') else '<='} {high}, got {value}")
