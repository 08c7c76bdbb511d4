"""The example shop database, copied so a test can prove the original was never written."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

SHOP_DB = Path(__file__).resolve().parents[2] / "examples" / "text2sql" / "shop.sqlite"


def copy_shop_db(folder: Path) -> Path:
    target = folder / "shop.sqlite"
    shutil.copyfile(SHOP_DB, target)
    return target


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
