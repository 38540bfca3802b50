"""The wheel works from any folder: built, installed into a fresh virtualenv, run elsewhere.

The source tree is copied (its tracked and not-ignored files) to a temporary folder and built there with
``python -m build --no-isolation`` (sdist, then the wheel from the sdist, so MANIFEST.in is exercised too;
``pip wheel --no-build-isolation`` where ``build`` is not installed). The wheel goes into a fresh virtualenv
without pip, installed by this interpreter's pip (``--no-index --no-deps``: nothing is downloaded); only
then a ``.pth`` line appends this interpreter's site-packages, so the dependencies are reused while crossling
itself comes from the wheel (the appended folder's own ``.pth`` files, an editable install's finder among
them, are not processed). Every command runs from an empty folder with no PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from precompute.cli.concepts import concepts_app
from precompute.inputs.concepts import DEFAULT_CONCEPT_SET
from tests.support.synthetic_store import build_synthetic_store

ROOT = Path(__file__).resolve().parents[1]
BIN = "Scripts" if os.name == "nt" else "bin"


def test_concepts_check_names_the_builtin_set_or_defaults_to_it():
    runner = CliRunner()
    for args in (["check"], ["check", "builtin"]):
        result = runner.invoke(concepts_app, args)
        assert result.exit_code == 0, result.output
        assert "12 languages" in result.output and "45 concepts" in result.output and "ok" in result.output


def test_demo_config_names_nothing_outside_its_folder(tmp_path):
    """`precompute demo` writes a config that names its checkpoints relative to --work and the built-in set
    by name, so the demo folder is the same wherever the package or the source tree lies."""
    from precompute.config import load_config
    from precompute.demo.run import demo_config_text
    from precompute.demo.train import DemoCheckpoint
    from precompute.inputs.concepts import concept_set_path

    work = tmp_path / "data" / "demo_run"
    cks = [DemoCheckpoint(f"step_{s}", work / "checkpoints" / f"step_{s}", s, 100 * s, 1.0) for s in (1, 2)]
    config = work / "demo.toml"
    config.parent.mkdir(parents=True)
    config.write_text(demo_config_text(cks, work, "card"), encoding="utf-8")
    assert str(tmp_path) not in config.read_text(encoding="utf-8") and str(ROOT) not in config.read_text()
    cfg = load_config(config)
    assert cfg.data.concepts == "builtin"
    assert concept_set_path(cfg.data.concepts, cfg.base_dir) == DEFAULT_CONCEPT_SET
    assert [cfg.resolve(c.path) for c in cfg.checkpoints] == [c.path for c in cks]


def _source_files(root: Path) -> list[str]:
    """The files a fresh clone would have: git's tracked and untracked-but-not-ignored files."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=root,
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: cannot tell source files from build outputs")
    return [f for f in out.split("\0") if f and (root / f).is_file()]


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    for rel in _source_files(ROOT):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    dist = tmp / "dist"
    try:
        import build  # noqa: F401 - the test extra installs it

        cmd = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)]
    except ImportError:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "--no-index",
            "-w",
            str(dist),
            str(src),
        ]
    done = subprocess.run(cmd, cwd=src, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = sorted(dist.glob("crossling-*.whl"))
    assert len(wheels) == 1, list(dist.iterdir())
    return wheels[0]


def _fresh_env(tmp: Path, wheel: Path) -> Path:
    env = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / BIN / "python"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            str(wheel),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "_crossling_test_deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    return env


def test_wheel_installs_and_runs_from_an_empty_folder(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("precompute/inputs/concepts.parquet") == DEFAULT_CONCEPT_SET.read_bytes()
    assert {"explorer/app.py", "explorer/launch.py", "explorer/pages.py", "explorer/views/overview.py"} <= names
    assert not any(n.startswith(("tests/", "data/")) for n in names)
    # Test support lives in tests/support/, outside the packages: the browser driver, the synthetic store
    # builder and the tiny training command are not installed.
    support = sorted(n for n in names if any(s in n for s in ("browser_check", "synthetic_store", "tiny_checkpoints")))
    assert support == [], support

    env = _fresh_env(tmp_path, wheel)
    work = tmp_path / "empty"
    work.mkdir()
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CROSSLING_STORE", "VIRTUAL_ENV")}
    environ.update(PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1")

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(env / BIN / args[0]), *args[1:]],
            check=False,
            cwd=work,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    where = run(
        "python",
        "-c",
        "import precompute.inputs.concepts as c, explorer.launch as l; print(c.DEFAULT_CONCEPT_SET); print(l.APP)",
    )
    assert where.returncode == 0, where.stderr
    site_dir = str(env.resolve())
    assert all(line.startswith(site_dir) for line in where.stdout.split()), where.stdout  # not the source tree

    for args in (("precompute", "concepts", "check"), ("precompute", "concepts", "check", "builtin")):
        check = run(*args)
        assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
        assert "45 concepts" in check.stdout and "ok" in check.stdout

    build_synthetic_store(work / "small.duckdb", checkpoints=2)  # test support: built by this interpreter
    info = run("precompute", "info", "small.duckdb")
    assert info.returncode == 0, info.stdout[-2000:] + info.stderr[-2000:]
    assert "neuron_ap" in info.stdout

    commands = run("precompute", "--help")
    assert commands.returncode == 0 and "checkpoints" in commands.stdout, commands.stderr
    assert "tiny-checkpoints" not in commands.stdout
    gone = run("precompute", "tiny-checkpoints", "ckpts")
    assert gone.returncode != 0 and "No such command" in gone.stdout + gone.stderr
    assert not (work / "ckpts").exists()

    helped = run("explorer", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "usage: explorer" in helped.stdout
    # No store given and none in this folder: it says so, and does not fall back to a source checkout's store.
    bare = run("explorer")
    assert bare.returncode == 2 and str(work / "data" / "demo.duckdb") in bare.stderr, bare.stderr
