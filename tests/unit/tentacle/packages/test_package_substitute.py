"""Variables into package files: #{...} substitution and JSON/YAML structured variables."""

from __future__ import annotations

import codecs
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from cuttle.tentacle.packages.substitute import (
    SubstitutionError,
    replace_structured_variables,
    split_targets,
    substitute_in_files,
)

VARIABLES = {
    "Octopus.Environment.Name": "Production",
    "Db.Host": "db.prod.internal",
    "Greeting": "héllo wörld ✓",
}


@pytest.mark.parametrize(
    ("bom", "encoding"),
    [
        (b"", "utf-8"),
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_substitution_keeps_encoding_bom_and_line_endings(
    tmp_path: Path, bom: bytes, encoding: str, newline: str
) -> None:
    text = newline.join(
        ["env=#{Octopus.Environment.Name}", "say=#{Greeting}", "keep=#{Missing}", ""]
    )
    target = tmp_path / "app.conf"
    target.write_bytes(bom + text.encode(encoding))
    report = substitute_in_files(tmp_path, ["*.conf"], VARIABLES)
    expected = newline.join(["env=Production", "say=héllo wörld ✓", "keep=#{Missing}", ""])
    assert target.read_bytes() == bom + expected.encode(encoding)
    assert report.changed == ["app.conf"]
    assert report.unresolved == {"app.conf": ("#{Missing}",)}


def test_globs_recurse_skip_binaries_report_unmatched_and_keep_modes(tmp_path: Path) -> None:
    (tmp_path / "conf" / "deep").mkdir(parents=True)
    deep = tmp_path / "conf" / "deep" / "db.ini"
    deep.write_text("host=#{Db.Host}\n")
    deep.chmod(0o640)
    binary = tmp_path / "conf" / "blob.ini"
    binary.write_bytes(b"#{Db.Host}\x00\x01")
    untouched = tmp_path / "readme.txt"
    untouched.write_text("#{Db.Host}")
    report = substitute_in_files(tmp_path, split_targets("conf/**/*.ini\nnothing/*.xml"), VARIABLES)
    assert deep.read_text() == "host=db.prod.internal\n"
    assert stat.S_IMODE(deep.stat().st_mode) == 0o640
    assert binary.read_bytes() == b"#{Db.Host}\x00\x01"
    assert untouched.read_text() == "#{Db.Host}"
    assert report.skipped_binary == ["conf/blob.ini"]
    assert report.unmatched_globs == ["nothing/*.xml"]
    assert not [p for p in (tmp_path / "conf" / "deep").iterdir() if p.name.startswith(".")]


def test_latin1_file_stays_byte_identical_outside_the_tokens(tmp_path: Path) -> None:
    target = tmp_path / "legacy.txt"
    target.write_bytes("caf\xe9 #{Db.Host}\n".encode("latin-1"))
    substitute_in_files(tmp_path, ["legacy.txt"], VARIABLES)
    assert target.read_bytes() == "caf\xe9 db.prod.internal\n".encode("latin-1")
    target.write_bytes(b"caf\xe9 #{Greeting}")
    with pytest.raises(SubstitutionError, match="legacy.txt is latin-1, which cannot hold '✓'"):
        substitute_in_files(tmp_path, ["legacy.txt"], VARIABLES)


def test_patterns_leaving_the_package_are_refused_and_links_out_ignored(tmp_path: Path) -> None:
    package = tmp_path / "package"
    package.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("#{Db.Host}")
    os.symlink(outside, package / "link.txt")
    with pytest.raises(SubstitutionError, match="may not leave the package"):
        substitute_in_files(package, ["../outside.txt"], VARIABLES)
    report = substitute_in_files(package, ["*.txt"], VARIABLES)
    assert outside.read_text() == "#{Db.Host}"
    assert report.unmatched_globs == ["*.txt"]


APPSETTINGS = """{
    "Logging": {
        "LogLevel": {"Default": "Information", "Verbose": false},
        "Retries": 3
    },
    "Servers": [{"Name": "a", "Port": 80}, {"Name": "b", "Port": 81}],
    "Features": {"x": 1},
    "Ratio": 0.5,
    "Nothing": null
}
"""


def test_json_keys_are_replaced_with_types_kept_by_the_rule(tmp_path: Path) -> None:
    target = tmp_path / "appsettings.json"
    target.write_bytes(codecs.BOM_UTF8 + APPSETTINGS.replace("\n", "\r\n").encode())
    variables = {
        "logging:loglevel:default": "Warning",
        "Logging:LogLevel:Verbose": "True",
        "Logging:Retries": "5",
        "Servers:1:Name": "#{Octopus.Environment.Name}-b",
        "Servers:0:Port": "not a number",
        "Features": '{"y": true}',
        "Ratio": "1e-3",
        "Nothing": "12",
        "Octopus.Environment.Name": "Production",
    }
    report = replace_structured_variables(tmp_path, ["*.json"], variables)
    raw = target.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    text = raw[3:].decode()
    assert "\r\n" in text
    assert text.endswith("\r\n")
    assert text.split("\r\n")[1].startswith('    "Logging"')  # the 4-space indent is kept
    doc = json.loads(text)
    assert doc["Logging"]["LogLevel"] == {"Default": "Warning", "Verbose": True}
    assert doc["Logging"]["Retries"] == 5
    assert doc["Servers"] == [
        {"Name": "a", "Port": "not a number"},
        {"Name": "Production-b", "Port": 81},
    ]
    assert doc["Features"] == {"y": True}
    assert doc["Ratio"] == 0.001
    assert doc["Nothing"] == "12"
    assert "Logging:Retries" in report.replaced_keys["appsettings.json"]


def test_json_without_matching_keys_is_not_rewritten(tmp_path: Path) -> None:
    target = tmp_path / "compact.json"
    target.write_text('{"a":1}')
    report = replace_structured_variables(tmp_path, ["*.json"], {"b": "2"})
    assert target.read_text() == '{"a":1}'
    assert report.unchanged == ["compact.json"]


def test_invalid_json_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(SubstitutionError, match="broken.json is not valid JSON"):
        replace_structured_variables(tmp_path, ["*.json"], {"a": "b"})


CONFIG_YAML = """# service configuration
Logging:
  LogLevel:
    Default: Information   # keep this comment
  Verbose: false
Servers:
  - Name: a
    Port: 80
  - Name: b
    Port: 81
Banner: |
  hello
  world
Tags: [x, y]
Limits:
  cpu: 1
  mem: 2
After: end
"""


def test_yaml_values_are_replaced_in_place_keeping_comments_and_layout(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.write_text(CONFIG_YAML)
    variables = {
        "Logging:LogLevel:Default": "Warning",
        "Logging:Verbose": "TRUE",
        "Servers:1:Port": "8081",
        "Servers:0:Name": "needs: quoting #yes",
        "Banner": "one line",
        "Tags": '["z"]',
        "Limits": '{"cpu": 4}',
    }
    replace_structured_variables(tmp_path, ["config.yaml"], variables)
    text = target.read_text()
    assert "# service configuration" in text
    assert "    Default: Warning   # keep this comment\n" in text
    assert "  Verbose: true\n" in text
    doc = yaml.safe_load(text)
    assert doc["Servers"] == [
        {"Name": "needs: quoting #yes", "Port": 80},
        {"Name": "b", "Port": 8081},
    ]
    assert doc["Banner"] == "one line"
    assert doc["Tags"] == ["z"]
    assert doc["Limits"] == {"cpu": 4}
    assert doc["After"] == "end"
    assert text.endswith("After: end\n")


def test_yaml_string_that_looks_like_a_number_stays_a_string(tmp_path: Path) -> None:
    target = tmp_path / "app.yml"
    target.write_text("version: abc\nport: 80\n")
    replace_structured_variables(tmp_path, ["app.yml"], {"version": "1.10", "port": "x"})
    assert yaml.safe_load(target.read_text()) == {"version": "1.10", "port": "x"}


def test_file_without_known_extension_is_tried_as_json_then_yaml(tmp_path: Path) -> None:
    (tmp_path / "settings.conf").write_text("a:\n  b: 1\n")
    replace_structured_variables(tmp_path, ["settings.conf"], {"a:b": "2"})
    assert (tmp_path / "settings.conf").read_text() == "a:\n  b: 2\n"
