"""Record and hints codec of the storage engine (formats: record.pxd)."""

HEADER_SIZE: int  # 16
VERSION: int  # 1
TOMBSTONE: int  # flag bit0
ZSTD: int  # flag bit1
MAX_KEY: int  # 65536
HINT_HEADER_SIZE: int
HINT_ENTRY_SIZE: int
HINT_TRAILER_SIZE: int
HINT_VERSION: int
HINT_MAGIC: bytes

def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc``."""
def encode(key: bytes, value: bytes, flags: int = 0) -> bytes:
    """One record (header + key + value, CRC set)."""
def record_size(data: object, offset: int = 0) -> int:
    """Size of the plausible record header at ``offset``, 0 if none (CRC not checked)."""
def decode(data: object, offset: int = 0) -> tuple[int, bytes, bytes, int]:
    """``(flags, key, stored_value, size)``; raises zkv.errors.CorruptRecord if bad."""
def scan(data: object) -> list[tuple[int, int, int, bytes, bool]]:
    """``[(offset, size, flags, key, ok)]`` over a segment image, resynchronising after bad bytes."""
def build_hints(data: object, end: int = -1) -> bytes:
    """Hints file bytes for the valid records of a segment image."""
def hints_ok(data: object) -> bool:
    """True if ``data`` is a complete hints file with a good CRC whose every entry's key is
    1..MAX_KEY bytes (a record's bounds): exactly the files ``KeyDir.load_hints`` accepts."""
def parse_hints(data: object) -> list[tuple[int, int, int, int, bytes]] | None:
    """``[(hash, offset, size, flags, key)]``, or None if the hints file is bad (not
    ``hints_ok``: ``KeyDir.load_hints`` returns -1 for the same files)."""
def key_hash(key: bytes) -> int:
    """zkv_hash64(key) == mmh3.hash64(key, signed=False)[0]."""
