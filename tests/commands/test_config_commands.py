"""`selfdisco config show|schema|example`: the resolved config as TOML, the schema read from the
docstrings in config.py, and the shipped example config, which loads and names only known keys."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib

import pytest

from selfdisco.cli import main
from selfdisco.commands.config import example_text, field_docs, schema
from selfdisco.config import RunConfig, load_config
from selfdisco.launch.checks import check_run


def test_every_config_key_has_a_docstring():
    undocumented = [key["key"] for key in schema() if not key["doc"]]
    assert not undocumented, f"give these config fields a docstring: {undocumented}"


def test_schema_covers_every_field_with_its_default():
    keys = {key["key"]: key for key in schema()}
    default = RunConfig()
    for section in dataclasses.fields(RunConfig):
        value = getattr(default, section.name)
        if dataclasses.is_dataclass(value):
            for item in dataclasses.fields(value):
                assert keys[f"{section.name}.{item.name}"]["default"] == getattr(value, item.name)
        else:
            assert keys[section.name]["default"] == value
    assert keys["discovery.generations"]["type"] == "int"
    assert keys["discovery.generations"]["doc"] == field_docs(type(default.discovery))[
        "generations"]


def test_config_schema_prints_text_and_json(capsys):
    assert main(["config", "schema"]) == 0
    text = capsys.readouterr().out
    assert "[discovery]" in text
    assert 'code_grammar : str = "free"' in text
    assert main(["config", "schema", "--json"]) == 0
    keys = json.loads(capsys.readouterr().out)
    assert [key["key"] for key in keys] == [key["key"] for key in schema()]


def test_config_show_resolves_like_run(capsys, tmp_path):
    file = tmp_path / "mine.toml"
    file.write_text('preset = "smoke"\n[discovery]\ngenerations = 4\npatience = 2\n')
    assert main(["config", "show", "--config", str(file), "--set", "discovery.patience=5"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    expected = load_config(None, file, {"discovery": {"patience": 5}}).to_dict()
    assert shown == expected
    assert shown["discovery"]["generations"] == 4 and shown["discovery"]["patience"] == 5
    assert shown["models"]["policy"] == "smoke-llama"  # from the preset the file names
    assert main(["config", "show", "--preset", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == load_config("cpu").to_dict()


def test_config_show_bad_input_is_a_clear_error(capsys, tmp_path):
    assert main(["config", "show", "--set", "discovery.nope=1"]) == 2
    assert "unknown key 'nope' in discovery" in capsys.readouterr().err
    assert main(["config", "show", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_example_config_loads_and_names_only_known_keys(tmp_path, capsys):
    assert main(["config", "example"]) == 0
    text = capsys.readouterr().out
    assert text == example_text()
    data = tomllib.loads(text)
    known = {key["key"] for key in schema()}
    open_tables = {key["key"] for key in schema() if isinstance(key["default"], dict)}

    def keys(table: dict, prefix: str = "") -> list[str]:
        out = []
        for name, value in table.items():
            if isinstance(value, dict) and prefix + name not in open_tables:
                out += keys(value, f"{prefix}{name}.")
            else:
                out.append(prefix + name)
        return out

    assert set(keys(data)) <= known
    section, commented = "", []
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]") + "."
        elif match := re.match(r"# (\w+) = ", line):
            commented.append(section + match.group(1))
    assert commented and set(commented) <= known, "a commented-out key must be a real one"
    sections = {f.name for f in dataclasses.fields(RunConfig)
                if dataclasses.is_dataclass(getattr(RunConfig(), f.name))}
    assert sections <= set(data), "the example shows every section"
    path = tmp_path / "example.toml"
    path.write_text(text)
    config = load_config(None, path)
    check_run(config)
    assert config.discovery.code_grammar == "primitives"


@pytest.mark.parametrize("args", [["config"], ["config", "nope"]])
def test_config_needs_an_action(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "ACTION" in err or "invalid choice" in err
