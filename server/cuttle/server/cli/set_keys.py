"""`--set FIELD=VALUE`: the fields a kind of document has, read from its pydantic schema.

The help of `create` and `update` lists them from the same schema that validates files and
requests, so the list can never drift from what the server accepts.
"""

from __future__ import annotations

import json
from typing import Any

import click

from cuttle.server.cli.suggest import did_you_mean
from cuttle.server.model import documents as d

# Fields every command sets through its own argument or option.
_OWN_OPTIONS = frozenset({"name", "description"})


def _type_text(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(str(v) for v in prop["enum"])
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1].lower() + " (mapping)"
    if "anyOf" in prop:
        kinds = [_type_text(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(kinds) + (" or null" if len(kinds) < len(prop["anyOf"]) else "")
    kind = prop.get("type", "")
    if kind == "array":
        return f"list of {_type_text(prop.get('items', {}))}"
    if kind == "object":
        return "mapping"
    return {"string": "text", "boolean": "true|false"}.get(kind, kind or "value")


def set_keys(model: type[d.Document]) -> list[tuple[str, str]]:
    """(field, 'type (default: ...)') for each field --set can change, in schema order."""
    schema = model.model_json_schema()
    found = []
    for field, prop in schema.get("properties", {}).items():
        if field in _OWN_OPTIONS:
            continue
        text = _type_text(prop)
        default = prop.get("default")
        if default not in (None, "", [], {}) and not isinstance(default, (list, dict)):
            text += f" (default: {json.dumps(default)})"
        found.append((field, text))
    return found


def set_keys_epilog(model: type[d.Document], example: str) -> str:
    """An epilog for click: the --set keys of a kind, then an example, unwrapped."""
    keys = set_keys(model)
    width = max((len(k) for k, _ in keys), default=0)
    lines = [f"  {k.ljust(width)}  {t}" for k, t in keys]
    return (
        "\b\n--set keys (VALUE is JSON, or text when it is not JSON):\n"
        + "\n".join(lines)
        + f"\n\n\b\nExample:\n  {example}"
    )


class SchemaHelpCommand(click.Command):
    """A command whose help ends with the --set keys of a kind, built only when help is shown.

    Building a schema for every kind costs tens of milliseconds, paid on every `cuttle` start
    if done when the commands are made.
    """

    def __init__(
        self, *args: Any, schema_model: type[d.Document], example: str, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._schema_model = schema_model
        self._example = example

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write the --set keys and the example after the options."""
        self.epilog = set_keys_epilog(self._schema_model, self._example)
        super().format_epilog(ctx, formatter)


def apply_settings(
    data: dict[str, Any], settings: tuple[str, ...], model: type[d.Document]
) -> None:
    """Put each FIELD=VALUE of --set into data; an unknown FIELD is refused with the known ones."""
    known = {k for k, _ in set_keys(model)} | _OWN_OPTIONS
    for setting in settings:
        field, sep, raw = setting.partition("=")
        if not sep or not field:
            raise click.UsageError(f"--set {setting!r}: expected FIELD=VALUE")
        if field not in known:
            raise click.UsageError(
                f"--set {field}: no such field{did_you_mean(field, known)} "
                f"(fields: {', '.join(sorted(known - _OWN_OPTIONS))})"
            )
        try:
            data[field] = json.loads(raw)
        except ValueError:
            data[field] = raw
