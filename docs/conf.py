"""Sphinx configuration: the API reference from the reST docstrings, the guides from the Markdown files."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sb3_safe  # noqa: E402
from sb3_safe.config import SCHEMA  # noqa: E402

project = "sb3-safe"
author = "sb3-safe developers"
release = version = sb3_safe.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "img"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# SB3 and torch are documented elsewhere: their types are named, not linked.
nitpicky = True
# Only sb3-safe's own objects must resolve: references to SB3, torch, Gymnasium and the standard library stay plain.
nitpick_ignore_regex = [(r"py:.*", r"^(?!sb3_safe).*"), (r"py:.*", r".*\._\w+$"), (r"py:.*", r"^sb3_safe\.confirmation\.T$")]
html_theme = "furo"
html_title = f"sb3-safe {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]


def _profile_keys_page() -> None:
    """docs/_generated/profile-keys.md: every profile key with what it accepts, from sb3_safe.config.SCHEMA."""
    lines = [
        "# Profile keys",
        "",
        "Generated from `sb3_safe.config.SCHEMA` when the documentation is built. "
        "`health:` takes every field of {class}`sb3_safe.health.Thresholds` and of "
        "{class}`sb3_safe.callbacks.MonitorOptions`; `rollback:` takes the fields of "
        "{class}`sb3_safe.callbacks.RollbackOptions`; each field's type says what it accepts "
        "({mod}`sb3_safe.options`).",
        "",
        "| key | accepts | SafePPO only | what it is |",
        "|---|---|---|---|",
    ]
    for key, spec in SCHEMA.items():
        accepts = spec.kind + (f", {spec.range_text()}" if spec.range_text() else "") + (", or null" if spec.nullable else "")
        lines.append(f"| `{key}` | {accepts} | {'yes' if spec.safe_only else ''} | {spec.doc} |")
    out = Path(__file__).parent / "_generated"
    out.mkdir(exist_ok=True)
    text = "\n".join(lines) + "\n"
    page = out / "profile-keys.md"
    if not page.is_file() or page.read_text() != text:
        page.write_text(text)


_profile_keys_page()


def _resolve_gathered_name(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """
    ``sb3_safe.SafePPO``, ``sb3_safe.callbacks.HealthMonitorCallback``: names a package gathers from its modules are
    documented where they are defined; a reference by the package's name links there.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("sb3_safe."):
        return None
    module_name, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None
    home = getattr(obj, "__module__", None)
    if not home or home == module_name:
        return None
    node["reftarget"] = f"{home}.{name}"
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], node["reftarget"], node, contnode)


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_gathered_name)
