"""Tools (function calling) the LLM may use during a reply, on the OpenAI-compatible backend.

    async def lookup_order(order_id: str) -> dict:
        ...

    tool = Tool("lookup_order", "Status of an order by its id.",
                {"type": "object", "properties": {"order_id": {"type": "string"}},
                 "required": ["order_id"]},
                lookup_order)

A tool's function gets the model's arguments as keyword arguments; what it returns is sent
back to the model as JSON (a `str` as is). A failing tool returns `{"error": ...}` to the model
instead of failing the turn.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ToolFunction = Callable[..., Awaitable[Any] | Any]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    fn: ToolFunction | None = None
    timeout_s: float = 10.0
    # The first step of a reply must call a required tool (the OpenAI `tool_choice`: the one
    # required tool by name, or "required" for several); the answer after its result is text.
    required: bool = False

    def spec(self) -> dict[str, Any]:
        """The OpenAI `tools` entry."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters,
        }}

    async def run(self, arguments: str | dict[str, Any]) -> str:
        """Call the function with the model's (JSON) arguments; the result as text."""
        try:
            args = json.loads(arguments or "{}") if isinstance(arguments, str) else arguments
        except json.JSONDecodeError:
            return _error(f"arguments are not valid JSON: {str(arguments)[:100]}")
        if not isinstance(args, dict):
            return _error("arguments must be a JSON object")
        if self.fn is None:
            return _error(f"tool {self.name} has no implementation")
        try:
            result = self.fn(**args)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, self.timeout_s)
        except TypeError as exc:
            return _error(f"bad arguments: {exc}")
        except TimeoutError:
            return _error("the tool timed out")
        except Exception as exc:
            log.exception("tool %s failed", self.name)
            return _error(f"the tool failed: {exc}")
        return result if isinstance(result, str) else json.dumps(result, default=str)


def _error(message: str) -> str:
    return json.dumps({"error": message})


class ToolRegistry:
    """Tools by name; `registry.tool(...)` also works as a decorator."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def tool(self, name: str, description: str, parameters: dict[str, Any] | None = None
             ) -> Callable[[ToolFunction], ToolFunction]:
        def register(fn: ToolFunction) -> ToolFunction:
            self.add(Tool(name, description,
                          parameters or {"type": "object", "properties": {}}, fn))
            return fn

        return register

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self._tools.values()]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    async def run(self, name: str, arguments: str | dict[str, Any]) -> str:
        tool = self._tools.get(name)
        if tool is None:
            return _error(f"no tool named {name!r}")
        return await tool.run(arguments)
