"""Configuration as code: the model in YAML files, read with line numbers and written back.

A file is a mapping from kinds (plural, as in `environments:`) to lists of documents; a folder is
every *.yaml / *.yml file in it, in name order. Reading keeps the line of every node so that
each problem — from this schema check, or later from the server — is reported as
`file:line: field.path: message`. Writing produces the same format, defaults omitted, so that an
export applied again changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cuttle.server.model import bounded_yaml
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import BY_PLURAL, KINDS, Kind
from cuttle.server.model.problems import validation_problems

MAX_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong in a file, located."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """A document read from a file; origin is how the server will name it in problems."""

    kind: Kind
    spec: d.Document
    file: str
    path: str

    @property
    def origin(self) -> str:
        """file:path, unique within one apply."""
        return f"{self.file}:{self.path}"


@dataclass
class LoadedFiles:
    """Everything read from the files, and where each node came from."""

    documents: list[LoadedDocument] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # file -> path -> line (1-based)
    lines: dict[str, dict[str, int]] = field(default_factory=dict)

    def locate(self, field_path: str) -> Problem | None:
        """Turn a server's field path "<origin>.<sub.path>" back into file:line."""
        for document in sorted(self.documents, key=lambda x: -len(x.origin)):
            if field_path == document.origin or field_path.startswith(
                (document.origin + ".", document.origin + "[")
            ):
                rest = field_path[len(document.origin) :].lstrip(".")
                full = (
                    f"{document.path}.{rest}"
                    if rest and not rest.startswith("[")
                    else (document.path + rest)
                )
                return Problem(document.file, self._line(document.file, full), full, "")
        return None

    def _line(self, file: str, path: str) -> int:
        known = self.lines.get(file, {})
        # A missing field has no node: report the closest enclosing one.
        candidate = path
        while candidate:
            if candidate in known:
                return known[candidate]
            cut = max(candidate.rfind("."), candidate.rfind("["))
            candidate = candidate[:cut] if cut > 0 else ""
        return 0


def load(paths: Iterable[Path], environ: Mapping[str, str] | None = None) -> LoadedFiles:
    """Read and check files and folders; every problem is collected, none stops the others."""
    env = os.environ if environ is None else environ
    loaded = LoadedFiles()
    for path in _expand(paths, loaded):
        _load_file(path, loaded, env)
    seen: dict[tuple[str, str], LoadedDocument] = {}
    for document in loaded.documents:
        key = (document.kind.name, document.spec.name.casefold())
        first = seen.get(key)
        if first is not None:
            loaded.problems.append(
                Problem(
                    document.file,
                    loaded._line(document.file, document.path),
                    document.path,
                    f"{document.kind.label} {document.spec.name!r} is declared again "
                    f"(first at {first.file}:{loaded._line(first.file, first.path)})",
                )
            )
        else:
            seen[key] = document
    return loaded


def _expand(paths: Iterable[Path], loaded: LoadedFiles) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
            if not found:
                loaded.problems.append(Problem(str(path), 0, "", "no .yaml or .yml files in it"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            loaded.problems.append(Problem(str(path), 0, "", "no such file or folder"))
    return files


def _load_file(path: Path, loaded: LoadedFiles, environ: Mapping[str, str]) -> None:
    name = str(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            loaded.problems.append(Problem(name, 0, "", f"larger than {MAX_FILE_BYTES} bytes"))
            return
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        loaded.problems.append(Problem(name, 0, "", f"cannot read it: {exc}"))
        return
    try:
        root = bounded_yaml.compose(text, name)
    except yaml.YAMLError as exc:
        loaded.problems.append(_yaml_problem(name, exc))
        return
    if root is None:
        return
    lines: dict[str, int] = {}
    loader = yaml.SafeLoader("")
    try:
        data = _build(root, "", lines, loader)
    except _NodeError as exc:
        loaded.problems.append(Problem(name, exc.line, exc.path, exc.message))
        return
    except yaml.YAMLError as exc:
        loaded.problems.append(_yaml_problem(name, exc))
        return
    finally:
        loader.dispose()
    loaded.lines[name] = lines
    if not isinstance(data, dict):
        loaded.problems.append(
            Problem(
                name,
                root.start_mark.line + 1,
                "",
                "expected a mapping of kinds, e.g. environments:",
            )
        )
        return
    for plural, items in data.items():
        document_kind = BY_PLURAL.get(str(plural))
        if document_kind is None:
            loaded.problems.append(
                Problem(
                    name,
                    lines.get(str(plural), 0),
                    str(plural),
                    f"unknown kind; the file may declare: {', '.join(k.plural for k in KINDS)}",
                )
            )
            continue
        if not isinstance(items, list):
            loaded.problems.append(
                Problem(name, lines.get(plural, 0), plural, "expected a list of documents")
            )
            continue
        for index, item in enumerate(items):
            where = f"{plural}[{index}]"
            item = _resolve_environment_values(item, where, name, lines, loaded, environ)
            try:
                spec = document_kind.model.model_validate(item)
            except ValidationError as exc:
                for sub, message in validation_problems(exc):
                    full = f"{where}.{sub}" if sub else where
                    loaded.problems.append(Problem(name, loaded._line(name, full), full, message))
                continue
            loaded.documents.append(LoadedDocument(document_kind, spec, name, where))


def _yaml_problem(file: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 0
    problem = getattr(exc, "problem", None) or exc
    # An alias bomb is well-formed YAML: say what was refused, not that it is malformed.
    kind = "refused YAML" if isinstance(exc, bounded_yaml.AliasLimitExceeded) else "malformed YAML"
    message = f"{kind}: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        # Where the unfinished construct began is usually where the mistake is.
        message += f" ({context} at line {context_mark.line + 1})"
    return Problem(file, line, "", message)


def _resolve_environment_values(
    item: Any,
    where: str,
    file: str,
    lines: dict[str, int],
    loaded: LoadedFiles,
    environ: Mapping[str, str],
) -> Any:
    """Replace value_from_env by the value, read here so that it never sits in a file."""
    if not isinstance(item, dict) or not isinstance(item.get("variables"), list):
        return item
    variables = []
    for index, variable in enumerate(item["variables"]):
        if isinstance(variable, dict) and isinstance(variable.get("value_from_env"), str):
            name = variable["value_from_env"]
            path = f"{where}.variables[{index}].value_from_env"
            if name not in environ:
                loaded.problems.append(
                    Problem(
                        file,
                        lines.get(path, 0),
                        path,
                        f"environment variable {name} is not set",
                    )
                )
            else:
                variable = {k: v for k, v in variable.items() if k != "value_from_env"}
                variable["value"] = environ[name]
        variables.append(variable)
    return {**item, "variables": variables}


class _NodeError(Exception):
    def __init__(self, line: int, path: str, message: str) -> None:
        super().__init__(message)
        self.line, self.path, self.message = line, path, message


def _build(node: yaml.Node, path: str, lines: dict[str, int], loader: yaml.SafeLoader) -> Any:
    """Python values from a YAML node tree, recording the line of every path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _NodeError(key_node.start_mark.line + 1, path, "keys must be plain names")
            key = str(key_node.value)
            if key in result:
                raise _NodeError(
                    key_node.start_mark.line + 1,
                    f"{path}.{key}" if path else key,
                    "this key appears twice in the same mapping",
                )
            sub = f"{path}.{key}" if path else key
            result[key] = _build(value_node, sub, lines, loader)
            lines[sub] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, f"{path}[{i}]", lines, loader) for i, item in enumerate(node.value)]
    # Scalars: the safe constructor decides the type (true, 3, null, "text").
    return loader.construct_object(node, deep=True)


# -- writing ---------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks, keys in schema order."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if "\n" in value and all(line == line.rstrip() for line in value.splitlines()):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def dump(documents: Iterable[tuple[Kind, d.Document]]) -> str:
    """The YAML file for these documents, in apply order, defaults left out."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for document_kind, spec in documents:
        data = spec.model_dump(mode="json", exclude_defaults=True)
        grouped.setdefault(document_kind.plural, []).append(_ordered(spec, data))
    ordered = {k.plural: grouped[k.plural] for k in KINDS if k.plural in grouped}
    return yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _ordered(spec: d.Spec, data: dict[str, Any]) -> dict[str, Any]:
    # A sensitive variable's value is never written: the file says it exists and the server
    # keeps it (apply leaves a value that a file omits as it is).
    if isinstance(spec, d.Project | d.LibraryVariableSet | d.Tenant):
        for variable in data.get("variables", []):
            if variable.get("sensitive"):
                variable.pop("value", None)
    return data
