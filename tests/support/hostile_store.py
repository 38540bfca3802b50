"""A copy of a synthetic store whose strings are markdown images, links, autolinks and HTML.

Shared by the AppTest checks (tests/explorer/test_app.py) and the real-browser check
(tests/explorer/test_hostile_store_in_browser.py): a store is someone else's data, and every string in it must reach
the screen as text. The hosts are in TEST-NET-3 (203.0.113.0/24) and ``.example``, so a rendered image or
followed link could not reach anything even if the checks failed; the browser test records requests anyway.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

HOST = "203.0.113.9"
IMG = f"![i](http://{HOST}/img.png)"
LINK = f"[l](http://{HOST}/link)"
AUTOLINKS = "www.auto.example user@auto.example https://auto.example/x"
HTML = f"<img src=http://{HOST}/tag.png><a href=http://{HOST}/a>a</a><b>b</b>"

LAST_CHECKPOINT = f"ck {IMG} {LINK} www.ck.example"
FIRST_CHECKPOINT = f"ck0 <img src=http://{HOST}/ck0.png> user@ck.example"
CONCEPT_LABEL = f"{IMG} {LINK} {AUTOLINKS} {HTML}"
LANGUAGE_NAME = f"[lang](http://{HOST}/lang) www.lang.example {IMG}"
MODEL_ID = f"![m](http://{HOST}/model.png) https://model.example"
MODEL_CARD = f"{IMG} {LINK}\n# heading\n{HTML}\n{AUTOLINKS}"
MODULE_PATH = f"model.layers.<img src=http://{HOST}/module.png>.mlp"
HOSTILE_STRINGS = (LAST_CHECKPOINT, FIRST_CHECKPOINT, CONCEPT_LABEL, LANGUAGE_NAME, MODEL_ID, MODULE_PATH)


def rename_everywhere(con: duckdb.DuckDBPyConnection, column: str, old: str, new: str) -> None:
    """Replace the value ``old`` of ``column`` by ``new`` in every table that has the column."""
    tables = [
        t
        for (t,) in con.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = ? AND table_schema = 'main'",
            [column],
        ).fetchall()
    ]
    for table in tables:
        con.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", [new, old])


def make_hostile_store(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` and replace its strings by hostile ones; returns ``target``."""
    shutil.copyfile(source, target)
    with duckdb.connect(str(target)) as con:
        names = [r[0] for r in con.execute("SELECT checkpoint FROM checkpoints ORDER BY step").fetchall()]
        rename_everywhere(con, "checkpoint", names[-1], LAST_CHECKPOINT)
        rename_everywhere(con, "checkpoint", names[0], FIRST_CHECKPOINT)
        con.execute("UPDATE concepts SET label = ?", [CONCEPT_LABEL])
        con.execute("UPDATE languages SET name = ?", [LANGUAGE_NAME])
        con.execute("UPDATE runs SET model_id = ?, model_card = ?", [MODEL_ID, MODEL_CARD])
        con.execute("UPDATE layers SET module_path = ?", [MODULE_PATH])
    return target
