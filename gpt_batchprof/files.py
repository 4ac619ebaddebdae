"""User files in and out, strictly: one place that reads text, YAML and JSON, and writes files.

Reading: a file that is not UTF-8 text (or holds NUL bytes), a directory, duplicate keys in a
YAML or JSON mapping, and NaN / Infinity / out-of-range numbers in JSON all become one
:class:`BatchprofError` line naming the file. Writing: :func:`write_atomic` writes a
temporary file beside the target, fsyncs it and renames it over the target, so a full
disk or a crash never leaves a good file replaced by a truncated one.

No Typer or Rich here (the core uses it); ``yaml`` and ``json`` are imported inside the
functions so that importing this module stays cheap.
"""

from __future__ import annotations

import difflib
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

from gpt_batchprof.errors import BatchprofError

Payload = Union[str, bytes, Callable[[str], None]]


def read_text(path: Path | str, error: type[BatchprofError] = BatchprofError) -> str:
    """The file's text; a directory, an unreadable or a binary (non-UTF-8, NUL) file is refused."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a directory, not a file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}; a binary file?)") from None
    if "\x00" in text:
        raise error(f"{path}: not text (it holds NUL bytes; a binary file?)")
    return text


# --------------------------------------------------------------------------- YAML


def _strict_loader() -> type:
    import yaml

    # libyaml's parser where PyYAML was built with it: the GPU profiles carry ~3,000-cell tables,
    # which the pure-Python parser reads 5-10x slower
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[valid-type,misc]
        """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # unhashable key: the base constructor names it
                continue
            if dup:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return base.construct_mapping(loader, node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def load_yaml(path: Path | str, error: type[BatchprofError] = BatchprofError) -> Any:
    import yaml

    text = read_text(path, error)
    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{path}: malformed YAML{at}: {problem}") from None
    except RecursionError:
        raise error(f"{path}: malformed YAML: nested too deeply") from None


# --------------------------------------------------------------------------- JSON


class _JsonRefused(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _JsonRefused(f"duplicate key '{k}'")
        out[k] = v
    return out


def _constant(name: str) -> float:
    raise _JsonRefused(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _JsonRefused(f"number {text} is out of range")
    return v


def parse_json(text: str, where: str, error: type[BatchprofError] = BatchprofError) -> Any:
    """Strict JSON: duplicate keys, NaN, Infinity and overflowing numbers are refused."""
    import json

    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_finite)
    except json.JSONDecodeError as e:
        raise error(f"{where}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except _JsonRefused as e:
        raise error(f"{where}: malformed JSON: {e}") from None
    except RecursionError:
        raise error(f"{where}: malformed JSON: nested too deeply") from None


def load_json(path: Path | str, error: type[BatchprofError] = BatchprofError) -> Any:
    return parse_json(read_text(path, error), str(path), error)


# --------------------------------------------------------------------------- keys


MISSPELT = 0.85  # difflib ratio of a near-certain typo: n_layers/n_layer 0.93, kinds/kind 0.89


def closest(word: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    found = difflib.get_close_matches(word, list(known), n=1, cutoff=cutoff)
    return found[0] if found else None


def unknown_key_error(where: str, key: Any, known: Iterable[str],
                      error: type[BatchprofError] = BatchprofError) -> BatchprofError:
    near = closest(str(key), known)
    hint = f"; did you mean '{near}'?" if near else f" (known: {', '.join(sorted(known))})"
    return error(f"{where}: unknown field '{key}'{hint}")


class ReadKeys(Mapping[str, Any]):
    """A read-only view of a mapping that remembers which keys the loader asked for.

    The loaders stay the one list of the fields they read: whatever they never asked for
    is a key the file should not have (see :func:`checked_keys`).
    """

    def __init__(self, data: Mapping[str, Any]):
        self._data = data
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def unread(self) -> list[Any]:
        return [k for k in self._data if k not in self.asked]


KeyCheck = Callable[[Mapping[str, Any], ReadKeys, str, bool], None]


def reading_keys(check: KeyCheck) -> Callable:
    """Decorator for ``loader(data, where, ...)``: the loader reads ``data`` through a
    :class:`ReadKeys` view, then ``check(data, view, where, failed)`` runs, also when the loader
    raised a :class:`BatchprofError` (``failed=True``; the loader's own error follows unless
    ``check`` raises a better one)."""
    import functools

    def wrap(loader: Callable) -> Callable:
        @functools.wraps(loader)
        def run(data: Any, where: str, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(data, Mapping):
                return loader(data, where, *args, **kwargs)
            view = ReadKeys(data)
            try:
                out = loader(view, where, *args, **kwargs)
            except BatchprofError:
                check(data, view, where, True)
                raise
            check(data, view, where, False)
            return out

        return run

    return wrap


def checked_keys(error: type[BatchprofError]) -> Callable:
    """Decorator for a profile loader: refuse keys of the mapping it never read, naming the
    closest key it does read ("did you mean n_kv_head?")."""

    def check(data: Mapping[str, Any], view: ReadKeys, where: str, failed: bool) -> None:
        if failed:
            # a misspelt required key reads better as a misspelling than as "missing"
            absent = [k for k in view.asked if k not in data]  # asked for, not there
            for key in view.unread():
                if closest(str(key), absent, cutoff=MISSPELT) is not None:
                    raise unknown_key_error(where, key, absent, error) from None
            return
        extra = view.unread()
        if extra:
            raise unknown_key_error(where, extra[0], view.asked, error)

    return reading_keys(check)


# --------------------------------------------------------------------------- writing


def write_atomic(path: Path | str, data: Payload) -> Path:
    """Write ``data`` to ``path`` all or nothing: a temporary file beside it, fsync, rename.

    ``data``: text (UTF-8), bytes, or a function that writes the file at the path it is given
    (for writers that want a path, like matplotlib's ``savefig``). On any failure the
    temporary file is removed, the old file is left as it was, and one line is raised.
    """
    shown = path = Path(path)
    if path.is_dir():
        raise BatchprofError(f"{path}: is a directory, not a file")
    if path.exists() and not stat.S_ISREG(os.stat(path).st_mode):
        return _write_special(path, data)  # /dev/stdout, a FIFO, /dev/null: nothing to rename over
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # replace the file the link points at, keep the link
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, str):
                fh.write(data.encode("utf-8"))
            elif isinstance(data, bytes):
                fh.write(data)
        if callable(data):
            data(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if os.path.getsize(tmp) == 0 and not (isinstance(data, (str, bytes)) and not data):
            raise BatchprofError(f"{shown}: nothing was written (kept the old file)")
        try:
            mode = os.stat(path).st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise BatchprofError(f"{shown}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return shown


def _write_special(path: Path, data: Payload) -> Path:
    """A device or pipe named as the output: written in place (there is no file to keep)."""
    try:
        if callable(data):
            data(str(path))
            return path
        with open(path, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
    except OSError as e:
        raise BatchprofError(f"{path}: cannot write ({e.strerror or e})") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- checking before work


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_folder(folder: Path, shown: str) -> None:
    """Create and remove a file in ``folder``: the one test that also catches read-only mounts,
    quotas and ACLs (os.access answers for the permission bits only, and yes to root)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gpt-batchprof-probe.", dir=folder)
    except OSError as e:
        raise BatchprofError(f"{shown}: cannot write into {folder} ({e.strerror or e})") from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def check_writable_file(path: Path | str, option: str) -> None:
    """Refuse, before any work, an output file that could not be written later: a directory, a
    path under a file, or a folder that does not take new files (write_atomic writes a temporary
    file beside the target). Devices and pipes (/dev/stdout, a FIFO) are left to the writer."""
    path = Path(path)
    shown = f"{option} {path}"
    if path.is_dir():
        raise BatchprofError(f"{shown}: is a directory, not a file")
    if path.exists() and not stat.S_ISREG(os.stat(path).st_mode):
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise BatchprofError(f"{shown}: {folder} is a file, not a folder")
    _probe_folder(folder, shown)


def check_writable_folder(path: Path | str, option: str) -> None:
    """Refuse, before any work, an output folder that is a file or does not take new files."""
    path = Path(path)
    shown = f"{option} {path}"
    if path.exists() and not path.is_dir():
        raise BatchprofError(f"{shown}: is a file, not a folder")
    folder = _nearest_existing(path)
    if not folder.is_dir():
        raise BatchprofError(f"{shown}: {folder} is a file, not a folder")
    _probe_folder(folder, shown)
