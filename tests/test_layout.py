"""The layout shows the architecture: `signalling/`'s subpackages import only downwards.

    cli -> app -> protocols -> server -> calls, cluster, records -> base (config, errors,
    safejson, ratelimit)

A newcomer finds admission (`server/admission.py`), the conversation assembly
(`calls/assembly.py`), each protocol (`protocols/*`) and the call's transports in one hop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIGNALLING = ROOT / "signalling"
RANKS = {"base": 0, "calls": 1, "cluster": 1, "records": 1, "server": 2, "protocols": 3,
         "app": 4, "cli": 5}


def _group(module: str) -> str:
    """callbot.signalling.server.auth -> server; callbot.signalling.config -> base."""
    parts = module.split(".")[2:]
    if not parts:
        return "base"
    head = parts[0]
    if head in RANKS:
        return head
    return "base"


def _module_of(path: Path) -> str:
    rel = path.relative_to(SIGNALLING).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["callbot", "signalling", *parts])


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (use callbot.signalling....)"
            module = node.module or ""
            if module == "callbot.signalling" or module.startswith("callbot.signalling."):
                # `from package import submodule` imports the submodule
                found.extend(f"{module}.{a.name}" if _is_module(f"{module}.{a.name}") else module
                             for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("callbot.signalling."))
    return found


def _is_module(name: str) -> bool:
    path = SIGNALLING.joinpath(*name.split(".")[2:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _edges() -> list[tuple[str, str, str]]:
    edges = []
    for path in sorted(SIGNALLING.rglob("*.py")):
        source = _module_of(path)
        for target in _imports(path):
            edges.append((source, target, str(path.relative_to(ROOT))))
    return edges


def test_signalling_subpackages_import_only_downwards() -> None:
    upward = [f"{where}: {_group(src)} imports {dst} ({_group(dst)})"
              for src, dst, where in _edges()
              if _group(src) != _group(dst) and RANKS[_group(src)] <= RANKS[_group(dst)]]
    assert not upward, "\n".join(upward)


def test_no_import_loops_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for src, dst, _ in _edges():
        graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                loop = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import loop: " + " -> ".join(loop))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


@pytest.mark.parametrize("place", [
    "server/admission.py", "calls/assembly.py", "calls/call.py", "calls/webrtc.py",
    "protocols/openai_realtime/websocket.py", "protocols/openai_realtime/protocol.py",
])
def test_each_part_has_one_home(place: str) -> None:
    assert (SIGNALLING / place).is_file()


def test_only_the_one_assembly_builds_a_conversation() -> None:
    """No route handler makes a VoiceSession or a Call of its own."""
    builders = []
    for path in SIGNALLING.rglob("*.py"):
        text = path.read_text()
        if "VoiceSession(" in text or " Call(" in text:
            builders.append(str(path.relative_to(SIGNALLING)))
    assert builders == ["calls/assembly.py"], builders


def _top_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
    return names


def test_tests_and_bench_share_support_not_each_other() -> None:
    """What tests and benchmarks both need (speech, Chromium, the safety and knowledge sets)
    lives in `support/`; the server never imports it, and neither side imports the other."""
    crossings = []
    for folder, forbidden in (("tests", "bench"), ("bench", "tests"), ("support", "tests"),
                              ("support", "bench")):
        for path in sorted((ROOT / folder).glob("*.py")):
            if forbidden in _top_imports(path):
                crossings.append(f"{folder}/{path.name} imports {forbidden}")
    for layer in ("signalling", "pipeline", "rtc", "callbot"):
        for path in sorted((ROOT / layer).rglob("*.py")):
            if "support" in _top_imports(path):
                crossings.append(f"{path.relative_to(ROOT)} imports support")
    assert not crossings, crossings
