"""The report's Transformer section; it lives in report/sections/transformer.py (this name stays for imports)."""

from __future__ import annotations

from .sections.transformer import ENSEMBLE_PREFIX, TITLE, headline, section

__all__ = ["section", "headline", "TITLE", "ENSEMBLE_PREFIX"]
