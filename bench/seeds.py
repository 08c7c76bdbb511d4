"""Synthetic text-to-SQL seeds, deterministic, valid for `services.seeds.model:Seed`.

The rows look like the example's (a schema summary, a question, gold SQL, a decode profile and
a system prompt) so each step does the work it does on real seeds; a small share are exact
copies of earlier rows so dedup has something to drop.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from fastdistill.ingest import read_seeds
from services.seeds.model import Seed
from shared.step import Row

SCHEMAS = {
    "shop": "categories(id, name); customers(id, name, email, city, country, signup_date); "
    "products(id, name, category_id, price, stock); orders(id, customer_id, order_date, status); "
    "order_items(id, order_id, product_id, quantity, unit_price)",
    "hr": "departments(id, name, budget); employees(id, name, department_id, salary, hired_on, manager_id); "
    "reviews(id, employee_id, year, score)",
    "library": "authors(id, name, born); books(id, title, author_id, year, genre); "
    "loans(id, book_id, member_id, loaned_on, returned_on); members(id, name, joined_on)",
}
CITIES = ["Dublin", "Lisbon", "Oslo", "Austin", "Kyoto", "Lima", "Perth", "Turin", "Quebec", "Accra"]
GENRES = ["poetry", "history", "fantasy", "crime", "science", "travel"]
STATUSES = ["shipped", "pending", "cancelled", "returned"]


def _question(rng: random.Random, i: int) -> tuple[str, str, str]:
    """(schema name, question, gold SQL); `i` makes every question distinct (the simulator's key)."""
    kind = rng.randrange(6)
    n = rng.randrange(1, 500)
    city = rng.choice(CITIES)
    if kind == 0:
        return (
            "shop",
            f"List the names of customers in {city} who signed up in batch {i}.",
            (f"SELECT name FROM customers WHERE city = '{city}' AND id % 1000 = {i % 1000};"),
        )
    if kind == 1:
        status = rng.choice(STATUSES)
        return (
            "shop",
            f"How many {status} orders did customer {i} place?",
            (f"SELECT COUNT(*) FROM orders WHERE customer_id = {i} AND status = '{status}';"),
        )
    if kind == 2:
        return (
            "shop",
            f"Which products cost more than {n} and are in stock (query {i})?",
            (f"SELECT name FROM products WHERE price > {n} AND stock > 0 ORDER BY name LIMIT {i % 97 + 1};"),
        )
    if kind == 3:
        return (
            "hr",
            f"What is the average salary in department {i}?",
            (f"SELECT AVG(salary) FROM employees WHERE department_id = {i};"),
        )
    if kind == 4:
        return (
            "hr",
            f"Name the employees reviewed with a score above {n % 5} in {1990 + i % 35} ({i}).",
            (
                "SELECT e.name FROM employees e JOIN reviews r ON r.employee_id = e.id "
                f"WHERE r.score > {n % 5} AND r.year = {1990 + i % 35};"
            ),
        )
    genre = rng.choice(GENRES)
    return (
        "library",
        f"List {genre} books loaned more than {n % 20} times, case {i}.",
        (
            "SELECT b.title FROM books b JOIN loans l ON l.book_id = b.id "
            f"WHERE b.genre = '{genre}' GROUP BY b.id HAVING COUNT(*) > {n % 20};"
        ),
    )


def generate(
    n: int, *, duplicate_rate: float = 0.02, seed: int = 0, prefix: str = "bench", offset: int = 0
) -> list[dict[str, Any]]:
    """`n` seed records; about `duplicate_rate` of them repeat an earlier record exactly.

    Sets made with offsets `n` apart share no question, so a warm-up set never warms the
    simulator's per-prompt state (or the generation cache) for the measured set.
    """
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for i in range(offset, offset + n):
        if records and rng.random() < duplicate_rate:
            records.append(dict(records[rng.randrange(len(records))]))
            continue
        schema, question, sql = _question(rng, i)
        records.append(
            {
                "task_id": f"{prefix}-{i:07d}",
                "schema": SCHEMAS[schema],
                "instruction": question,
                "gold_sql": sql,
                "decode_profile": {"temperature": rng.choice([0.0, 0.2, 0.7]), "max_tokens": 128},
                "system_prompt": "Return SQL only.",
            }
        )
    return records


def write_jsonl(records: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path


def load_rows(path: Path, run_id: str) -> list[Row]:
    """The file's seeds validated exactly as `fastdistill produce` validates them (none may fail)."""
    batch = read_seeds(path, Seed, run_id)
    if batch.dead_letters:
        raise ValueError(f"bench seeds must all be valid: {batch.dead_letters[0]['error_message']}")
    return batch.rows


def unique_count(records: list[dict[str, Any]]) -> int:
    return len({json.dumps(r, sort_keys=True) for r in records})
