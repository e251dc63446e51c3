"""What `mbe-gateway mcp` offers: the MBE tools as the contract declares them, and the gateway's own.

The MBE tools are the embedded engine's own declarations (`engine.server.tool_list`: the
contract's exact schemas and the engine's descriptions), so an MCP client sees one set of
tools whichever engine ends up answering. The gateway's tools read the conversations the
daemon keeps, or act on them; the one that acts on the world (sending a message to a real
person) says so first in its description and is annotated as not read-only, not idempotent
and open-world, so clients that ask before such calls do ask.

Every call's arguments are checked against the tool's input schema here, before anything
is forwarded or run, so a bad call gets the same clear error from every backend and changes
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from mbe_gateway import contract

if TYPE_CHECKING:
    import mcp_types

SEND: Final = "gateway_send_message"
CONVERSATIONS: Final = "gateway_list_conversations"
SEARCH: Final = "gateway_search_history"
STATUS: Final = "gateway_status"
MBE_TOOLS: Final = contract.REQUIRED_TOOLS
GATEWAY_TOOLS: Final = (SEND, CONVERSATIONS, SEARCH, STATUS)

MAX_TEXT: Final = 32_000  # as the control protocol's `send`
_CHANNEL: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "description": "A channel name: telegram, discord or slack (cli and control hold local chats).",
}
_LIMIT: Final = {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}

INPUT_SCHEMAS: Final[Mapping[str, contract.JSONSchema]] = {
    SEND: {
        "type": "object",
        "properties": {
            "channel": _CHANNEL,
            "chat_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "description": "The chat to write in, as gateway_list_conversations shows it.",
            },
            "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
        },
        "required": ["channel", "chat_id", "text"],
    },
    CONVERSATIONS: {
        "type": "object",
        "properties": {"limit": _LIMIT, "channel": _CHANNEL},
    },
    SEARCH: {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "minLength": 1,
                "maxLength": 500,
                "description": "Words that must all appear in a message (any language, any part of a word).",
            },
            "limit": _LIMIT,
            "channel": _CHANNEL,
        },
        "required": ["query"],
    },
    STATUS: {"type": "object", "properties": {}},
}

_GATEWAY_TOOLS: Final[Mapping[str, tuple[str, str]]] = {
    SEND: (
        "Send a message to a person (acts)",
        "ACTS IN THE REAL WORLD: sends `text` as the assistant to a real person or group on Telegram, "
        "Discord or Slack. They will read it and it cannot be taken back. Use it only when the user "
        "asked for this message to be sent, to this chat; find the channel and chat_id with "
        "gateway_list_conversations. Needs the daemon (`mbe-gateway run`): without it nothing is "
        "sent or queued.",
    ),
    CONVERSATIONS: (
        "Recent conversations",
        "The assistant's conversations on its chat channels, the most recently active first: the "
        "channel, the chat_id (where gateway_send_message writes), whether it is a group, when it "
        "was last active and how many exchanges since its last reset. Reads only.",
    ),
    SEARCH: (
        "Search the message history",
        "Messages the assistant received or sent that hold every word of `query` (English, Chinese "
        "or both: words match anywhere, inside Chinese sentences too), newest first, at most "
        "`limit`, each with its channel, chat_id, who said it and when. Long messages are cut at "
        "2000 characters. Reads only.",
    ),
    STATUS: (
        "Gateway status",
        "Whether the mbe-gateway daemon runs and how its parts are (channels, engine, models, "
        "queues), and which engine this MCP server uses: the daemon's or, without a daemon, its "
        "own. Reads only.",
    ),
}

INSTRUCTIONS: Final = (
    "mbe-gateway's assistant memory and chat channels. The mbe_* tools are its MBE engine: the "
    "same memory the assistant uses when people talk to it on Telegram, Discord or Slack. Memories "
    "belong to a user_id: '<channel>:<sender id>' for a person on a channel (for example "
    "'telegram:1001'), 'cli:<login name>' for `mbe-gateway chat`, 'control:owner' for the "
    "owner through the control plane. The gateway_* tools list conversations, search what was "
    "said, show the daemon's status, and send a message to a real person (only when asked to)."
)


def tool_list() -> list[mcp_types.Tool]:
    """The MBE tools exactly as the engine declares them, then the gateway's own."""
    import mcp_types

    from mbe_gateway.engine.server import tool_list as engine_tools

    ours = [
        mcp_types.Tool(
            name=name,
            title=title,
            description=description,
            input_schema=INPUT_SCHEMAS[name],
            annotations=mcp_types.ToolAnnotations(
                read_only_hint=name != SEND,
                destructive_hint=False,
                idempotent_hint=name != SEND,
                open_world_hint=name == SEND,
            ),
        )
        for name, (title, description) in _GATEWAY_TOOLS.items()
    ]
    return [*engine_tools(), *ours]


def problem(tool: str, arguments: Mapping[str, Any]) -> str | None:
    """Why `arguments` cannot be used for `tool`, naming the field; None when they can."""
    validator = _validators().get(tool)
    if validator is None:
        return f"unknown tool {tool!r}; this server offers {', '.join((*MBE_TOOLS, *GATEWAY_TOOLS))}"
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(dict(arguments)))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "arguments"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "…"
    return f"{tool}: invalid arguments: {where}: {message}"


@cache
def _validators() -> dict[str, Any]:
    """One compiled validator per tool, made on the first call (jsonschema costs ~30 ms to import)."""
    from jsonschema import Draft202012Validator

    schemas = {**{name: contract.INPUT_SCHEMAS[name] for name in MBE_TOOLS}, **INPUT_SCHEMAS}
    return {name: Draft202012Validator(schema) for name, schema in schemas.items()}
