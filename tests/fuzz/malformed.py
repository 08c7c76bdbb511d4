"""Generators of malformed input, driven by a `random.Random`.

The property tests hand them Hypothesis' controlled `st.randoms()` (so failures shrink); the
end-to-end test hands them a seeded `random.Random`, so its 10,000 cases are reproducible.
Every generator returns (kind, data): the kind names the malformation for the figures.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.seeds.model import MAX_CHARS
from shared.serde import SINGLE_OBJECT_MAGIC, AvroSerde, UndecodableMessage

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "examples/text2sql/seeds.jsonl"
TEXT_FIELDS = ["task_id", "schema", "instruction", "gold_sql", "system_prompt"]
REQUIRED = ["task_id", "schema", "instruction"]
CSV_COLUMNS = [*TEXT_FIELDS, "decode_profile"]


def valid_seeds() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SEEDS.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- seeds as JSON lines ---------------------------------------------------------------------------
def _wrong_value(rng: random.Random, field: str) -> Any:
    """A value of the wrong type for `field` (strict model: no coercion)."""
    choices: list[Any] = [rng.randint(-(10**6), 10**6), rng.random() * 100, rng.choice([True, False])]
    choices += [[rng.random()], {"x": rng.randint(0, 9)}]
    if field in REQUIRED:
        choices.append(None)
    if field in ("decode_profile", "temperature", "max_tokens"):
        choices.append(str(rng.randint(0, 99)))
    if field == "temperature":  # any number is the right type (an int is a valid float)
        choices = [c for c in choices if not isinstance(c, int | float) or isinstance(c, bool)]
    if field == "max_tokens":
        choices = [c for c in choices if not (isinstance(c, int) and not isinstance(c, bool))]
    return rng.choice(choices)


def _huge(rng: random.Random) -> str:
    size = MAX_CHARS + rng.randint(1, 2_000) if rng.random() < 0.95 else rng.randint(100_000, 300_000)
    return rng.choice("xé字😀") * size


def _spliced(rng: random.Random, text: str, insert: str) -> str:
    at = rng.randint(0, len(text))
    return text[:at] + insert + text[at:]


def _bad_profile(rng: random.Random, profile: dict[str, Any]) -> Any:
    bad = dict(profile or {"temperature": 0.2, "max_tokens": 128})
    change = rng.choice(["temperature", "max_tokens", "range", "extra", "missing"])
    if change in ("temperature", "max_tokens"):
        bad[change] = _wrong_value(rng, change)
    elif change == "range":
        if rng.random() < 0.5:
            bad["temperature"] = rng.choice([-0.1, 2.5, float("nan"), float("inf")])
        else:
            bad["max_tokens"] = rng.choice([0, -1, 8_193, 10**6])
    elif change == "extra":
        bad["top_p"] = 0.9
    else:
        del bad[rng.choice(["temperature", "max_tokens"])]
    return bad


def malformed_record(rng: random.Random, seed: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A seed object with exactly one thing wrong that JSON can express."""
    bad = dict(seed)
    kind = rng.choice(["missing", "wrong_type", "extra_key", "huge", "nul", "surrogate", "empty", "profile"])
    if kind == "missing":
        del bad[rng.choice(REQUIRED)]
    elif kind == "wrong_type":
        field = rng.choice(CSV_COLUMNS)
        bad[field] = _wrong_value(rng, field)
    elif kind == "extra_key":
        bad[rng.choice(["taskid", "Instruction", "gold", "", "\u00e9"])] = "x"
    elif kind == "huge":
        bad[rng.choice(TEXT_FIELDS)] = _huge(rng)
    elif kind == "nul":
        field = rng.choice(TEXT_FIELDS)
        bad[field] = _spliced(rng, bad.get(field) or "", "\x00")
    elif kind == "surrogate":  # valid JSON (an escape) but not a Unicode scalar value, so not UTF-8
        field = rng.choice(TEXT_FIELDS)
        bad[field] = _spliced(rng, bad.get(field) or "", chr(rng.randint(0xD800, 0xDFFF)))
    elif kind == "empty":
        bad[rng.choice(["task_id", "instruction"])] = ""
    else:
        bad["decode_profile"] = _bad_profile(rng, bad.get("decode_profile") or {})
    return kind, bad


def malformed_line(rng: random.Random, seed: dict[str, Any]) -> tuple[str, bytes]:
    """One JSONL line that must be rejected: a malformed object, or bytes that are no seed at all."""
    kind = rng.choice(
        ["record"] * 8 + ["invalid_utf8", "truncated", "not_object", "deep", "big_number", "duplicate_key"]
    )
    if kind == "record":
        kind, record = malformed_record(rng, seed)
        return kind, json.dumps(record).encode()
    text = json.dumps(seed, ensure_ascii=False)
    if kind == "duplicate_key":  # valid JSON whose meaning depends on the parser: rejected, naming the key
        profile = seed.get("decode_profile")
        if isinstance(profile, dict) and profile and rng.random() < 0.3:  # in the nested object
            inner = json.dumps(profile)
            twice = f'{{"{rng.choice(sorted(profile))}": 1, ' + inner[1:]
            return kind, text.replace(inner, twice, 1).encode()
        key = rng.choice(sorted(seed))
        first = json.dumps({key: rng.choice(["x", seed[key]])})
        return kind, (first[:-1] + ", " + text[1:]).encode()
    if kind == "invalid_utf8":
        at = text.index('"instruction": "') + len('"instruction": "')
        junk = rng.choice(
            [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", bytes([rng.randint(0x80, 0xBF)])]
        )
        return kind, text[:at].encode() + junk + text[at:].encode()
    if kind == "truncated":
        return kind, text[: rng.randint(1, len(text) - 1)].encode()
    if kind == "not_object":
        value = rng.choice([[seed], seed["task_id"], rng.randint(0, 9), None, True, []])
        return kind, json.dumps(value).encode()
    if kind == "deep":
        depth = rng.randint(10_000, 200_000)
        return kind, b"[" * depth + b"]" * depth
    return kind, b'{"task_id": 1' + b"9" * rng.randint(5_000, 20_000) + b"}"


# -- seeds as CSV rows -----------------------------------------------------------------------------
def csv_row(cells: dict[str, Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        [json.dumps(v) if isinstance(v, dict) else ("" if v is None else str(v)) for v in cells.values()]
    )
    return buf.getvalue().encode("utf-8", "surrogateescape")


def csv_cells(seed: dict[str, Any]) -> dict[str, Any]:
    return {c: seed.get(c) for c in CSV_COLUMNS}


def malformed_csv_row(rng: random.Random, seed: dict[str, Any]) -> tuple[str, bytes]:
    """One CSV record (under the header CSV_COLUMNS) that must be rejected."""
    cells = csv_cells(seed)
    kind = rng.choice(
        ["missing", "extra_cells", "huge", "over_csv_limit", "nul", "invalid_utf8", "duplicate_key"]
        + ["profile"] * 2
    )
    if kind == "missing":
        cells[rng.choice(REQUIRED)] = ""
    elif kind == "extra_cells":
        return kind, csv_row(cells).rstrip(b"\n") + b",x" * rng.randint(1, 3) + b"\n"
    elif kind == "huge":
        cells[rng.choice(TEXT_FIELDS)] = _huge(rng)[: MAX_CHARS + 2_000]
    elif kind == "over_csv_limit":  # beyond csv.field_size_limit(): the csv module itself refuses it
        cells[rng.choice(TEXT_FIELDS)] = "y" * rng.randint(131_073, 140_000)
    elif kind == "nul":
        field = rng.choice(TEXT_FIELDS)
        cells[field] = _spliced(rng, cells[field] or "", "\x00")
    elif kind == "duplicate_key":  # in the one cell that holds JSON
        cells["decode_profile"] = '{"max_tokens": 64, "temperature": 0.1, "max_tokens": 128}'
    elif kind == "invalid_utf8":  # surrogateescape turns these back into the raw bytes 0x80-0xff
        field = rng.choice(TEXT_FIELDS)
        cells[field] = _spliced(rng, cells[field] or "", chr(0xDC00 + rng.randint(0x80, 0xFF)))
    else:
        cells["decode_profile"] = rng.choice(
            [json.dumps(_bad_profile(rng, seed.get("decode_profile") or {})), "{broken", "fast", "[1, 2]"]
        )
    return kind, csv_row(cells)


# -- raw bytes on topics -----------------------------------------------------------------------------
def garbage_value(
    rng: random.Random,
    serde: AvroSerde,
    expected: str,
    sample: dict[str, Any],
    foreign: list[tuple[str, dict[str, Any]]],
) -> tuple[str, bytes | None]:
    """A message value that a reader expecting `expected` records must dead-letter.

    `sample` is a valid `expected` record (the base for truncation and corruption); `foreign`
    holds records of schemas with another fingerprint. Corruptions that happen to decode are
    drawn again: those are valid messages, not garbage.
    """
    makers: dict[str, Callable[[], bytes | None]] = {
        "random_bytes": lambda: rng.randbytes(rng.randint(1, 2_000)),
        "empty": lambda: rng.choice([b"", None]),
        "truncated_avro": lambda: _cut(rng, serde.encode(expected, sample)),
        "wrong_schema": lambda: serde.encode(*rng.choice(foreign)),
        "corrupt_body": lambda: (
            SINGLE_OBJECT_MAGIC + serde.schemas[expected].fingerprint + rng.randbytes(rng.randint(0, 300))
        ),
        "bit_flips": lambda: _flip(rng, serde.encode(expected, sample)),
        "unknown_fingerprint": lambda: (
            SINGLE_OBJECT_MAGIC + rng.randbytes(8) + serde.encode(expected, sample)[10:]
        ),
        "registry_framing": lambda: b"\x00" + rng.randbytes(4) + serde.encode(expected, sample)[10:],
        "trailing_bytes": lambda: serde.encode(expected, sample) + rng.randbytes(rng.randint(1, 50)),
        "huge": lambda: rng.randbytes(rng.randint(400_000, 900_000)),
    }
    kind = rng.choice(sorted(makers))
    while True:
        value = makers[kind]()
        try:
            schema, _ = serde.decode(value, expect=expected)
        except UndecodableMessage:
            return kind, value
        if schema != expected:
            return kind, value


def _cut(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randint(1, len(data) - 1)]


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randint(10, len(out) - 1)] ^= 1 << rng.randint(0, 7)
    return bytes(out)


def control_garbage(rng: random.Random) -> tuple[str, bytes]:
    """A value for the JSON control topics (runs, gates) that is not a record of them."""
    kind = rng.choice(["random_bytes", "not_json", "not_object", "missing_fields", "wrong_types", "deep"])
    if kind == "random_bytes":
        return kind, rng.randbytes(rng.randint(1, 500))
    if kind == "not_json":
        return kind, rng.choice([b'{"run_id": ', b"passed", b"\xff\xfe{}", b"{'run_id': 'x'}"])
    if kind == "not_object":
        return kind, json.dumps(rng.choice([[1, 2], "run", 7, None, True])).encode()
    if kind == "missing_fields":
        return kind, json.dumps(rng.choice([{}, {"passed": True}, {"snapshot": {}}])).encode()
    if kind == "wrong_types":
        return kind, json.dumps({"run_id": [rng.randint(0, 9)], "passed": "yes", "snapshot": 3}).encode()
    depth = rng.randint(10_000, 100_000)
    return kind, b"[" * depth + b"]" * depth


# -- whole seed files ------------------------------------------------------------------------------
@dataclass
class FileRecord:
    """A record as written: its position among the records, the physical line it starts on, its
    bytes without the line terminator, and its malformation (None: the valid `seed`)."""

    index: int
    line: int
    raw: bytes
    kind: str | None
    seed: dict[str, Any] | None = None


@dataclass
class SeedFileWriter:
    """Assembles a seed file piece by piece, noting where each record starts and its bytes."""

    data: bytearray = field(default_factory=bytearray)
    line: int = 1
    records: list[FileRecord] = field(default_factory=list)

    def put(self, chunk: bytes) -> None:
        """Bytes that are not a record: a BOM, the CSV header, blank lines."""
        self.data += chunk
        self.line += chunk.count(b"\n")

    def record(
        self, raw: bytes, terminator: bytes, kind: str | None, seed: dict[str, Any] | None = None
    ) -> None:
        self.records.append(FileRecord(len(self.records), self.line, raw, kind, seed))
        self.put(raw + terminator)

    @property
    def malformed(self) -> list[FileRecord]:
        return [r for r in self.records if r.kind is not None]

    @property
    def valid(self) -> list[FileRecord]:
        return [r for r in self.records if r.kind is None]
