"""Reading manifests the way ``kubectl apply -f`` does: files, directories, stdin, lists.

Each object comes out with where it was found (``web.yaml#2``, ``pods.yaml#1.items[3]``),
so a CI log points at the document to fix. Problems the user can fix (a path that does
not exist, YAML that does not parse or that JSON cannot hold, an alias bomb) raise
:class:`ManifestError` with one line that
names the file and the place; a document that parses but is not an object is handed on
as it is, for the caller to report as invalid next to the others.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policies.yaml_values import AliasCycle, measure

#: The extensions ``kubectl apply -f DIR`` reads; other files in a directory are ignored.
MANIFEST_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
STDIN = "-"

try:
    from yaml import CSafeLoader as _Base
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _Base  # type: ignore[assignment]
#: Aliases may make a document at most this many times larger than its text, and this
#: many values in all: beyond, it is an alias bomb (kubectl's YAML parser refuses those).
ALIAS_GROWTH, ALIAS_VALUES = 10, 1_000_000
_YAML_ONLY: dict[type, str] = {bytes: "!!binary", set: "!!set", tuple: "!!omap or !!pairs"}


class _Loader(_Base):
    """YAML as kubectl reads it into JSON: an unquoted date or time stays a string."""


def _as_written(loader: _Loader, node: yaml.Node) -> str:
    return str(node.value)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_written)


class ManifestError(Exception):
    """The input cannot be read as manifests; the message is one line with the place."""


@dataclass(frozen=True)
class Document:
    """One object to review, and where it came from."""

    source: str
    obj: Any


def read_manifests(paths: Sequence[str], *, recursive: bool = False) -> Iterator[Document]:
    """Every object in ``paths``, in order: files as given, directories sorted by name.

    ``-`` is standard input (once). Multi-document YAML and JSON are read document by
    document; a ``kind: List`` (what ``kubectl get -o yaml`` prints) is opened into its
    items. Empty documents are skipped, as kubectl does.
    """
    if list(paths).count(STDIN) > 1:
        raise ManifestError("standard input (-f -) can be given only once")
    for given in paths:
        if given == STDIN:
            yield from _documents(sys.stdin.read(), "(stdin)")
            continue
        path = Path(given)
        if path.is_dir():
            files = _directory_files(path, recursive)
            if not files:
                raise ManifestError(
                    f"{given}: no .yaml, .yml or .json files"
                    + ("" if recursive else " (use -R to read subdirectories)")
                )
            for file in files:
                yield from _documents(_read(file), str(file))
        elif path.exists():
            yield from _documents(_read(path), given)
        else:
            raise ManifestError(f"{given}: no such file or directory")


def _directory_files(directory: Path, recursive: bool) -> list[Path]:
    found = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix in MANIFEST_SUFFIXES)


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not a text file (UTF-8 YAML or JSON expected)") from None
    except OSError as error:
        raise ManifestError(f"{path}: cannot read it: {error.strerror}") from None


def _documents(text: str, name: str) -> Iterator[Document]:
    try:
        loaded = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ManifestError(f"{name}: not valid YAML{where}: {problem}") from None
    # Only an alias (*name) repeats a value, and only a tag (!!binary) makes one JSON has
    # not: text with neither needs no second look (a pass costs about a quarter of parsing).
    suspect = "*" in text or "!" in text
    number = 0
    for document in loaded:
        if document is None:
            continue
        number += 1
        if suspect:
            _check_json(document, f"{name}#{number}")
        yield from _expand(document, f"{name}#{number}")


def _check_json(document: Any, where: str) -> None:
    """Refuse what JSON cannot hold and what would not fit in memory once written out:
    a value YAML alone has (``!!binary``, ``!!set``), an alias that contains itself, or
    aliases that multiply the document (a "billion laughs")."""
    try:
        values = measure(document)
    except AliasCycle as error:
        raise ManifestError(f"{where}: {error}") from None
    if values.foreign is not None:
        tag = _YAML_ONLY.get(values.foreign, values.foreign.__name__)
        raise ManifestError(
            f"{where}: a {tag} value; manifests hold JSON values "
            "(strings, numbers, booleans, null, lists and mappings)"
        )
    if values.expanded > ALIAS_VALUES and values.expanded > ALIAS_GROWTH * values.distinct:
        raise ManifestError(
            f"{where}: YAML aliases expand it to {values.expanded} values from "
            f"{values.distinct} (an alias bomb?); write the repeated parts out or use fewer "
            "aliases"
        )


def _expand(document: Any, source: str) -> Iterator[Document]:
    """A List's items (nested lists too), or the document itself."""
    if _is_list(document):
        for index, item in enumerate(document.get("items") or []):
            yield from _expand(item, f"{source}.items[{index}]")
    else:
        yield Document(source, document)


def _is_list(document: Any) -> bool:
    """``kind: List`` (v1), or a typed list (``PodList``) whose items are objects."""
    if not isinstance(document, dict):
        return False
    kind = document.get("kind")
    return (
        isinstance(kind, str) and kind.endswith("List") and isinstance(document.get("items"), list)
    )
