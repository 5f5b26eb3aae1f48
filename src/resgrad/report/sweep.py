"""The sweep section and page; they live in report/sections/sweep.py (this name stays for imports)."""

from __future__ import annotations

from .sections.sweep import LEVEL, cells, page, section, seeded_cells

__all__ = ["cells", "section", "page", "seeded_cells", "LEVEL"]
