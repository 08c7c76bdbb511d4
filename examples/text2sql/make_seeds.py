"""Generate `seeds.jsonl` (and `seeds_bad.jsonl`) for the text-to-SQL example.

Deterministic: questions come from templates over the rows of `shop.sqlite` and a seeded
`random.Random`. Every gold query is run before it is written, and must return rows. The
file deliberately contains exact duplicates (dedup must drop them), near duplicates (the
instruction differs only in case or whitespace, so they hash differently and survive) and
questions whose answer has more than 100 rows (to exercise row limits and signatures).

    python examples/text2sql/make_seeds.py [--db PATH] [--out PATH] [--bad-out PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from build_db import DEFAULT_DB, SCHEMA_SUMMARY

HERE = Path(__file__).resolve().parent
SEED = 7
N_EXACT_DUPLICATES = 12
N_NEAR_DUPLICATES = 12
SYSTEM_PROMPT = "Return SQL only."
PROFILES = [
    {"temperature": 0.2, "max_tokens": 128},
    {"temperature": 0.0, "max_tokens": 256},
    {"temperature": 0.7, "max_tokens": 128},
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

Question = tuple[str, str]

STATIC: list[Question] = [
    ("How many customers are there?", "SELECT COUNT(*) FROM customers;"),
    ("How many products does the shop sell?", "SELECT COUNT(*) FROM products;"),
    ("List all category names in alphabetical order.", "SELECT name FROM categories ORDER BY name;"),
    (
        "What is the total revenue of all order items (quantity times unit price)?",
        "SELECT ROUND(SUM(quantity * unit_price), 2) FROM order_items;",
    ),
    ("What is the most expensive product?", "SELECT name FROM products ORDER BY price DESC LIMIT 1;"),
    (
        "What is the cheapest product and its price?",
        "SELECT name, price FROM products ORDER BY price ASC LIMIT 1;",
    ),
    ("How many orders does each status have?", "SELECT status, COUNT(*) FROM orders GROUP BY status;"),
    (
        "How many customers are there in each country?",
        "SELECT country, COUNT(*) FROM customers GROUP BY country;",
    ),
    (
        "How many products are in each category? Give the category name and the count.",
        "SELECT c.name, COUNT(p.id) FROM categories c LEFT JOIN products p ON p.category_id = c.id "
        "GROUP BY c.id, c.name;",
    ),
    (
        "What is the revenue of each category?",
        "SELECT c.name, ROUND(SUM(oi.quantity * oi.unit_price), 2) FROM categories c "
        "JOIN products p ON p.category_id = c.id JOIN order_items oi ON oi.product_id = p.id "
        "GROUP BY c.id, c.name;",
    ),
    (
        "Which products appear in fewer than 10 order items?",
        "SELECT p.name FROM products p LEFT JOIN order_items oi ON oi.product_id = p.id GROUP BY p.id "
        "HAVING COUNT(oi.id) < 10;",
    ),
    (
        "How many customers have never placed an order?",
        "SELECT COUNT(*) FROM customers WHERE id NOT IN (SELECT customer_id FROM orders);",
    ),
    ("What is the date of the most recent order?", "SELECT MAX(order_date) FROM orders;"),
    ("When did the first customer sign up?", "SELECT MIN(signup_date) FROM customers;"),
    (
        "What is the average number of items per order?",
        "SELECT ROUND(AVG(n), 2) FROM (SELECT COUNT(*) AS n FROM order_items GROUP BY order_id);",
    ),
    ("What is the average product price?", "SELECT ROUND(AVG(price), 2) FROM products;"),
    ("How many units are in stock across all products?", "SELECT SUM(stock) FROM products;"),
    (
        "Which city has the most customers?",
        "SELECT city FROM customers GROUP BY city ORDER BY COUNT(*) DESC, city LIMIT 1;",
    ),
    (
        "Which customer has spent the most money? Give the name.",
        "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id "
        "JOIN order_items oi ON oi.order_id = o.id GROUP BY c.id "
        "ORDER BY SUM(oi.quantity * oi.unit_price) DESC LIMIT 1;",
    ),
    (
        "How many orders were cancelled or returned?",
        "SELECT COUNT(*) FROM orders WHERE status IN ('cancelled', 'returned');",
    ),
    ("List the distinct countries customers come from.", "SELECT DISTINCT country FROM customers;"),
    (
        "What is the largest quantity of a single product in one order item?",
        "SELECT MAX(quantity) FROM order_items;",
    ),
    (
        "How many order items were sold below the product's current list price?",
        "SELECT COUNT(*) FROM order_items oi JOIN products p ON p.id = oi.product_id "
        "WHERE oi.unit_price < p.price;",
    ),
    (
        "How many orders does each year have?",
        "SELECT strftime('%Y', order_date), COUNT(*) FROM orders GROUP BY 1;",
    ),
    (
        "Which category has the highest average product price?",
        "SELECT c.name FROM categories c JOIN products p ON p.category_id = c.id GROUP BY c.id "
        "ORDER BY AVG(p.price) DESC LIMIT 1;",
    ),
]

#: Answers with more than 100 rows.
MANY_ROWS: list[Question] = [
    ("List the name and email of every customer.", "SELECT name, email FROM customers;"),
    ("List the id and date of every order.", "SELECT id, order_date FROM orders;"),
    (
        "List every order item with its order id, product id and quantity.",
        "SELECT order_id, product_id, quantity FROM order_items;",
    ),
    ("List all customers ordered by signup date.", "SELECT name FROM customers ORDER BY signup_date, id;"),
    (
        "List each order id with the name of the customer who placed it.",
        "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id;",
    ),
    (
        "List each order id with its total value.",
        "SELECT order_id, ROUND(SUM(quantity * unit_price), 2) FROM order_items GROUP BY order_id;",
    ),
    (
        "List each order id with the number of items it contains.",
        "SELECT order_id, COUNT(*) FROM order_items GROUP BY order_id;",
    ),
    (
        "List every product name that appears in an order item, once per item.",
        "SELECT p.name FROM order_items oi JOIN products p ON p.id = oi.product_id;",
    ),
    (
        "List the ids of all orders that were not cancelled.",
        "SELECT id FROM orders WHERE status <> 'cancelled';",
    ),
    (
        "List the email addresses of customers who placed at least one order, one row per order.",
        "SELECT c.email FROM orders o JOIN customers c ON c.id = o.customer_id;",
    ),
]


def templated(conn: sqlite3.Connection, rng: random.Random) -> Iterator[Question]:
    def column(sql: str) -> list[Any]:
        return [r[0] for r in conn.execute(sql)]

    cities = column("SELECT DISTINCT city FROM customers ORDER BY city")
    countries = column("SELECT DISTINCT country FROM customers ORDER BY country")
    categories = column("SELECT name FROM categories ORDER BY id")
    statuses = column("SELECT DISTINCT status FROM orders ORDER BY status")
    years = column("SELECT DISTINCT strftime('%Y', order_date) FROM orders ORDER BY 1")
    products = rng.sample(column("SELECT name FROM products ORDER BY id"), 24)
    customer_ids = rng.sample(column("SELECT DISTINCT customer_id FROM orders ORDER BY 1"), 30)

    for city in cities:
        yield (
            f"List the names of customers who live in {city}.",
            f"SELECT name FROM customers WHERE city = '{city}';",
        )
        yield (
            f"How many customers live in {city}?",
            f"SELECT COUNT(*) FROM customers WHERE city = '{city}';",
        )
    for country in countries:
        yield (
            f"How many customers are from {country}?",
            f"SELECT COUNT(*) FROM customers WHERE country = '{country}';",
        )
        yield (
            f"List the emails of customers from {country}, sorted by name.",
            f"SELECT email FROM customers WHERE country = '{country}' ORDER BY name;",
        )
    join_category = "FROM products p JOIN categories c ON c.id = p.category_id"
    for cat in categories:
        yield (
            f"List the names and prices of products in the {cat} category, most expensive first.",
            f"SELECT p.name, p.price {join_category} WHERE c.name = '{cat}' ORDER BY p.price DESC;",
        )
        yield (
            f"What is the average price of {cat} products?",
            f"SELECT ROUND(AVG(p.price), 2) {join_category} WHERE c.name = '{cat}';",
        )
        yield (
            f"How many units of {cat} products have been ordered in total?",
            f"SELECT SUM(oi.quantity) FROM order_items oi JOIN products p ON p.id = oi.product_id "
            f"JOIN categories c ON c.id = p.category_id WHERE c.name = '{cat}';",
        )
    for status in statuses:
        yield (
            f"How many orders have the status '{status}'?",
            f"SELECT COUNT(*) FROM orders WHERE status = '{status}';",
        )
        yield (
            f"List the ids of orders with the status '{status}'.",
            f"SELECT id FROM orders WHERE status = '{status}';",
        )
    for year in years:
        yield (
            f"How many orders were placed in {year}?",
            f"SELECT COUNT(*) FROM orders WHERE strftime('%Y', order_date) = '{year}';",
        )
        yield (
            f"List the id and date of every order placed in {year}.",
            f"SELECT id, order_date FROM orders WHERE strftime('%Y', order_date) = '{year}';",
        )
        yield (
            f"List the names of customers who signed up in {year}.",
            f"SELECT name FROM customers WHERE strftime('%Y', signup_date) = '{year}';",
        )
    for number, month in enumerate(MONTHS, 1):
        yield (
            f"How many orders were placed in {month} 2023?",
            f"SELECT COUNT(*) FROM orders WHERE strftime('%Y-%m', order_date) = '2023-{number:02d}';",
        )
    for product in products:
        yield (
            f"What is the price of the {product}?",
            f"SELECT price FROM products WHERE name = '{product}';",
        )
        yield (
            f"How many units of the {product} have been sold?",
            f"SELECT COALESCE(SUM(oi.quantity), 0) FROM order_items oi JOIN products p "
            f"ON p.id = oi.product_id WHERE p.name = '{product}';",
        )
    for customer_id in customer_ids[:20]:
        yield (
            f"List the ids of the orders placed by customer {customer_id}, oldest first.",
            f"SELECT id FROM orders WHERE customer_id = {customer_id} ORDER BY order_date, id;",
        )
    for customer_id in customer_ids[20:]:
        yield (
            f"What is the email address of the customer with id {customer_id}?",
            f"SELECT email FROM customers WHERE id = {customer_id};",
        )
    for limit in (10, 25, 50, 100):
        yield (
            f"List the names of products cheaper than {limit} dollars.",
            f"SELECT name FROM products WHERE price < {limit};",
        )
    for limit in (10, 20, 50):
        yield (
            f"Which products have fewer than {limit} units in stock?",
            f"SELECT name FROM products WHERE stock < {limit};",
        )
    for n in (3, 5, 10):
        yield (
            f"Which {n} customers have placed the most orders? Break ties by customer id.",
            f"SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id "
            f"ORDER BY COUNT(*) DESC, c.id LIMIT {n};",
        )
        yield (
            f"What are the {n} products with the highest revenue? Break ties by product id.",
            f"SELECT p.name FROM products p JOIN order_items oi ON oi.product_id = p.id GROUP BY p.id "
            f"ORDER BY SUM(oi.quantity * oi.unit_price) DESC, p.id LIMIT {n};",
        )


def near_duplicate(instruction: str, variant: int) -> str:
    """The same question in a different case or spacing: equal to a human, not to a hash."""
    words = instruction.split(" ")
    return [
        instruction.lower(),
        instruction.upper(),
        "  ".join(words),
        f"  {instruction}",
        f"{instruction} ",
        " ".join([*words[:2], words[2].upper(), *words[3:]]) if len(words) > 2 else instruction.swapcase(),
    ][variant % 6]


def generate(db: Path) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        questions = [*STATIC, *MANY_ROWS, *templated(conn, rng)]
        for instruction, sql in questions:
            # A gold query that fails or answers nothing would make every teacher look wrong.
            if not conn.execute(sql).fetchall():
                raise SystemExit(f"gold SQL returns no rows: {instruction!r}: {sql}")
    finally:
        conn.close()
    rng.shuffle(questions)
    near = rng.sample(range(len(questions)), N_NEAR_DUPLICATES)
    questions += [(near_duplicate(questions[i][0], k), questions[i][1]) for k, i in enumerate(near)]
    seeds = [
        {
            "task_id": f"text2sql-{n:03d}",
            "schema": SCHEMA_SUMMARY,
            "instruction": instruction,
            "gold_sql": sql,
            "decode_profile": PROFILES[n % len(PROFILES)],
            "system_prompt": SYSTEM_PROMPT,
        }
        for n, (instruction, sql) in enumerate(questions, 1)
    ]
    # Exact copies land somewhere after their original, as re-sent records would.
    for original in rng.sample(range(len(seeds)), N_EXACT_DUPLICATES):
        seeds.insert(rng.randrange(original + 1, len(seeds) + 1), dict(seeds[original]))
    return seeds


def bad_lines() -> list[str]:
    """One malformed record per line; each must be rejected at ingest."""
    good = {
        "task_id": "bad-000",
        "schema": SCHEMA_SUMMARY,
        "instruction": "How many customers are there?",
        "gold_sql": "SELECT COUNT(*) FROM customers;",
        "decode_profile": {"temperature": 0.2, "max_tokens": 128},
        "system_prompt": SYSTEM_PROMPT,
    }

    def variant(n: int, **changes: Any) -> str:
        record = {**good, "task_id": f"bad-{n:03d}", **changes}
        return json.dumps({k: v for k, v in record.items() if v is not _DROP})

    return [
        variant(1, task_id=_DROP),
        variant(2, instruction=_DROP),
        variant(3, schema=_DROP),
        variant(4, decode_profile={"temperature": 0.2, "max_tokens": "128"}),
        variant(5, decode_profile={"temperature": "0.2", "max_tokens": 128}),
        variant(6, decode_profile={"temperature": 3.5, "max_tokens": 128}),
        variant(7, decode_profile={"temperature": 0.2, "max_tokens": 0}),
        variant(8, decode_profile={"temperature": 0.2, "max_tokens": 128, "top_p": 0.9}),
        variant(9, instruction="How many\x00 customers are there?"),
        variant(10, instruction="x" * 30_000),
        variant(11, difficulty="easy"),
        variant(12, task_id=12),
        variant(13, instruction=""),
        variant(14, gold_sql=["SELECT 1;"]),
        variant(15, decode_profile="fast"),
        '{"task_id": "bad-016", "schema": "customers(id)", "instruction": ',
        "this line is not JSON at all",
        '["text2sql-018", "customers(id)", "How many customers are there?"]',
    ]


_DROP = object()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--out", type=Path, default=HERE / "seeds.jsonl")
    parser.add_argument("--bad-out", type=Path, default=HERE / "seeds_bad.jsonl")
    args = parser.parse_args()
    seeds = generate(args.db)
    args.out.write_text("".join(json.dumps(s) + "\n" for s in seeds), encoding="utf-8")
    args.bad_out.write_text("".join(line + "\n" for line in bad_lines()), encoding="utf-8")
    print(f"{len(seeds)} seeds -> {args.out}; {len(bad_lines())} bad lines -> {args.bad_out}")


if __name__ == "__main__":
    main()
