"""``explorer [STORE] [--port N] [--host H] [--no-browser]``: open a crossling store in the browser.

Runs ``streamlit run`` on the package's own ``app.py`` (package data of an installed explorer) in this process,
with the store passed through $CROSSLING_STORE, bound to 127.0.0.1 unless ``--host`` says otherwise. With no
STORE it opens the demo store ``data/demo.duckdb`` of the current folder and says how to build it when it is
missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="explorer",
        description="Explore a crossling store (a DuckDB file written by `precompute`) in the browser.",
    )
    p.add_argument("store", nargs="?", help="the store to open (default: data/demo.duckdb in the current folder)")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: 8501, or the next free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window (headless server)")
    return p


def resolve_store(arg: str | None) -> tuple[Path | None, str | None]:
    """The store path, or None and the one-line reason it cannot be opened."""
    from explorer.paths import BUILD_HINT, default_store

    if arg is None:
        path = default_store()
        if not path.exists():
            return None, f"no store given and the demo store {path} does not exist. {BUILD_HINT}"
        return path.resolve(), None
    path = Path(arg).expanduser()
    if not path.exists():
        return None, f"{path}: no such store. {BUILD_HINT}"
    if path.is_dir():
        return None, f"{path}: is a directory; give the store's .duckdb file"
    return path.resolve(), None


def streamlit_args(store: Path, *, port: int | None, host: str, no_browser: bool) -> list[str]:
    """The ``streamlit run`` command line (without the program name)."""
    args = [
        "run", str(APP),
        "--server.address", host,
        "--server.headless", "true" if no_browser else "false",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", "localhost" if host in ("127.0.0.1", "localhost") else host,
        "--client.toolbarMode", "viewer",
        "--theme.base", "light",
    ]
    if port is not None:
        args += ["--server.port", str(port), "--browser.serverPort", str(port)]
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        print(f"explorer: --port {args.port}: not a TCP port (1-65535)", file=sys.stderr)
        return 2
    store, problem = resolve_store(args.store)
    if store is None:
        print(f"explorer: {problem}", file=sys.stderr)
        return 2
    # A file that is not a readable store of our schema is reported here and, in more detail, in the app.
    from precompute.store import StoreError, open_readonly

    try:
        open_readonly(store).close()
    except StoreError as exc:
        print(f"explorer: warning: {exc}; the app will say what to do.", file=sys.stderr)

    os.environ["CROSSLING_STORE"] = str(store)
    # The app imports ``explorer`` from wherever this launcher was imported (a checkout or site-packages).
    home = str(APP.parents[1])
    os.environ["PYTHONPATH"] = home + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    if home not in sys.path:
        sys.path.insert(0, home)
    where = f"http://{'localhost' if args.host in ('127.0.0.1', 'localhost') else args.host}:{args.port or 8501}"
    print(f"explorer: serving {store} at {where} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    from streamlit.web import cli as stcli

    sys.argv = ["streamlit", *streamlit_args(store, port=args.port, host=args.host, no_browser=args.no_browser)]
    try:
        stcli.main(prog_name="streamlit")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
