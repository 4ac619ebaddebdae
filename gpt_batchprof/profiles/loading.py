"""Built-in profiles (``profiles/models``, ``profiles/hardware``) and profile files by path:
YAML, or a Hugging Face ``config.json`` for models. ``yaml`` and ``json`` are imported inside the
loaders so that importing this module (and :mod:`gpt_batchprof.analytic`) stays cheap."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from gpt_batchprof import files
from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles.hf import model_from_hf_config
from gpt_batchprof.profiles.schema import hardware_from_mapping, model_from_mapping
from gpt_batchprof.profiles.specs import HardwareSpec, ModelSpec


def builtin_dir() -> Path:
    """Where the built-in profiles are: inside the installed package, else the source tree."""
    env = os.environ.get("GPT_BATCHPROF_PROFILES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent  # gpt_batchprof/
    for cand in (here / "_profiles", here.parent / "profiles"):
        if (cand / "models").is_dir():
            return cand
    return here.parent / "profiles"


def builtin_names(kind: str) -> list[str]:
    d = builtin_dir() / kind
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _parse_yaml(path: Path) -> Any:
    return files.load_yaml(path, ProfileError)


def _parse_json(path: Path) -> Any:
    return files.load_json(path, ProfileError)


def _resolve(kind: str, ref: str) -> Path:
    """A built-in name or a path to a file; unknown names get the closest suggestions."""
    p = Path(ref).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        hint = f" (use {p / 'config.json'})" if (p / "config.json").is_file() else ""
        raise ProfileError(f"{ref}: is a directory, not a {kind.rstrip('s')} profile file{hint}")
    looks_like_path = os.sep in ref or ref.endswith((".yaml", ".yml", ".json"))
    if looks_like_path:
        raise ProfileError(f"{ref}: no such file")
    builtin = builtin_dir() / kind / f"{ref}.yaml"
    if builtin.is_file():
        return builtin
    names = builtin_names(kind)
    prefixed = [n for n in names if n.startswith(ref)]
    close = (prefixed + [n for n in difflib.get_close_matches(ref, names, n=3, cutoff=0.5) if n not in prefixed])[:3]
    hint = f"; did you mean {', '.join(close)}?" if close else f"; built-in: {', '.join(names)}"
    raise ProfileError(f"unknown {kind.rstrip('s')} '{ref}' (not a built-in name or an existing file){hint}")


def load_model(ref: str) -> ModelSpec:
    """``ref``: built-in name, model YAML path, or Hugging Face config.json path."""
    path = _resolve("models", ref)
    if path.suffix == ".json":
        name = path.parent.name if path.name == "config.json" else path.stem
        return model_from_hf_config(_parse_json(path), str(path), name or "hf-model")
    data = _parse_yaml(path)
    if isinstance(data, Mapping) and "model_type" in data and "n_layer" not in data:
        return model_from_hf_config(data, str(path), path.stem)
    return model_from_mapping(data, str(path), source=str(path))


def hardware_path(ref: str) -> Path:
    """The file a hardware reference (built-in name or path) resolves to."""
    return _resolve("hardware", ref)


def load_hardware(ref: str) -> HardwareSpec:
    path = _resolve("hardware", ref)
    return hardware_from_mapping(_parse_yaml(path), str(path), source=str(path))


def _load_all(kind: str, loader: Callable[[str], Any]) -> list[Any]:
    return [loader(n) for n in builtin_names(kind)]


def all_models() -> list[ModelSpec]:
    return _load_all("models", load_model)


def all_hardware() -> list[HardwareSpec]:
    return _load_all("hardware", load_hardware)
