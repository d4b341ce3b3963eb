"""The package's shape, read from its source: imports point down, argument parsing lives in
the face (minibit/cli/), no module grows past what one sitting can read."""

import ast
import importlib.util
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "minibit"
FACE = {"__init__.py", "__main__.py"}          # the package root and `python -m minibit`
MAX_LINES = 700


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "cli" or str(rel) in FACE:
            continue
        yield rel


def _dotted(rel: pathlib.Path) -> str:
    parts = ("minibit",) + rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_submodule(name: str) -> bool:
    """A module or subpackage of minibit (minibit.data lives in data/, mapped by setup.py)."""
    return importlib.util.find_spec(f"minibit.{name}") is not None


def _bad_imports(rel: pathlib.Path, source: str | None = None) -> list[str]:
    """Imports of argparse, of the CLI, or of names from the package root."""
    tree = ast.parse(source if source is not None else (PKG / rel).read_text(encoding="utf-8"))
    here = _dotted(rel).split(".")
    if rel.name != "__init__.py":
        here = here[:-1]                          # the package this module lives in
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "argparse" or a.name == "minibit" or a.name.startswith("minibit.cli"):
                    bad.append(f"line {node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "argparse" or mod == "minibit.cli" or mod.startswith("minibit.cli."):
                bad.append(f"line {node.lineno}: from {mod} import ...")
            elif mod == "minibit":
                for a in node.names:             # only real submodules may come from the root
                    if not _is_submodule(a.name):
                        bad.append(f"line {node.lineno}: from minibit import {a.name}")
    return bad


@pytest.mark.parametrize("rel", list(_modules()), ids=str)
def test_imports_point_down(rel):
    assert _bad_imports(rel) == []


def test_the_rule_is_checked():
    """The checker itself finds what it must (a module that broke every rule)."""
    probe = ("import argparse\nfrom .. import load\nfrom ..cli import main\n"
             "from .. import kernels\nfrom ..cli._common import Parser\n")
    assert _bad_imports(pathlib.Path("io/probe.py"), probe) == [
        "line 1: import argparse", "line 2: from minibit import load",
        "line 3: from minibit.cli import ...", "line 5: from minibit.cli._common import ..."]


def test_no_module_over_700_lines():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_subcommand_is_a_module():
    """minibit/cli/NAME.py per subcommand, each with HELP and either main(argv) or
    DESCRIPTION + add_arguments(ap) + run(args, ap) (the registry's contract)."""
    from minibit import cli
    on_disk = {p.stem for p in (PKG / "cli").glob("*.py") if not p.stem.startswith("_")}
    assert set(cli.COMMANDS) == on_disk
    for name in cli.COMMANDS:
        mod = cli.command(name)
        assert isinstance(mod.HELP, str) and mod.HELP
        assert callable(getattr(mod, "main", None)) or (
            isinstance(mod.DESCRIPTION, str) and callable(mod.add_arguments) and callable(mod.run))
