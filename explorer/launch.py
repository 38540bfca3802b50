"""``explorer [STORE] [--port N] [--host H] [--no-browser]``: open a crossling store in the browser.

Runs ``streamlit run`` on the package's own ``app.py`` (package data of an installed explorer) in this process,
with the store passed through $CROSSLING_STORE, bound to 127.0.0.1 unless ``--host`` says otherwise. With no
STORE it opens the demo store ``data/demo.duckdb`` of the current folder and says how to build it when it is
missing.

Before Streamlit starts, the host is checked (an IP address, or a name this machine resolves, that can be
listened on here) and the port is chosen and bind-tested here: ``--port`` as given, else the first free one
from 8501 on. That port is passed to Streamlit explicitly, so the URL printed is the one served, and a bad
host or a taken port is one line, not a traceback.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import socket
import sys
import threading
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")
DEFAULT_PORT = 8501  # Streamlit's own default
PORT_SEARCH = 100  # ports tried after DEFAULT_PORT when no --port is given
RESOLVE_TIMEOUT_S = 5.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="explorer",
        description="Explore a crossling store (a DuckDB file written by `precompute`) in the browser.",
    )
    p.add_argument("store", nargs="?", help="the store to open (default: data/demo.duckdb in the current folder)")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to serve on (default: {DEFAULT_PORT}, or the next free one; the one used is printed)",
    )
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


def _resolve_ipv4(name: str) -> str | None:
    """The first IPv4 address ``name`` resolves to (as Streamlit binds a name), None when it does not resolve
    within RESOLVE_TIMEOUT_S."""
    found: list[str] = []

    def look_up() -> None:
        try:
            found.extend(info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM))
        except (OSError, UnicodeError):
            pass

    worker = threading.Thread(target=look_up, daemon=True)
    worker.start()
    worker.join(RESOLVE_TIMEOUT_S)
    return found[0] if found else None


def check_host(host: str) -> str | None:
    """None when ``host`` is an IP address or a name that resolves; else the one-line reason it is not."""
    shown = ascii(host) if not host.isprintable() else host
    if not host.strip():
        return "--host is empty; give an address of this machine such as 127.0.0.1 (the default)"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host) or ":" in host:
        return f"--host {shown}: not a valid IP address (e.g. 127.0.0.1, 0.0.0.0 or ::1)"
    if _resolve_ipv4(host) is None:
        return f"--host {shown}: not an IP address and not a name this machine can resolve"
    return None


def bind_problem(host: str, port: int) -> str | None:
    """None when a server can listen on (host, port) now (bound the way Streamlit binds: SO_REUSEADDR, IPv6
    when the address has a colon); else the one-line reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use (another explorer?)"
            if exc.errno == errno.EACCES:
                return f"port {port} on {host}: permission denied (ports below 1024 need privileges)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"--host {host}: not an address of this machine, so nothing can be served there"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def choose_port(host: str, port: int | None) -> tuple[int | None, str | None]:
    """The port to serve on, or None and the one-line reason. A given ``port`` must be free; without one, the
    first free port from DEFAULT_PORT on is taken (and later passed to Streamlit explicitly, so the URL
    printed is the one served)."""
    if port is not None:
        problem = bind_problem(host, port)
        if problem is None:
            return port, None
        if "in use" in problem:
            problem += "; choose another with --port, or leave --port out to take the next free one"
        return None, problem
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + PORT_SEARCH + 1):
        problem = bind_problem(host, candidate)
        if problem is None:
            return candidate, None
        if "in use" not in problem:
            return None, problem  # the address itself is the problem: no other port helps
    return None, f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORT_SEARCH} on {host} are all in use; give one with --port"


def url_for(host: str, port: int) -> str:
    """The address a browser on this machine opens for a server bound to ``host``."""
    name = "localhost" if host in ("127.0.0.1", "localhost") else f"[{host}]" if ":" in host else host
    return f"http://{name}:{port}"


def streamlit_args(store: Path, *, port: int | None, host: str, no_browser: bool) -> list[str]:
    """The ``streamlit run`` command line (without the program name)."""
    args = [
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.headless",
        "true" if no_browser else "false",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--browser.gatherUsageStats",
        "false",
        "--browser.serverAddress",
        "localhost" if host in ("127.0.0.1", "localhost") else host,
        "--client.toolbarMode",
        "viewer",
        "--theme.base",
        "light",
    ]
    if port is not None:
        args += ["--server.port", str(port), "--browser.serverPort", str(port)]
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        print(f"explorer: --port {args.port}: not a TCP port (1-65535)", file=sys.stderr)
        return 2
    problem = check_host(args.host)
    if problem is not None:
        print(f"explorer: {problem}", file=sys.stderr)
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

    port, problem = choose_port(args.host, args.port)
    if port is None:
        print(f"explorer: {problem}", file=sys.stderr)
        return 2

    os.environ["CROSSLING_STORE"] = str(store)
    # The app imports ``explorer`` from wherever this launcher was imported (a checkout or site-packages).
    home = str(APP.parents[1])
    os.environ["PYTHONPATH"] = home + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    if home not in sys.path:
        sys.path.insert(0, home)
    print(f"explorer: serving {store} at {url_for(args.host, port)} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    from streamlit.web import cli as stcli

    sys.argv = ["streamlit", *streamlit_args(store, port=port, host=args.host, no_browser=args.no_browser)]
    try:
        stcli.main(prog_name="streamlit")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
