"""A proxy that passes requests on as they come but holds every response until it is complete,
as some corporate proxies and a misconfigured nginx do: a page, a ticket or a long poll gets
through, an SSE stream (a response that never ends) never does."""

from __future__ import annotations

import asyncio
import re
import socket
import threading

from conftest import free_port, until


class BufferingProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "BufferingProxy":
        self._thread.start()

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        until(listening, 10, "the buffering proxy to listen")
        return self

    def stop(self):
        async def cancel_connections():
            self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_connections(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", self.port))
        self._loop.run_forever()

    async def _connection(self, client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return

        async def requests():
            try:
                while data := await client_reader.read(65536):
                    upstream_writer.write(data)
                    await upstream_writer.drain()
            except ConnectionError:
                pass
            finally:
                upstream_writer.close()

        async def responses():
            try:
                while True:
                    head = await upstream_reader.readuntil(b"\r\n\r\n")
                    text = head.decode("latin-1").lower()
                    status = int(text.split(" ", 2)[1])
                    length = re.search(r"\r\ncontent-length:\s*(\d+)", text)
                    if status in (101, 204, 304) or status < 200:
                        body = b""
                    elif "\r\ntransfer-encoding: chunked" in text:
                        body = b""
                        while True:  # the whole chunked body, held until its last chunk
                            size_line = await upstream_reader.readuntil(b"\r\n")
                            size = int(size_line.split(b";")[0], 16)
                            body += size_line + await upstream_reader.readexactly(size + 2)
                            if size == 0:
                                break
                    elif length:
                        body = await upstream_reader.readexactly(int(length.group(1)))
                    else:
                        body = await upstream_reader.read()  # until the connection closes
                    client_writer.write(head + body)
                    await client_writer.drain()
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                pass
            finally:
                client_writer.close()

        await asyncio.gather(requests(), responses(), return_exceptions=True)
