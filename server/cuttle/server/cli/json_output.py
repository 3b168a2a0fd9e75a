"""What `cuttle` prints for scripts: one JSON form of every message, and one --output option.

The conventions (README, "Output for scripts"), applied here so that no command has its own:

- enum values are plain lower-case words without their type's prefix (`HEALTH_STATUS_HEALTHY`
  reads `healthy`, `TASK_STATE_TIMED_OUT` reads `timed_out`); an unspecified value is null;
- a time `X_unix_ms` becomes `X_at`, an RFC 3339 string in UTC with milliseconds
  (`2026-12-07T14:20:00.123Z`); 0, the wire's "never", is null;
- bytes (log text) are UTF-8 text, invalid bytes shown as U+FFFD;
- 64-bit integers are JSON numbers, not the strings protobuf's own JSON makes of them;
- a string field `X_json` that holds a JSON document is that document, under `X`;
- ids are always whole.

Listings and shows take `--output table|json|yaml` (YAML is the same data as the JSON);
commands that stream or act (run, deploy, create) take `--output text|json`, and print JSON
lines: one JSON document per line.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import yaml
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from cuttle.protocol.v1 import admin_pb2 as apb

F = TypeVar("F", bound=Callable[..., Any])
# A field's descriptor: typeshed types it as a union of the pure-Python and upb classes, which
# share the attributes read here but not a base class mypy could narrow to.
Field = Any

LISTING_FORMATS = ("table", "json", "yaml")
TEXT_FORMATS = ("text", "json")
TIME_SUFFIX = "_unix_ms"
# Times whose mechanical `X_at` name would read badly.
_RENAMED_TIMES = {
    "time_unix_ms": "written_at",
    "now_unix_ms": "generated_at",
    "unreachable_since_unix_ms": "unreachable_at",
}
_CAMEL_WORD = re.compile(r"(?<!^)(?=[A-Z])")


def rfc3339(unix_ms: int) -> str:
    """Unix milliseconds as RFC 3339 in UTC: `2026-12-07T14:20:00.123Z`."""
    moment = datetime.fromtimestamp(unix_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def time_or_none(unix_ms: int) -> str | None:
    """RFC 3339 for a set time; None for 0, which the wire uses for "not yet" / "never"."""
    return rfc3339(unix_ms) if unix_ms else None


def time_name(field_name: str) -> str:
    """The JSON name of a `X_unix_ms` field: `X_at` (a few read better renamed)."""
    if field_name in _RENAMED_TIMES:
        return _RENAMED_TIMES[field_name]
    return field_name.removesuffix(TIME_SUFFIX) + "_at"


def log_text(data: bytes) -> str:
    """Script output as text: UTF-8, with each invalid byte shown as U+FFFD."""
    return data.decode("utf-8", errors="replace")


def enum_name(enum: EnumDescriptor, number: int) -> str | None:
    """An enum value as a plain lower-case word without its type's prefix; None if unspecified."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)  # a value newer than this CLI: say what was sent
    prefix = _CAMEL_WORD.sub("_", enum.name).upper() + "_"
    word = value.name.removeprefix(prefix).lower()
    return None if word == "unspecified" else word


def message_json(message: Message) -> dict[str, Any]:
    """A protobuf message as plain JSON data, following the conventions above."""
    data: dict[str, Any] = {}
    fields: list[Field] = list(message.DESCRIPTOR.fields)
    for field in fields:
        if field.containing_oneof is not None and not message.HasField(field.name):
            continue  # only the member that is set, as in protobuf's own JSON
        value = getattr(message, field.name)
        name = field.name
        if field.type == FieldDescriptor.TYPE_STRING and name.endswith("_json"):
            data[name.removesuffix("_json")] = json.loads(value) if value else None
        elif name.endswith(TIME_SUFFIX) and not field.is_repeated:
            data[time_name(name)] = time_or_none(value)
        elif _is_map(field):
            data[name] = {
                key: _value_json(field.message_type.fields_by_name["value"], item)
                for key, item in value.items()
            }
        elif field.is_repeated:
            data[name] = [_value_json(field, item) for item in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(name):
            data[name] = None
        else:
            data[name] = _value_json(field, value)
    return data


def _is_map(field: Field) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.is_repeated
        and bool(field.message_type.GetOptions().map_entry)
    )


def _value_json(field: Field, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return log_text(value)
    return value


def task_json(task: apb.Task) -> dict[str, Any]:
    """A task with its tree as `steps` → `actions` → `machines` (and the flat `nodes` list).

    Each tree node has `id`, `name`, `state`, `reason`, `started`, `ended` (and the same times
    as `started_at`, `ended_at`); machine nodes also `machine`, `exit_code` (null until the
    script ended), `attempts` and `output_variables`. A node's children are listed under their
    kind in the plural, so a rolling step's machines carry their `actions` in the same way.
    """
    data = message_json(task)
    children: dict[str, list[apb.TaskNode]] = {}
    for node in task.nodes:
        children.setdefault(node.parent_id, []).append(node)

    def tree(node: apb.TaskNode) -> dict[str, Any]:
        started, ended = time_or_none(node.started_unix_ms), time_or_none(node.ended_unix_ms)
        item: dict[str, Any] = {
            "id": node.id,
            "kind": node.kind,
            "name": node.name,
            "state": node.state,
            "reason": node.reason,
            "started": started,
            "ended": ended,
            "started_at": started,
            "ended_at": ended,
        }
        if node.kind == "machine":
            ended_script = node.state not in ("pending", "running") and node.exit_code >= 0
            item["machine"] = node.machine
            item["exit_code"] = node.exit_code if ended_script else None
            item["attempts"] = node.attempts
            item["output_variables"] = [message_json(v) for v in node.output_variables]
        for child in children.get(node.id, []):
            item.setdefault(child.kind + "s", []).append(tree(child))
        return item

    data["steps"] = [tree(node) for node in children.get("", [])]
    return data


def event_json(event: apb.TaskEvent) -> dict[str, Any]:
    """A task event as one JSON line: `task_id` and the event under its kind."""
    kind = event.WhichOneof("kind")
    data: dict[str, Any] = {"task_id": event.task_id}
    if kind is None:
        return data
    part = getattr(event, kind)
    data[kind] = task_json(part) if isinstance(part, apb.Task) else message_json(part)
    return data


def output_option(formats: Iterable[str] = LISTING_FORMATS) -> Callable[[F], F]:
    """The `--output` option: table|json|yaml for listings and shows, text|json for the rest."""
    choices = list(formats)
    stream = "text" in choices
    helps = {
        "table": "a table for people",
        "text": "text for people",
        "json": "one JSON document per line" if stream else "JSON",
        "yaml": "YAML of the same data as the JSON",
    }
    return click.option(
        "--output",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help="; ".join(f"{c}: {helps[c]}" for c in choices) + ".",
    )


listing_output = output_option(LISTING_FORMATS)
text_output = output_option(TEXT_FORMATS)


def print_data(data: Any, output: str) -> None:
    """Print data as a JSON document (indented) or YAML: the machine-readable forms of --output."""
    if output == "yaml":
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    _write_utf8(text)


def print_json_line(data: Any) -> None:
    """One JSON document on one line (streams: one per event)."""
    _write_utf8(json.dumps(data, ensure_ascii=False) + "\n")


def _write_utf8(text: str) -> None:
    # JSON and YAML are UTF-8 whatever the terminal's locale says; streams share stdout's
    # buffer with raw log bytes, so each write goes there whole and is flushed at once.
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()
