"""Sphinx configuration of the visfore docs: MyST Markdown pages, the furo theme, the
CLI reference from the Typer app's Click object and the API reference from docstrings.

Build: ``make docs`` (``python -m sphinx -W --keep-going -b html docs docs/_build/html``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# Headless rendering for anything the env package touches on import.
os.environ.setdefault("MUJOCO_GL", "egl")

project = "visfore"
author = "the visfore authors"
copyright = "the visfore authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "visfore_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "visfore"
html_static_path: list[str] = []

# Docstrings are Google style with Sphinx roles.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
nitpicky = False
