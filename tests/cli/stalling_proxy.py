"""A loopback TCP proxy that forwards a connection's answers until `stall_after` bytes, then holds
the connection open without sending more: a download that stops mid-file, for as long as a test wants."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class StallingProxy:
    def __init__(self, upstream_port: int, stall_after: int) -> None:
        self.upstream_port = upstream_port
        self.stall_after = stall_after
        self.forwarded = 0  # bytes of answers passed on, over all connections
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.stall_after), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, budget: int | None) -> None:
        sent = 0
        try:
            while not self._closed.is_set():
                if budget is not None and sent >= budget:
                    self._closed.wait()  # stall: keep the connection, send nothing more
                    return
                data = source.recv(65536 if budget is None else min(65536, budget - sent))
                if not data:
                    return
                sink.sendall(data)
                if budget is not None:
                    sent += len(data)
                    self.forwarded += len(data)
        except OSError:
            return

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> StallingProxy:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
