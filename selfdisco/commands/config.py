"""`selfdisco config`: the resolved config, the schema of every key, and an example file."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
from importlib import resources
from pathlib import Path
from typing import Any

from selfdisco.config import RunConfig, load_config, parse_assignment
from selfdisco.formatting import print_json
from selfdisco.launch.checks import check_names
from selfdisco.presets import DEFAULT_PRESET, PRESETS

HELP = "print a resolved config as TOML, the schema of every key, or an example config file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", help="the config a run would use, as TOML",
        description="Resolve preset < config file < --set exactly as `selfdisco run` does and "
                    "print the result as TOML (a file `selfdisco run --config` accepts).")
    show.add_argument("--preset", choices=list(PRESETS),
                      help=f"starting configuration (default: {DEFAULT_PRESET})")
    show.add_argument("--config", type=Path, metavar="FILE", help="a TOML config file")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="any config field, e.g. --set discovery.patience=3 (repeatable)")
    show.add_argument("--json", action="store_true", help="print it as JSON instead of TOML")
    schema = actions.add_parser("schema", help="every key with its type, default and meaning")
    schema.add_argument("--json", action="store_true", help="print the schema as JSON")
    actions.add_parser("example", help="an example config file with comments, to start from")


def run(args: argparse.Namespace) -> int:
    return {"show": _show, "schema": _schema, "example": _example}[args.action](args)


def _show(args: argparse.Namespace) -> int:
    config = load_config(args.preset, args.config, assignments(args.set))
    check_names(config)
    if args.json:
        print_json(config.to_dict())
    else:
        print(config.to_toml(), end="")
    return 0


def assignments(items: list[str]) -> dict:
    """--set KEY=VALUE items as the nested dict of overrides that load_config takes."""
    out: dict = {}
    for text in items:
        path, value = parse_assignment(text)
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _schema(args: argparse.Namespace) -> int:
    keys = schema()
    if args.json:
        print_json(keys)
        return 0
    section = None
    for key in keys:
        head, _, name = key["key"].rpartition(".")
        if head != section:
            section = head
            print(f"\n[{head}]" if head else "# top level")
        print(f"{name} : {key['type']} = {toml_value(key['default'])}")
        print("    " + key["doc"].replace("\n", "\n    "))
    return 0


def _example(args: argparse.Namespace) -> int:
    print(example_text(), end="")
    return 0


def example_text() -> str:
    """The example config file shipped with the package."""
    return resources.files("selfdisco").joinpath("data/example_config.toml").read_text()


def schema() -> list[dict[str, Any]]:
    """Every config key: {key (dotted), type, default, doc}, in declaration order, read from
    the dataclasses in selfdisco/config.py and the docstring under each field."""
    return _fields(RunConfig, "")


def _fields(cls: type, prefix: str) -> list[dict[str, Any]]:
    docs = field_docs(cls)
    default = cls()
    keys = []
    for item in dataclasses.fields(cls):
        value = getattr(default, item.name)
        if dataclasses.is_dataclass(value):
            keys += _fields(type(value), f"{prefix}{item.name}.")
            continue
        keys.append({"key": prefix + item.name, "type": str(item.type), "default": value,
                     "doc": docs.get(item.name, "")})
    return keys


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, by field name."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def toml_value(value: Any) -> str:
    """A value as it is written on the right of `key = ` in TOML."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)
