"""The transport's per-frame socket calls in C (see zsock.pyx)."""

from typing import final

AVAILABLE: bool
MAX_PARTS: int

def events(sock: object) -> int: ...
def recv(sock: object, meta: bool = False
         ) -> tuple[list[bytes], int, int, str | None] | None: ...
def send(sock: object, payload: bytes, ident: bytes | None = None) -> int: ...

@final
class Tracker:
    @property
    def done(self) -> bool: ...

def send_tracked(sock: object, ident: bytes | None, payload: bytes) -> tuple[int, Tracker | None]: ...
