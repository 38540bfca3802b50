"""The explorer's pages: each one a script in ``explorer/views/`` that declares itself, read here.

A page script says where the navigation lists it in a literal ``PAGE = {"title": ..., "icon": ...,
"url_path": ..., "section": ..., "order": N}`` (``"default": True`` for the page the root opens); this module
reads those literals from the files' syntax trees, without running the scripts, into `PAGES`. ``explorer/app.py``
builds its ``st.navigation`` from `PAGES`, and the tests derive every page list from it (AppTest's "every page
renders", the hostile-strings checks, the import check, the browser tests), so a new page is one new file, opened
by all of them; a script without a ``PAGE`` is refused here.

Plain data: importing this module loads neither Streamlit nor torch, so the tests can read it anywhere.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PAGES", "SECTIONS", "VIEWS", "ExplorerPage"]

#: The folder of the page scripts; `ExplorerPage.file` is a file in it.
VIEWS = Path(__file__).resolve().parent / "views"


@dataclass(frozen=True)
class ExplorerPage:
    """One page of the explorer: its script, how the navigation shows it, and where it is served.

    ``url_path`` is declared rather than taken from the file name so that shared links (``/neuron?layer=..``)
    keep working when a script is renamed; the default page is served at the app's root whatever it says.
    """

    file: str  # the script's file name in explorer/views/, e.g. "overview.py"
    title: str  # the navigation's label (the page's own heading is its st.title)
    icon: str  # an emoji: a Material symbol would make the browser fetch a font off this machine
    url_path: str  # the pathname after the app's root, e.g. "concepts"
    section: str  # the navigation group it is listed under
    default: bool = False  # the page the app's root URL opens

    @property
    def source(self) -> str:
        """The script's path relative to app.py, as ``st.Page`` and ``AppTest.switch_page`` take it."""
        return f"views/{self.file}"

    @property
    def name(self) -> str:
        """The script's module name (``"language_neurons"``): the short name the tests use for a page."""
        return Path(self.file).stem

    @property
    def served_path(self) -> str:
        """The pathname a browser opens for this page: ``""`` (the root) for the default page."""
        return "" if self.default else self.url_path


def _declared_page(path: Path) -> tuple[int, ExplorerPage]:
    """The ``PAGE`` literal of one page script, as (order, page); ValueError naming the file when it has none."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["PAGE"]:
            declared = ast.literal_eval(node.value)
            order = declared.pop("order")
            return order, ExplorerPage(file=path.name, **declared)
    raise ValueError(f"{path}: a page script needs a literal PAGE = {{...}} (see explorer/pages.py)")


def _pages() -> tuple[ExplorerPage, ...]:
    found = sorted(
        (_declared_page(p) for p in VIEWS.glob("*.py") if p.name != "__init__.py"), key=lambda x: (x[0], x[1].file)
    )
    pages = tuple(page for _, page in found)
    defaults = [p.file for p in pages if p.default]
    if len(defaults) != 1:
        raise ValueError(f"explorer/views: exactly one page must be the default, found {defaults or 'none'}")
    return pages


#: Every page, in navigation order.
PAGES: tuple[ExplorerPage, ...] = _pages()

#: The navigation's groups, in the order they are shown (the order of their first page in `PAGES`).
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(p.section for p in PAGES))
