"""Build `shop.sqlite`, the small shop database the text-to-SQL example queries.

Deterministic: the same seeded `random.Random` always yields the same rows, so gold SQL
results (and the dataset's result signatures) are stable across machines and rebuilds.

    python examples/text2sql/build_db.py [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sqlite3
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DB = HERE / "shop.sqlite"
SEED = 20240601

DDL = """
CREATE TABLE categories (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    city TEXT NOT NULL,
    country TEXT NOT NULL,
    signup_date TEXT NOT NULL
);
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    category_id INTEGER NOT NULL REFERENCES categories(id),
    price REAL NOT NULL,
    stock INTEGER NOT NULL
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    order_date TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE order_items (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL,
    unit_price REAL NOT NULL
);
"""

#: What the teacher is shown; kept beside the DDL so the two cannot drift apart unnoticed.
SCHEMA_SUMMARY = (
    "categories(id, name); "
    "customers(id, name, email, city, country, signup_date); "
    "products(id, name, category_id, price, stock); "
    "orders(id, customer_id, order_date, status); "
    "order_items(id, order_id, product_id, quantity, unit_price)"
)

CATEGORIES = ["Books", "Electronics", "Garden", "Kitchen", "Sports", "Toys", "Clothing", "Music"]
CITIES = {
    "Berlin": "Germany",
    "Munich": "Germany",
    "Paris": "France",
    "Lyon": "France",
    "Madrid": "Spain",
    "Rome": "Italy",
    "Milan": "Italy",
    "London": "United Kingdom",
    "Dublin": "Ireland",
    "Vienna": "Austria",
}
FIRST = ["Ada", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gia", "Hugo", "Iris", "Jon", "Kai", "Lena"]
LAST = ["Meyer", "Rossi", "Garcia", "Dubois", "Smith", "Novak", "Berg", "Costa", "Walsh", "Huber"]
ADJECTIVES = ["Classic", "Deluxe", "Compact", "Eco", "Pro", "Mini", "Smart"]
NOUNS = {
    "Books": ["Novel", "Atlas", "Cookbook"],
    "Electronics": ["Headphones", "Charger", "Speaker"],
    "Garden": ["Hose", "Shovel", "Planter"],
    "Kitchen": ["Kettle", "Pan", "Knife"],
    "Sports": ["Ball", "Racket", "Mat"],
    "Toys": ["Puzzle", "Robot", "Kite"],
    "Clothing": ["Jacket", "Scarf", "Cap"],
    "Music": ["Guitar", "Drum", "Ukulele"],
}
STATUSES = ["pending", "shipped", "delivered", "cancelled", "returned"]
STATUS_WEIGHTS = [1, 3, 8, 1, 1]
N_CUSTOMERS = 120
N_ORDERS = 400
FIRST_DAY = dt.date(2022, 1, 1)
DAYS = 3 * 365


def _day(rng: random.Random) -> str:
    return (FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS))).isoformat()


def rows(rng: random.Random) -> dict[str, list[tuple[object, ...]]]:
    categories = [(i, name) for i, name in enumerate(CATEGORIES, 1)]
    customers = []
    for i in range(1, N_CUSTOMERS + 1):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        city = rng.choice(sorted(CITIES))
        email = f"{name.lower().replace(' ', '.')}.{i}@example.com"
        customers.append((i, name, email, city, CITIES[city], _day(rng)))
    products = []
    for category_id, category in categories:
        for noun in NOUNS[category]:
            for adjective in rng.sample(ADJECTIVES, 3):
                price = round(rng.uniform(3, 400), 2)
                products.append(
                    (len(products) + 1, f"{adjective} {noun}", category_id, price, rng.randrange(0, 250))
                )
    orders, items = [], []
    for order_id in range(1, N_ORDERS + 1):
        status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
        orders.append((order_id, rng.randrange(1, N_CUSTOMERS + 1), _day(rng), status))
        for product in rng.sample(products, rng.randint(1, 4)):
            # Prices drift: an item records what was paid, not today's list price.
            paid = round(product[3] * rng.choice([1.0, 1.0, 0.9, 0.8]), 2)
            items.append((len(items) + 1, order_id, product[0], rng.randint(1, 5), paid))
    return {
        "categories": categories,
        "customers": customers,
        "products": products,
        "orders": orders,
        "order_items": items,
    }


def build(out: Path = DEFAULT_DB) -> Path:
    tmp = out.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(DDL)
        for table, table_rows in rows(random.Random(SEED)).items():
            marks = ",".join("?" * len(table_rows[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()
    # Replace atomically so a reader never sees a half-built database.
    os.replace(tmp, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DB)
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
