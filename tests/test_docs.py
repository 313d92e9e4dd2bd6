"""The docs' samples work as written: every TOML settings block loads, every Python block
compiles against the installed callbot (its `callbot` imports resolve), and the README's
shell one-liners that only print a path run."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callbot.signalling.config import CallbotConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for n, body in enumerate(re.findall(rf"```{language}\n(.*?)```", doc.read_text(),
                                            re.S)):
            found.append((f"{doc.name}#{language}{n}", body))
    return found


@pytest.mark.parametrize(("where", "text"), blocks("toml"), ids=lambda v: str(v)[:30])
def test_toml_settings_blocks_load(where: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "callbot.toml"
    path.write_text(text)
    CallbotConfig.load(path, env={})  # raises ConfigError on an unknown key or bad value


@pytest.mark.parametrize(("where", "text"), blocks("python"), ids=lambda v: str(v)[:30])
def test_python_blocks_compile_and_import_what_they_name(where: str, text: str) -> None:
    tree = ast.parse(text, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert alias.name == "*" or hasattr(module, alias.name) or \
                    importlib.util.find_spec(f"{node.module}.{alias.name}"), (where, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


def test_python_one_liners_in_shell_commands_run() -> None:
    """`python3 -c '…'` inside the docs' commands (the llama.cpp server recipe)."""
    snippets = [s for doc in DOCS for s in re.findall(r"python3 -c '([^']+)'", doc.read_text())]
    assert snippets
    for snippet in snippets:
        done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, check=False)
        assert done.returncode == 0, (snippet, done.stderr)


def test_configuration_reference_is_generated_from_the_current_schema() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import config_reference
    finally:
        sys.path.pop(0)
    assert (ROOT / "docs" / "config-reference.md").read_text() == config_reference.render(), \
        "docs/config-reference.md is stale: python3 scripts/config_reference.py"
