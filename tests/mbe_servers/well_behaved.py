"""A small MBE server with trivial behaviour, and switches that make it misbehave on purpose.

Run as `python tests/mbe_servers/well_behaved.py [flags]` (stdio), or import `build()` to
serve it over HTTP in-process. It keeps memories in a dict and answers every tool of the
contract with fixed, valid values, except when told otherwise:

  --text-only        answer with JSON text only, as servers on older SDKs do
  --extra-fields     add fields the contract does not know, at every level
  --without TOOL     do not offer TOOL (repeatable)

and a few inputs to mbe_surprise act out a fault: "please die" exits mid-call, "please
hang" never answers, "please wait" answers after half a second, "please send garbage"
answers with wrong types, "please fail" raises.
Two debug tools let tests look inside the child: `debug_env` and `debug_spawn`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

EXTRA = {"engine_version": "9.9.9", "debug": {"shard": 3}}


def build(*, text_only: bool = False, extra_fields: bool = False, without: tuple[str, ...] = ()) -> MCPServer:
    server = MCPServer("well-behaved-mbe")
    memories: dict[str, list[dict[str, Any]]] = {}
    ids = itertools.count(1)

    def answer(value: dict[str, Any]) -> dict[str, Any]:
        return {**value, **EXTRA} if extra_fields else value

    def tool(fn: Callable[..., Any]) -> None:
        if fn.__name__ not in without:
            server.add_tool(fn, structured_output=not text_only)

    async def mbe_surprise(input: str, context: dict[str, Any]) -> dict[str, Any]:
        if input == "please die":
            os._exit(70)
        if input == "please hang":
            await anyio.sleep(3600)
        if input == "please wait":
            await anyio.sleep(0.5)
        if input == "please fail":
            raise ToolError("the surprise engine is on fire")
        if input == "please send garbage":
            return answer({"surprise_score": "very", "is_novel": "yes", "learning_mode": 3})
        seen = any(m["content"].get("text") == input for m in memories.get(context["user_id"], []))
        score = 0.1 if seen else 0.9
        return answer({"surprise_score": score, "is_novel": not seen, "learning_mode": "explore"})

    async def mbe_route(
        input: str, task_type: str = "chat", user_profile: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        expert = {"id": "general", "name": "Generalist", "score": 0.8}
        if extra_fields:
            expert = {**expert, **EXTRA}
        return answer({"selected_experts": [expert], "routing_confidence": 0.8})

    async def mbe_memory_write(
        user_id: str, memory_type: str, content: dict[str, Any], importance: float = 0.5
    ) -> dict[str, Any]:
        memory_id = f"m{next(ids)}"
        memories.setdefault(user_id, []).append(
            {
                "id": memory_id,
                "memory_type": memory_type,
                "content": content,
                "importance": importance,
                "created_at": datetime.now(UTC).isoformat(),
            }
        )
        return answer({"memory_id": memory_id})

    async def mbe_memory_read(
        user_id: str, query: str, top_k: int = 5, memory_type: str | None = None
    ) -> dict[str, Any]:
        mine = [m for m in memories.get(user_id, []) if memory_type in (None, m["memory_type"])]
        found = [
            {**m, "score": 1.0, **(EXTRA if extra_fields else {})}
            for m in mine
            if query.lower() in json.dumps(m["content"]).lower()
        ]
        return answer({"memories": found[:top_k], "total_count": len(mine)})

    async def mbe_analyze_learning(user_id: str, window_days: int = 30) -> dict[str, Any]:
        count = len(memories.get(user_id, []))
        return answer(
            {
                "user_id": user_id,
                "window_days": window_days,
                "total_interactions": count,
                "novel_count": count,
                "average_surprise": 0.5,
                "novelty_ratio": 1.0 if count else 0.0,
                "top_experts": [{"id": "general", "name": "Generalist", "count": count}],
                "trend": "insufficient_data",
                "total_memories": count,
            }
        )

    async def mbe_generate(
        prompt: str,
        system_prompt: str | None = None,
        temperature: float | None = None,
        messages: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        return answer(
            {
                "content": f"echo: {prompt}",
                "model": "echo-1",
                "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 2},
            }
        )

    async def debug_env(names: list[str]) -> dict[str, Any]:
        return answer({name: os.environ.get(name) for name in names})

    async def debug_spawn(seconds: float) -> dict[str, Any]:
        """Start a grandchild that outlives us unless someone stops our process group."""
        child = subprocess.Popen(["sleep", str(seconds)])
        return answer({"pid": child.pid})

    for fn in (
        mbe_surprise,
        mbe_route,
        mbe_memory_write,
        mbe_memory_read,
        mbe_analyze_learning,
        mbe_generate,
        debug_env,
        debug_spawn,
    ):
        tool(fn)
    return server


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--text-only", action="store_true")
    parser.add_argument("--extra-fields", action="store_true")
    parser.add_argument("--without", action="append", default=[])
    args = parser.parse_args(argv)
    print("well-behaved MBE starting", file=sys.stderr, flush=True)
    build(text_only=args.text_only, extra_fields=args.extra_fields, without=tuple(args.without)).run("stdio")


if __name__ == "__main__":
    main(sys.argv[1:])
