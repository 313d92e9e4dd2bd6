"""`callbot loadtest`: many synthetic aiortc callers against one server, timed at the caller.

Apart from the server: `scenario` (steps and clips), `caller` (one real aiortc peer),
`sources` (synthetic media tracks), `run` (calls over processes), `report` (figures), `cli`.
Names load on first use: `callbot serve` registers the `loadtest` command without importing
the callers (aiortc) or the report.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "add_parser": "cli", "default_ice_hosts": "cli", "main": "cli",
    "STAGES": "report", "Progress": "report", "exit_code": "report",
    "format_summary": "report", "summarize": "report",
    "run_call": "run", "run_loadtest": "run",
    "LoadOptions": "scenario", "ScenarioError": "scenario", "Step": "scenario",
    "default_scenario": "scenario", "load_scenario": "scenario", "parse_scenario": "scenario",
    "plan_steps": "scenario", "read_wav": "scenario", "write_wav": "scenario",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .cli import add_parser as add_parser
    from .cli import default_ice_hosts as default_ice_hosts
    from .cli import main as main
    from .report import STAGES as STAGES
    from .report import Progress as Progress
    from .report import exit_code as exit_code
    from .report import format_summary as format_summary
    from .report import summarize as summarize
    from .run import run_call as run_call
    from .run import run_loadtest as run_loadtest
    from .scenario import LoadOptions as LoadOptions
    from .scenario import ScenarioError as ScenarioError
    from .scenario import Step as Step
    from .scenario import default_scenario as default_scenario
    from .scenario import load_scenario as load_scenario
    from .scenario import parse_scenario as parse_scenario
    from .scenario import plan_steps as plan_steps
    from .scenario import read_wav as read_wav
    from .scenario import write_wav as write_wav


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'callbot.loadtest' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
