"""Sphinx configuration of the sb3-qvpo documentation (MyST Markdown pages, autodoc from the docstrings)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

with open(os.path.join(os.path.dirname(__file__), "..", "sb3_qvpo", "version.txt")) as version_file:
    release = version_file.read().strip()

project = "sb3-qvpo"
author = "sb3-qvpo contributors"
copyright = "2026, sb3-qvpo contributors"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autoclass_content = "both"
napoleon_google_docstring = False

html_theme = "sphinx_rtd_theme"
html_title = f"sb3-qvpo {release}"
