"""The filter registry: built-in filters by lower-case name, plus user registrations."""

from __future__ import annotations

from collections.abc import Callable

from . import filters_dates as dates
from . import filters_encoding as enc
from . import filters_escape as esc
from . import filters_misc as misc
from . import filters_text as text

Filter = Callable[[str | None, list[str]], str | None]

FILTERS: dict[str, Filter] = {
    "toupper": text.to_upper,
    "tolower": text.to_lower,
    "trim": text.trim,
    "truncate": text.truncate,
    "substring": text.substring,
    "replace": text.replace,
    "append": text.append,
    "prepend": text.prepend,
    "indent": text.indent,
    "startswith": text.starts_with,
    "endswith": text.ends_with,
    "contains": text.contains,
    "match": text.match,
    "null": text.null,
    "htmlescape": esc.html_escape,
    "xmlescape": esc.xml_escape,
    "jsonescape": esc.json_escape,
    "yamlsinglequoteescape": esc.yaml_single_quote_escape,
    "yamldoublequoteescape": esc.yaml_double_quote_escape,
    "propertieskeyescape": esc.properties_key_escape,
    "propertiesvalueescape": esc.properties_value_escape,
    "uriescape": esc.uri_escape,
    "uridataescape": esc.uri_data_escape,
    "markdown": esc.markdown_to_html,
    "markdowntohtml": esc.markdown_to_html,
    "tobase64": enc.to_base64,
    "frombase64": enc.from_base64,
    "md5": enc.md5,
    "sha1": enc.sha1,
    "sha256": enc.sha256,
    "sha384": enc.sha384,
    "sha512": enc.sha512,
    "format": dates.format_value,
    "nowdate": dates.now_date,
    "nowdateutc": dates.now_date_utc,
    "addhours": dates.add_hours,
    "adddays": dates.add_days,
    "uripart": misc.uri_part,
    "versionmajor": misc.version_major,
    "versionminor": misc.version_minor,
    "versionpatch": misc.version_patch,
    "versionrevision": misc.version_revision,
    "versionprerelease": misc.version_prerelease,
    "versionprereleaseprefix": misc.version_prerelease_prefix,
    "versionprereleasecounter": misc.version_prerelease_counter,
    "versionmetadata": misc.version_metadata,
}

# Results of these depend on the clock, so values using them are never memoised.
VOLATILE_FILTERS = frozenset({"nowdate", "nowdateutc"})

_BUILT_IN = frozenset(FILTERS)


def register_filter(name: str, implementation: Filter) -> None:
    """Register an extra filter; built-ins always win (as in Octostache's AddExtension)."""
    key = name.lower()
    if key not in _BUILT_IN and key not in FILTERS:
        FILTERS[key] = implementation
