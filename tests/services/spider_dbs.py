"""Three small Spider-style databases and seeds over them, built where a test asks.

Spider lays a database out as `<db_id>/<db_id>.sqlite`; two of these use that layout and one the
flat `<db_id>.sqlite`, so both lookups of `db_dir` are exercised. The same question text and the
same gold SQL text appear on two databases with different answers: only the per-row database
tells them apart.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

#: db_id -> (layout, CREATE + INSERT script)
DATABASES: dict[str, tuple[str, str]] = {
    "concert_singer": (
        "spider",
        """
        CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
        INSERT INTO singer VALUES (1, 'Joe Sharp', 'Netherlands', 52),
            (2, 'Timbaland', 'United States', 32), (3, 'Justin Brown', 'France', 29),
            (4, 'Rose White', 'France', 41), (5, 'John Nizinik', 'France', 43);
        CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, year INTEGER);
        INSERT INTO concert VALUES (1, 'Auditions', 2014), (2, 'Super bootcamp', 2014),
            (3, 'Home Visits', 2015);
        CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT);
        INSERT INTO items VALUES (1, 'mic'), (2, 'stage');
        """,
    ),
    "pets_1": (
        "spider",
        """
        CREATE TABLE student (stuid INTEGER PRIMARY KEY, lname TEXT, fname TEXT, age INTEGER, sex TEXT);
        INSERT INTO student VALUES (1001, 'Smith', 'Linda', 18, 'F'), (1002, 'Kim', 'Tracy', 19, 'F'),
            (1003, 'Jones', 'Shiela', 21, 'F'), (1004, 'Kumar', 'Dinesh', 20, 'M');
        CREATE TABLE pets (petid INTEGER PRIMARY KEY, pettype TEXT, pet_age INTEGER, weight REAL);
        INSERT INTO pets VALUES (2001, 'cat', 3, 12.0), (2002, 'dog', 2, 13.4), (2003, 'dog', 1, 9.3);
        CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT);
        INSERT INTO items VALUES (1, 'leash'), (2, 'bowl'), (3, 'brush');
        """,
    ),
    "world_1": (
        "flat",
        """
        CREATE TABLE country (code TEXT PRIMARY KEY, name TEXT, continent TEXT, population INTEGER);
        INSERT INTO country VALUES ('ABW', 'Aruba', 'North America', 103000),
            ('AFG', 'Afghanistan', 'Asia', 22720000), ('AGO', 'Angola', 'Africa', 12878000),
            ('FRA', 'France', 'Europe', 59225700);
        CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT);
        INSERT INTO items VALUES (1, 'atlas');
        """,
    ),
}

#: (db_id, question, gold SQL); the "items" questions are the same text on every database.
QUESTIONS: list[tuple[str, str, str]] = [
    ("concert_singer", "How many singers do we have?", "SELECT count(*) FROM singer"),
    (
        "concert_singer",
        "List the names of singers from France.",
        "SELECT name FROM singer WHERE country = 'France'",
    ),
    ("concert_singer", "What is the average age of singers?", "SELECT avg(age) FROM singer"),
    (
        "concert_singer",
        "Which concerts took place in 2014?",
        "SELECT concert_name FROM concert WHERE year = 2014",
    ),
    ("concert_singer", "How many items are there?", "SELECT count(*) FROM items"),
    ("pets_1", "How many dogs are there?", "SELECT count(*) FROM pets WHERE pettype = 'dog'"),
    ("pets_1", "What is the maximum weight of a pet?", "SELECT max(weight) FROM pets"),
    ("pets_1", "List the first names of female students.", "SELECT fname FROM student WHERE sex = 'F'"),
    ("pets_1", "How many items are there?", "SELECT count(*) FROM items"),
    ("world_1", "Which countries are in Africa?", "SELECT name FROM country WHERE continent = 'Africa'"),
    ("world_1", "What is the total population?", "SELECT sum(population) FROM country"),
    ("world_1", "How many items are there?", "SELECT count(*) FROM items"),
    # A gold that does not run on its own database (the table is another database's).
    ("world_1", "How many singers live in the world?", "SELECT count(*) FROM singer"),
]


def build_databases(folder: Path) -> dict[str, Path]:
    """The three databases under `folder`; db_id -> file."""
    paths = {}
    for db_id, (layout, script) in DATABASES.items():
        path = folder / db_id / f"{db_id}.sqlite" if layout == "spider" else folder / f"{db_id}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path)
        conn.executescript(script)
        conn.commit()
        conn.close()
        paths[db_id] = path
    return paths


def schema_of(db_id: str) -> str:
    script = DATABASES[db_id][1]
    tables = [
        line.strip().removeprefix("CREATE TABLE ").split(" (")[0]
        for line in script.splitlines()
        if "CREATE TABLE" in line
    ]
    return ", ".join(tables)


def seeds() -> list[dict[str, Any]]:
    return [
        {
            "task_id": f"spider-{i:03d}",
            "schema": schema_of(db_id),
            "instruction": question,
            "gold_sql": gold,
            "system_prompt": "Return SQL only.",
            "db_id": db_id,
        }
        for i, (db_id, question, gold) in enumerate(QUESTIONS)
    ]


def write_seeds(path: Path) -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in seeds()), encoding="utf-8")
    return path
