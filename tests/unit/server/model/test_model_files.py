"""Configuration files: every problem located by file, line and field path; dump reads back."""

from __future__ import annotations

from pathlib import Path

from cuttle.server.model import documents as d
from cuttle.server.model import files
from cuttle.server.model.kinds import kind


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_schema_problems_carry_file_line_and_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a.yaml",
        "environments:\n"
        "  - name: Dev\n"
        "    colour: blue\n"
        "projects:\n"
        "  - name: Web\n"
        "    process:\n"
        "      steps:\n"
        "        - name: One\n"
        "          actions:\n"
        "            - name: Run\n"
        "              type: run_script\n",
    )
    loaded = files.load([path])
    assert [str(p) for p in loaded.problems] == [
        f"{path}:3: environments[0].colour: Extra inputs are not permitted",
        f"{path}:10: projects[0].process.steps[0].actions[0]: a run_script action needs a script",
    ]
    assert loaded.documents == []


def test_unknown_kinds_duplicates_and_missing_env_values_are_all_reported(
    tmp_path: Path,
) -> None:
    one = _write(tmp_path, "one.yaml", "environments:\n  - name: Dev\nwidgets: []\n")
    two = _write(
        tmp_path,
        "two.yaml",
        "environments:\n  - name: dev\n"
        "library_variable_sets:\n  - name: Shared\n    variables:\n"
        "      - name: Token\n        sensitive: true\n        value_from_env: NOT_SET_ANYWHERE\n",
    )
    loaded = files.load([tmp_path], environ={})
    messages = [str(p) for p in loaded.problems]
    assert any(m.startswith(f"{one}:3: widgets: unknown kind") for m in messages), messages
    assert (
        f"{two}:2: environments[0]: environment 'dev' is declared again (first at {one}:2)"
        in messages
    )
    assert (
        f"{two}:8: library_variable_sets[0].variables[0].value_from_env: "
        "environment variable NOT_SET_ANYWHERE is not set"
    ) in messages


def test_value_from_env_is_read_from_the_environment(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "s.yaml",
        "library_variable_sets:\n  - name: Shared\n    variables:\n"
        "      - name: Token\n        sensitive: true\n        value_from_env: TOKEN\n",
    )
    loaded = files.load([path], environ={"TOKEN": "abc"})
    (document,) = loaded.documents
    assert isinstance(document.spec, d.LibraryVariableSet)
    assert document.spec.variables[0].value == "abc"
    assert document.spec.variables[0].value_from_env is None


def test_malformed_yaml_and_duplicate_keys(tmp_path: Path) -> None:
    bad = _write(tmp_path, "bad.yaml", "environments:\n  - name: Dev\n   oops: [\n")
    twice = _write(tmp_path, "twice.yaml", "environments:\n  - name: A\n    name: B\n")
    loaded = files.load([bad, twice])
    messages = [str(p) for p in loaded.problems]
    assert messages[0].startswith(f"{bad}:3: malformed YAML"), messages
    assert (
        messages[1]
        == f"{twice}:3: environments[0].name: this key appears twice in the same mapping"
    )


def test_server_field_paths_map_back_to_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "l.yaml",
        "lifecycles:\n  - name: L\n    phases:\n      - name: P\n"
        "        automatic_environments: [Nowhere]\n",
    )
    loaded = files.load([path])
    (document,) = loaded.documents
    located = loaded.locate(f"{document.origin}.phases[0].automatic_environments[0]")
    assert located is not None
    assert (located.file, located.line) == (str(path), 5)
    assert located.path == "lifecycles[0].phases[0].automatic_environments[0]"


def test_dump_reads_back_to_the_same_documents(tmp_path: Path) -> None:
    project = d.Project(
        name="Web",
        process=d.Process(
            steps=[
                d.Step(
                    name="Run",
                    window_size=2,
                    actions=[
                        d.Action(
                            name="Run",
                            type="run_script",
                            script=d.Script(body="echo one\necho #{Name}\n"),
                        )
                    ],
                )
            ]
        ),
        variables=[
            d.Variable(name="Name", value="x", scope=d.Scope(environments=["Dev"])),
            d.Variable(name="Secret", sensitive=True),
        ],
    )
    text = files.dump(
        [(kind("environment"), d.Environment(name="Dev")), (kind("project"), project)]
    )
    assert "Secret" in text
    assert "value: null" not in text
    assert "|" in text  # the script body stays readable
    loaded = files.load([_write(tmp_path, "out.yaml", text)])
    assert loaded.problems == []
    assert [doc.spec for doc in loaded.documents] == [d.Environment(name="Dev"), project]


def test_the_example_model_is_valid() -> None:
    example = Path(__file__).resolve().parents[4] / "examples" / "cuttle.yaml"
    loaded = files.load([example])
    assert loaded.problems == []
    assert {doc.kind.name for doc in loaded.documents} == {"environment", "lifecycle", "project"}
