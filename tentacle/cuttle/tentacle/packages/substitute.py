"""Variables written into an extracted package's files.

Two Octopus features, both given the deployment's variables:

- `substitute_in_files` (`Octopus.Action.SubstituteInFiles.TargetFiles`): `#{...}` in the
  files the globs match is replaced by the same engine scripts use (`cuttle.protocol.variables`,
  unresolved tokens left as written). A file keeps its encoding (UTF-8 with or without BOM,
  UTF-16/32 with BOM, anything else that is not UTF-8 byte for byte as Latin-1) and its line
  endings (nothing is translated); files holding NUL bytes without a UTF-16/32 BOM are binary and
  left alone.
- `replace_structured_variables` (`Octopus.Action.Package.JsonConfigurationVariablesTargets`):
  in JSON and YAML files, the value at the path a variable's name spells (`Logging:LogLevel:
  Default`, array items by index: `Servers:0:Name`; names compare case-insensitively) is
  replaced by the variable's value. Types, as Octopus does: the value is written as a string
  unless the existing value is a boolean and the new one is `true`/`false` (any case), or a
  number and the new one parses as a number, or an object/array and the new one parses as a
  JSON object/array (then the whole subtree is replaced). YAML files are edited in place (only
  the replaced values change: comments, order and layout stay); JSON files are rewritten with
  the indentation, line endings, BOM and final newline they had.

Files are rewritten only when something changed, through a temporary file renamed over the
original, keeping its mode (and owner when running as root).
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

from cuttle.protocol.variables import evaluate, evaluate_detailed
from cuttle.tentacle.packages.errors import PackageError

log = structlog.get_logger(__name__)

SEPARATOR = ":"
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_PLAIN_YAML = re.compile(r"[A-Za-z0-9_./@+-](?:[A-Za-z0-9_./@+ -]*[A-Za-z0-9_./@+-])?")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class SubstitutionError(PackageError):
    """A target file could not be read, parsed or written; the message names it."""


@dataclass
class SubstitutionReport:
    """What a substitution did: changed files, unresolved tokens, globs that matched nothing."""

    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped_binary: list[str] = field(default_factory=list)
    unresolved: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unmatched_globs: list[str] = field(default_factory=list)
    replaced_keys: dict[str, list[str]] = field(default_factory=dict)


def split_targets(property_value: str) -> list[str]:
    """The globs of an Octopus target-files property: one per line (commas also accepted)."""
    parts = re.split(r"[\r\n,]+", property_value)
    return [part.strip() for part in parts if part.strip()]


def matching_files(root: Path, globs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Regular files under `root` matching the globs (`**` allowed), and globs matching none."""
    base = root.resolve()
    found: dict[Path, None] = {}
    unmatched: list[str] = []
    for pattern in globs:
        cleaned = pattern.replace("\\", "/").lstrip("/")
        if not cleaned or ".." in cleaned.split("/"):
            raise SubstitutionError(f"target file pattern {pattern!r} may not leave the package")
        matched = False
        for path in sorted(base.glob(cleaned)):
            real = path.resolve()
            if not real.is_file() or not real.is_relative_to(base):
                continue  # a folder, or a link leading out of the package
            found[path] = None
            matched = True
        if not matched:
            unmatched.append(pattern)
    return list(found), unmatched


def substitute_in_files(
    root: Path, globs: Iterable[str], variables: Mapping[str, str]
) -> SubstitutionReport:
    """Replace `#{...}` in the files under `root` that the globs match."""
    report = SubstitutionReport()
    files, report.unmatched_globs = matching_files(root, globs)
    for path in files:
        name = path.relative_to(root.resolve()).as_posix()
        raw = _read(path)
        decoded = _decode(raw)
        if decoded is None:
            report.skipped_binary.append(name)
            continue
        text, encoding, bom = decoded
        result = evaluate_detailed(text, variables)
        if result.unresolved:
            report.unresolved[name] = result.unresolved
        if result.text == text:
            report.unchanged.append(name)
            continue
        _write(path, _encode(result.text, encoding, bom, name))
        report.changed.append(name)
    log.info(
        "files_substituted",
        changed=len(report.changed),
        unresolved=sum(len(tokens) for tokens in report.unresolved.values()),
    )
    return report


def replace_structured_variables(
    root: Path, globs: Iterable[str], variables: Mapping[str, str]
) -> SubstitutionReport:
    """Replace values in JSON/YAML files at the paths that variable names spell."""
    report = SubstitutionReport()
    files, report.unmatched_globs = matching_files(root, globs)
    by_name = {name.lower(): name for name in variables}

    def lookup(path: tuple[str, ...]) -> str | None:
        name = by_name.get(SEPARATOR.join(path).lower())
        if name is None:
            return None
        value = variables[name]
        return evaluate(value, variables) if "#{" in value else value

    for path in files:
        name = path.relative_to(root.resolve()).as_posix()
        decoded = _decode(_read(path))
        if decoded is None:
            raise SubstitutionError(f"{name} is not a text file; it cannot hold JSON or YAML")
        text, encoding, bom = decoded
        replaced: list[str] = []
        new_text = _replace_in_document(text, name, lookup, replaced)
        if new_text == text:
            report.unchanged.append(name)
            continue
        _write(path, _encode(new_text, encoding, bom, name))
        report.changed.append(name)
        report.replaced_keys[name] = replaced
    log.info("structured_variables_replaced", changed=len(report.changed))
    return report


# -- documents ---------------------------------------------------------------------------------

Lookup = Any  # Callable[[tuple[str, ...]], str | None]; Any keeps the recursive helpers short


def _replace_in_document(text: str, name: str, lookup: Lookup, replaced: list[str]) -> str:
    lower = name.lower()
    if lower.endswith((".yml", ".yaml")):
        return _replace_yaml(text, name, lookup, replaced)
    try:
        return _replace_json(text, lookup, replaced)
    except ValueError as json_error:
        if lower.endswith(".json"):
            raise SubstitutionError(f"{name} is not valid JSON: {json_error}") from json_error
    return _replace_yaml(text, name, lookup, replaced)


def _typed(existing: Any, value: str) -> Any:
    """The replacement value, typed by the rule in the module docstring."""
    if isinstance(existing, bool):
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value
    if isinstance(existing, int | float) and _NUMBER.fullmatch(value.strip()):
        number = float(value) if any(c in value for c in ".eE") else int(value)
        if isinstance(number, float) and not math.isfinite(number):
            return value
        return number
    if isinstance(existing, dict | list):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, dict | list):
            return parsed
    return value


def _replace_json(text: str, lookup: Lookup, replaced: list[str]) -> str:
    document = json.loads(text)

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if path:
            value = lookup(path)
            if value is not None:
                replaced.append(SEPARATOR.join(path))
                return _typed(node, value)
        if isinstance(node, dict):
            return {key: walk(child, (*path, str(key))) for key, child in node.items()}
        if isinstance(node, list):
            return [walk(child, (*path, str(i))) for i, child in enumerate(node)]
        return node

    updated = walk(document, ())
    if not replaced:
        return text
    inner = text.strip()
    if "\n" in inner:
        indent_match = re.search(r"\n([ \t]+)\S", inner)
        indent: str | None = indent_match.group(1) if indent_match else "  "
        out = json.dumps(updated, indent=indent, ensure_ascii=False)
    else:
        out = json.dumps(updated, ensure_ascii=False)
    if text.endswith("\n"):
        out += "\n"
    if "\r\n" in text:
        out = out.replace("\n", "\r\n")
    return out


def _replace_yaml(text: str, name: str, lookup: Lookup, replaced: list[str]) -> str:
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise SubstitutionError(f"{name} is not valid JSON or YAML: {exc}") from exc
    edits: list[tuple[int, int, str]] = []

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if path:
            value = lookup(path)
            if value is not None:
                replaced.append(SEPARATOR.join(path))
                edits.append(_yaml_edit(node, value))
                return
        if isinstance(node, yaml.MappingNode):
            for key, child in node.value:
                walk(child, (*path, str(key.value)))
        elif isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                walk(child, (*path, str(i)))

    for document in documents:
        if document is not None:
            walk(document, ())
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _yaml_existing(node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return {}
    if isinstance(node, yaml.SequenceNode):
        return []
    if node.tag == "tag:yaml.org,2002:bool":
        return True
    if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
        return 0
    return None


def _yaml_edit(node: yaml.Node, value: str) -> tuple[int, int, str]:
    """(start, end, text) replacing the node's value, keeping what follows it."""
    typed = _typed(_yaml_existing(node), value)
    if isinstance(typed, bool):
        rendered = "true" if typed else "false"
    elif isinstance(typed, int | float):
        rendered = value.strip()
    elif isinstance(typed, str):
        plain = _PLAIN_YAML.fullmatch(typed) and yaml.safe_load(typed) == typed
        rendered = typed if plain else json.dumps(typed, ensure_ascii=False)
    else:
        rendered = json.dumps(typed, ensure_ascii=False)  # JSON is YAML flow style
    start = node.start_mark.index
    end = _content_end(node)
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.flow_style is not True:
        # a block collection starts on its own line: keep the replacement on the key's line
        line_start = _text_of(node).rfind("\n", 0, start) + 1
        if _text_of(node)[line_start:start].strip() == "":
            start = line_start - 1 if line_start > 0 else start
            rendered = " " + rendered
    return start, end, rendered


def _text_of(node: yaml.Node) -> str:
    buffer = node.start_mark.buffer
    return buffer.rstrip("\0") if isinstance(buffer, str) else ""


def _content_end(node: yaml.Node) -> int:
    """Where the node's own content ends (block collections' marks run into what follows)."""
    if isinstance(node, yaml.ScalarNode):
        end: int = node.end_mark.index
        if node.style in ("|", ">"):
            # a block scalar's span includes its last line break, which the next key needs
            text = _text_of(node)
            while end > node.start_mark.index and text[end - 1] in "\r\n":
                end -= 1
        return end
    if not isinstance(node, yaml.CollectionNode):  # an alias-free composed tree has no others
        other_end: int = node.end_mark.index
        return other_end
    children = (
        [child for _, child in node.value]
        if isinstance(node, yaml.MappingNode)
        else list(node.value)
    )
    if node.flow_style is True or not children:
        flow_end: int = node.end_mark.index
        return flow_end
    return _content_end(children[-1])


# -- bytes, encodings, atomic writes -----------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SubstitutionError(f"cannot read {path}: {exc.strerror}") from exc


def _decode(raw: bytes) -> tuple[str, str, bytes] | None:
    """(text, encoding, BOM) or None for a binary file."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                return raw[len(bom) :].decode(encoding), encoding, bom
            except UnicodeDecodeError:
                return None
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8"), "utf-8", b""
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1", b""


def _encode(text: str, encoding: str, bom: bytes, name: str) -> bytes:
    try:
        return bom + text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise SubstitutionError(
            f"{name} is {encoding}, which cannot hold {exc.object[exc.start : exc.end]!r} "
            "from a substituted value"
        ) from exc


def _write(path: Path, data: bytes) -> None:
    """Replace the file's content atomically, keeping its mode (and owner as root)."""
    info = path.stat()
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed on success
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(data)
        os.chmod(handle.name, info.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(handle.name, info.st_uid, info.st_gid)
        os.replace(handle.name, path)
    except BaseException as exc:
        os.unlink(handle.name)
        if isinstance(exc, OSError):
            raise SubstitutionError(f"cannot write {path}: {exc.strerror}") from exc
        raise
