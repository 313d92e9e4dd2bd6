"""`callbot loadtest`: many synthetic aiortc callers against one server, timed at the caller.

Apart from the server: `scenario` (steps and clips), `caller` (one real aiortc peer),
`sources` (synthetic media tracks), `run` (calls over processes), `report` (figures), `cli`.
"""

from .cli import add_parser, default_ice_hosts, main
from .report import STAGES, Progress, exit_code, format_summary, summarize
from .run import run_call, run_loadtest
from .scenario import (
    LoadOptions,
    ScenarioError,
    Step,
    default_scenario,
    load_scenario,
    parse_scenario,
    plan_steps,
    read_wav,
    write_wav,
)

__all__ = ["STAGES", "LoadOptions", "Progress", "ScenarioError", "Step", "add_parser",
           "default_ice_hosts", "default_scenario", "exit_code", "format_summary",
           "load_scenario", "main", "parse_scenario", "plan_steps", "read_wav", "run_call",
           "run_loadtest", "summarize", "write_wav"]
