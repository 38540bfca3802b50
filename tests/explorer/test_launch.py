"""The ``explorer`` launcher checks its host and picks its port itself.

A bad ``--host`` is one line, not a Python traceback; a taken ``--port`` is one line; without ``--port`` the
launcher bind-tests ports from 8501 on and hands the free one to Streamlit explicitly, so the URL it prints is
the one that really serves. Servers start on 127.0.0.1 only, every wait is bounded, and every process started
here is killed here.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from explorer import launch

ROOT = Path(__file__).resolve().parents[2]


def _launch(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "explorer.launch", *argv],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _listening(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A socket listening on (host, port): port 0 takes any free one."""
    sock = socket.socket()
    sock.bind((host, port))
    sock.listen(1)
    return sock


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "Error:" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("256.1.1.1", "not a valid IP address"),
        ("1.2.3", "not a valid IP address"),
        ("::zz", "not a valid IP address"),
        ("", "--host is empty"),
        ("no-such-host.invalid", "not a name this machine can resolve"),  # RFC 6761: .invalid never resolves
        ("192.0.2.1", "not an address of this machine"),  # RFC 5737 documentation address: valid, not ours
    ],
)
def test_bad_host_is_one_line_not_a_traceback(synthetic_store, host, says):
    done = _launch(str(synthetic_store), "--host", host, "--no-browser")
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert line.startswith("explorer: ") and says in line, line
    assert "serving" not in done.stderr  # refused before anything started


def test_good_hosts_pass_the_check():
    for host in ("127.0.0.1", "0.0.0.0", "::1", "localhost", socket.gethostname()):
        assert launch.check_host(host) is None, host


def test_taken_port_given_explicitly_is_one_line(synthetic_store):
    with _listening() as held:
        port = held.getsockname()[1]
        done = _launch(str(synthetic_store), "--port", str(port), "--no-browser")
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line, line


def test_choose_port_skips_taken_ports(monkeypatch):
    # Two taken ports in a row from the (patched) default: the first free one after them is chosen.
    with _listening() as first:
        start = first.getsockname()[1]
        try:
            second = _listening(port=start + 1)
        except OSError:
            pytest.skip(f"port {start + 1} is busy on this machine")
        with second:
            monkeypatch.setattr(launch, "DEFAULT_PORT", start)
            port, problem = launch.choose_port("127.0.0.1", None)
            assert problem is None and port is not None and port >= start + 2
            assert launch.bind_problem("127.0.0.1", port) is None
            assert "in use" in launch.bind_problem("127.0.0.1", start)
            # A given port is taken as given, and refused when taken.
            assert launch.choose_port("127.0.0.1", start)[0] is None


def _read_lines(stream, into: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        into.put(line)
    stream.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_second_explorer_serves_on_the_port_it_prints(synthetic_store):
    try:
        held = _listening(port=launch.DEFAULT_PORT)  # play the first explorer
    except OSError:
        held = None  # 8501 is already taken on this machine: the case under test either way
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "explorer.launch", str(synthetic_store), "--host", "127.0.0.1", "--no-browser"],
        cwd=str(ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        printed = served = None
        while time.monotonic() < deadline and (printed is None or served is None):
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, f"explorer exited with {proc.returncode}: {''.join(seen)}"
                continue
            seen.append(line)
            if m := re.search(r"explorer: serving .* at http://localhost:(\d+) ", line):
                printed = int(m.group(1))
            if m := re.search(r"URL: http://localhost:(\d+)", line):  # Streamlit's own line, once it listens
                served = int(m.group(1))
        assert printed is not None and served is not None, "".join(seen)
        assert printed != launch.DEFAULT_PORT, "".join(seen)
        assert printed == served, "".join(seen)
        # The printed port is the one that answers (8501, held by a bare socket, would not).
        with urllib.request.urlopen(f"http://127.0.0.1:{printed}/_stcore/health", timeout=10) as r:
            assert r.status == 200
    finally:
        _stop(proc)
        if held is not None:
            held.close()
