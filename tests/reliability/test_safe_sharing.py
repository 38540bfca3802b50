"""Safe sharing: a store from someone else is data, not code.

Opening a store runs nothing from it: SQL-looking strings are only displayed; a file that carries SQL of
its own (views, macros, computed columns) is refused before any query touches it, and even then the
connection cannot read local files or the network; no module unpickles or ``torch.load``s anything, or
executes text it read from a store; the explorer binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import duckdb
import pytest

from explorer import queries as Q
from explorer.launch import _parser, streamlit_args
from explorer.queries import StoreConnection
from precompute.cli import app
from precompute.store import StoreError, open_readonly, table_counts
from tests.support.reliability import copy_of_reference, raw_connect, runner

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def secret(tmp_path) -> Path:
    """A local file a hostile store would like to read."""
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-7f3a9c\n", encoding="utf-8")
    return path


def store_with(folder: Path, *statements: str) -> Path:
    store = copy_of_reference(folder)
    con = raw_connect(store)
    for sql in statements:
        con.execute(sql)
    con.close()
    return store


HOSTILE = [
    "INSERT INTO meta VALUES ('note', 'DROP TABLE runs; SELECT * FROM read_text(''{secret}'')')",
    "UPDATE sentences SET text = '''); DROP TABLE neuron_ap; --' WHERE sentence_id = 0",
    "UPDATE concepts SET label = '[/bold][link=file:///etc/passwd]x[/link] ''; DELETE FROM runs; --' "
    "WHERE concept_id = 'monday'",
    "UPDATE runs SET model_card = chr(27) || ']0;pwned' || chr(7) || chr(27) || '[2J [/] card', "
    "model_id = 'tiny''; ATTACH ''{secret}'' AS x; --'",
]


def test_sql_and_markup_in_a_store_are_only_displayed(tmp_path, secret):
    store = store_with(tmp_path, *[s.format(secret=secret) for s in HOSTILE])
    before = store.read_bytes()
    con = open_readonly(store)
    counts = table_counts(con)
    con.close()

    info = runner.invoke(app, ["info", str(store), "--json"])
    assert info.exit_code == 0, info.output
    run = json.loads(info.stdout)["runs"][0]
    assert run["model_id"] == f"tiny'; ATTACH '{secret}' AS x; --"
    assert run["model_card"].startswith("\x1b]0;pwned")  # JSON carries the value, escaped
    human = runner.invoke(app, ["info", str(store)])
    assert human.exit_code == 0, human.output
    assert "\x1b" not in human.stdout and "\\x1b]0;pwned" in human.stdout  # shown, not obeyed
    assert "[/] card" in human.stdout
    report = runner.invoke(app, ["report", str(store)])
    assert report.exit_code == 0, report.output

    explorer = StoreConnection(store)
    try:
        assert dict(Q.meta(explorer).iter_rows())["note"].startswith("DROP TABLE runs;")
        labels = dict(Q.concepts(explorer).select("concept_id", "label").iter_rows())
        assert labels["monday"].endswith("DELETE FROM runs; --")
    finally:
        explorer.close()

    assert "TOP-SECRET" not in info.output + human.output + report.output
    assert store.read_bytes() == before
    con = open_readonly(store)
    assert table_counts(con) == counts  # nothing dropped, nothing deleted
    con.close()


CODE_IN_THE_FILE = {
    "view": ("DROP TABLE neuron_ap", "CREATE VIEW neuron_ap AS SELECT content AS lang FROM read_text('{secret}')"),
    "macro": ("CREATE MACRO leak() AS TABLE SELECT * FROM read_text('{secret}')",),
    "scalar-macro": ("CREATE MACRO add_one(x) AS x + 1",),
    "computed-column": ("CREATE TABLE extra (a INTEGER, b VARCHAR GENERATED ALWAYS AS (CAST(a AS VARCHAR)))",),
    "column-default": ("ALTER TABLE meta ADD COLUMN note VARCHAR DEFAULT 'x'",),
}


@pytest.mark.parametrize("case", sorted(CODE_IN_THE_FILE))
def test_a_store_that_carries_sql_is_refused(case, tmp_path, secret):
    store = store_with(tmp_path, *[s.format(secret=secret) for s in CODE_IN_THE_FILE[case]])
    before = store.read_bytes()
    with pytest.raises(StoreError, match="a store holds only tables of data"):
        open_readonly(store)
    with pytest.raises(StoreError):
        StoreConnection(store)  # the explorer's connection goes through the same check
    for args in (["info", str(store)], ["report", str(store)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(store) in errors[0] and "not a crossling store" in errors[0], result.stderr
        assert "TOP-SECRET" not in result.output
    assert store.read_bytes() == before


def test_store_connections_cannot_reach_files_or_the_network(tmp_path, secret):
    store = copy_of_reference(tmp_path)
    con = open_readonly(store)
    try:
        for sql in (
            f"SELECT * FROM read_text('{secret}')",
            f"SELECT * FROM read_csv('{secret}')",
            f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
            f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'",
            "SELECT * FROM read_csv('https://example.invalid/x.csv')",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql).fetchall()
    finally:
        con.close()
    assert not (tmp_path / "out.csv").exists()


# --- the code base: no deserialisation of code, no SQL taken from data -------------------------------------

SOURCES = sorted(p for pkg in ("precompute", "explorer") for p in (REPO / pkg).rglob("*.py"))
FORBIDDEN_IMPORTS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_loads_code_from_data(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {(node.module or "").split(".")[0]}
        else:
            names = set()
        assert not names & FORBIDDEN_IMPORTS, f"{path.name}:{node.lineno} imports {names & FORBIDDEN_IMPORTS}"
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            assert not (isinstance(func, ast.Name) and name in ("eval", "exec")), f"{path.name}:{node.lineno} {name}()"
            assert not (owner == "torch" and name == "load"), f"{path.name}:{node.lineno} torch.load"
            assert not (
                owner == "np"
                and name == "load"
                and not any(k.arg == "allow_pickle" and getattr(k.value, "value", True) is False for k in node.keywords)
            ), f"{path.name}:{node.lineno} np.load without allow_pickle=False"
    # SQL the store carries (views, macros, 'sql' columns of the catalog) is never read back and run.
    assert not re.search(r"SELECT\s+sql\b", source, re.IGNORECASE), f"{path.name} reads stored SQL"
    assert not re.search(r"\b(INSTALL|LOAD)\s+['\"]?\w+['\"]?\s*;?\s*[\"']", source), (
        f"{path.name} loads a DuckDB extension"
    )


# --- the explorer listens on this machine only, unless told otherwise ---------------------------------------


def test_explorer_binds_localhost_by_default():
    args = _parser().parse_args(["store.duckdb"])
    assert args.host == "127.0.0.1"
    argv = streamlit_args(Path("store.duckdb"), port=None, host=args.host, no_browser=True)
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    told = _parser().parse_args(["store.duckdb", "--host", "0.0.0.0"])
    argv = streamlit_args(Path("store.duckdb"), port=None, host=told.host, no_browser=True)
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0"
    # No packaged Streamlit config widens it behind the command line's back.
    for config in [*REPO.glob("explorer/**/*.toml"), *REPO.glob(".streamlit/*.toml")]:
        text = config.read_text(encoding="utf-8")
        assert not re.search(r"^\s*address\s*=\s*\"(?!127\.0\.0\.1|localhost)", text, re.MULTILINE), config
