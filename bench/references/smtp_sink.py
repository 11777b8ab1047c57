"""An SMTP server that accepts every mail and drops it (aiosmtpd, plain, no login), for the
mail scenario: the receiving end every contender sends to."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.references._serve import parser, serve


class Drop:
    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received += 1
        return "250 Message accepted for delivery"


def main(argv: list[str]) -> int:
    args, _ = parser(__doc__).parse_known_args(argv)
    handler = Drop()

    async def start(host: str, port: int) -> tuple[int, Callable[[], Awaitable[None]]]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="bench.sink", loop=loop), host, port
        )
        bound = int(server.sockets[0].getsockname()[1])

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        return bound, stop

    serve(start, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
