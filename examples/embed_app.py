"""An existing aiohttp shop app that embeds callbot under /callbot.

The shop has its own routes and its own token auth (`Authorization: Bearer $SHOP_TOKEN` on
/api/*). Callbot is mounted with `mount(...)` and told to accept the same token, plus
short-lived call tokens the shop mints for a signed-in customer's browser
(`GET /api/call-token?user=ada`). When that customer's call starts, the app uses the call
handle: it gives the LLM the customer's record (`add_context`) and greets them by name
(`say`). The bot gets one tool, `lookup_order`, backed by the shop's SQLite database.

    SHOP_TOKEN=s3cret CALLBOT_LLM_BASE_URL=http://127.0.0.1:8000/v1 \\
        python examples/embed_app.py --db shop.sqlite

Tools need the OpenAI-compatible LLM backend (llama.cpp server, vLLM, a hosted API...);
with the embedded model the bot still talks, without the tool.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from callbot import (
    AuthSettings,
    CallbotConfig,
    CallHandle,
    CallHooks,
    CallOptions,
    Engines,
    Tool,
    mint_call_token,
    mount,
)

log = logging.getLogger("shop")

SHOP_TOKEN = web.AppKey("shop_token", str)
SIGNING_SECRET = web.AppKey("signing_secret", str)
DB_PATH = web.AppKey("db_path", str)

CUSTOMERS = [("ada", "Ada Lovelace", "A1001"), ("alan", "Alan Turing", "A1002")]
ORDERS = [
    ("A1001", "Ada Lovelace", "shipped", "2 books", "2026-11-20"),
    ("A1002", "Alan Turing", "processing", "1 keyboard", None),
    ("A1003", "Grace Hopper", "delivered", "3 mugs", "2026-11-12"),
]


def create_db(path: str | Path) -> None:
    """The shop's database (created with a few orders if it does not exist)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT, "
                   "status TEXT, items TEXT, shipped_on TEXT)")
        db.executemany("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?)", ORDERS)
        db.execute("CREATE TABLE IF NOT EXISTS customers (login TEXT PRIMARY KEY, name TEXT, "
                   "last_order TEXT)")
        db.executemany("INSERT OR IGNORE INTO customers VALUES (?, ?, ?)", CUSTOMERS)


def find_customer(path: str | Path, login: str) -> dict[str, Any] | None:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM customers WHERE login = ?", (login,)).fetchone()
    return dict(row) if row else None


def find_order(path: str | Path, order_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM orders WHERE id = ?",
                         (order_id.strip().upper(),)).fetchone()
    return dict(row) if row else None


def order_tool(db_path: str | Path) -> Tool:
    async def lookup_order(order_id: str) -> dict[str, Any]:
        order = await asyncio.to_thread(find_order, db_path, order_id)
        if order is None:
            return {"found": False, "order_id": order_id}
        return {"found": True, "status": order["status"], "items": order["items"],
                "shipped_on": order["shipped_on"]}

    return Tool(
        name="lookup_order",
        description="Look up the status of a shop order by its id, e.g. A1001.",
        parameters={"type": "object", "properties": {
            "order_id": {"type": "string", "description": "the order id, like A1001"},
        }, "required": ["order_id"]},
        fn=lookup_order,
    )


# ---- the shop's own app ---------------------------------------------------------------------


@web.middleware
async def shop_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The shop's API needs its token; callbot under /callbot does its own checks."""
    if request.path.startswith("/api/"):
        expected = f"Bearer {request.app[SHOP_TOKEN]}"
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return web.json_response({"error": "unauthorized"}, status=401)
    return await handler(request)


routes = web.RouteTableDef()


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    return web.Response(text="<h1>Shop</h1><p><a href='/callbot/'>Call us</a></p>",
                        content_type="text/html")


@routes.get("/api/orders/{order_id}")
async def get_order(request: web.Request) -> web.Response:
    order = await asyncio.to_thread(find_order, request.app[DB_PATH],
                                    request.match_info["order_id"])
    if order is None:
        raise web.HTTPNotFound()
    return web.json_response(order)


@routes.get("/api/call-token")
async def call_token(request: web.Request) -> web.Response:
    """A one-call token for a signed-in customer's browser (valid 60 s, single use)."""
    user = request.query.get("user", "guest")
    return web.json_response({"token": mint_call_token(request.app[SIGNING_SECRET], 60, user)})


def build_app(db_path: str | Path, token: str, *, config: CallbotConfig | None = None,
              engines: Engines | None = None) -> web.Application:
    create_db(db_path)
    app = web.Application(middlewares=[shop_auth])
    app[SHOP_TOKEN] = token
    app[SIGNING_SECRET] = secrets.token_urlsafe(32)
    app[DB_PATH] = str(db_path)
    app.add_routes(routes)

    def options_for(request: web.Request, requested: CallOptions) -> CallOptions:
        prompt = ("You are the phone assistant of a small shop. Answer in one or two short "
                  "sentences. To check an order, use lookup_order with the id the caller says.")
        return CallOptions(system_prompt=requested.system_prompt or prompt,
                           voice=requested.voice, language=requested.language)

    async def started(call: CallHandle) -> None:
        """A signed-in customer is greeted by name; the bot knows their last order."""
        customer = None
        if call.subject:
            customer = await asyncio.to_thread(find_customer, db_path, call.subject)
        if customer is None:
            call.say("Hello, thanks for calling the shop. How can I help?")
            return
        first_name = customer["name"].split()[0]
        call.add_context(f"The caller is {customer['name']}; their last order is "
                         f"{customer['last_order']}.")
        call.say(f"Hello {first_name}, thanks for calling the shop. How can I help?")

    def ended(call: CallHandle, reason: str) -> None:
        log.info("call %s of %s ended: %s", call.call_id, call.subject or call.client_id, reason)

    callbot_config = (config or CallbotConfig.load()).replace(auth=AuthSettings(
        mode="token", bearer_tokens=(token,), signing_secret=app[SIGNING_SECRET],
    ))
    hooks = CallHooks(options_factory=options_for, on_call_started=started, on_call_ended=ended,
                      tools=[order_tool(db_path)])
    mount(app, "/callbot", callbot_config, engines=engines, hooks=hooks)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="shop.sqlite")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    token = os.environ.get("SHOP_TOKEN") or secrets.token_urlsafe(16)
    print(f"shop token: {token}")
    web.run_app(build_app(args.db, token), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
