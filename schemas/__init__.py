"""The Avro schemas (`*.avsc`) as package data: `shared.schemas` loads them with importlib.resources,
so an installed wheel carries them too. No code lives here."""
