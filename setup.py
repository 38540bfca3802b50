"""Build hook: ship the built-in concept set inside the package.

The source of the built-in concept set stays at the top level (``data/concepts.parquet``, next to its README
and rebuilt there by ``precompute concepts build``). A wheel cannot reach that folder once installed, so the
build copies the file into ``precompute/inputs/`` of the built package, where
``precompute.inputs.concepts.DEFAULT_CONCEPT_SET`` looks first. Everything else is in ``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONCEPT_SET = Path("data") / "concepts.parquet"
PACKAGED_AS = Path("precompute") / "inputs" / "concepts.parquet"


class BuildPyWithConceptSet(build_py):
    """``build_py`` plus one copy: data/concepts.parquet -> <build>/precompute/inputs/concepts.parquet."""

    def run(self) -> None:
        super().run()
        if not CONCEPT_SET.is_file():
            raise FileNotFoundError(f"{CONCEPT_SET}: the built-in concept set is missing from the source tree")
        target = Path(self.build_lib) / PACKAGED_AS
        self.mkpath(str(target.parent))
        self.copy_file(str(CONCEPT_SET), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PACKAGED_AS)]


setup(cmdclass={"build_py": BuildPyWithConceptSet})
