"""The floor: the least a Telegram bot in Python can be, to measure the gateway against.

A bare aiogram echo bot, written the way aiogram's own examples write one: a Dispatcher, one
message handler, `start_polling`. No storage, no model, no access rules: whatever it costs is
the cost of aiogram, aiohttp and the Bot API round trips alone. bench/gateway.py runs it as
a process against the same fake Telegram as the daemon:

    MBE_BENCH_TELEGRAM_TOKEN=123:abc python bench/floor_bot.py --api-base http://127.0.0.1:PORT

It stops on SIGTERM or SIGINT (aiogram's own signal handling).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message

dispatcher = Dispatcher()


@dispatcher.message()
async def echo(message: Message) -> None:
    """Say it back, in the same chat, as a reply to it (as the gateway's answers are)."""
    await message.reply(message.text or "…")


async def main(api_base: str) -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_base))
    bot = Bot(os.environ["MBE_BENCH_TELEGRAM_TOKEN"], session=session)
    # 25 s long polls, as the gateway's Telegram channel makes them.
    await dispatcher.start_polling(bot, polling_timeout=25)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--api-base", required=True, help="the Bot API server, e.g. http://127.0.0.1:8081")
    asyncio.run(main(parser.parse_args().api_base))
