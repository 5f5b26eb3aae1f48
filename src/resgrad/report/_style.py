"""The report's stylesheet: system fonts only, no network, laptop-width layout."""

from __future__ import annotations

__all__ = ["CSS"]

CSS = """
:root { --plain: #c0392b; --res: #1f5fa8; --ink: #1d1d1f; --muted: #5f6368; --line: #e3e5e8;
        --bg: #ffffff; --panel: #f6f7f9; --ok: #1e7b45; --bad: #b3261e; --mid: #9a6700; }
* { box-sizing: border-box; }
html { font-size: 16px; }
body { margin: 0; color: var(--ink); background: var(--bg);
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       line-height: 1.5; }
.layout { max-width: 1080px; margin: 0 auto; padding: 24px 20px 64px; }
@media (min-width: 1320px) {
  .layout { max-width: 1320px; display: grid; grid-template-columns: 220px minmax(0, 1fr); gap: 36px; }
  nav.toc { position: sticky; top: 16px; align-self: start; max-height: calc(100vh - 32px); overflow: auto; }
}
header { grid-column: 1 / -1; border-bottom: 1px solid var(--line); margin-bottom: 8px; }
header h1 { font-size: 1.7rem; margin: 0 0 4px; line-height: 1.25; }
header .sub { color: var(--muted); margin: 0 0 14px; }
nav.toc { font-size: 0.92rem; background: var(--panel); border-radius: 8px; padding: 12px 16px; margin: 12px 0; }
nav.toc h2 { font-size: 0.8rem; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 0 0 6px; }
nav.toc ol { margin: 0; padding-left: 1.2em; }
nav.toc li { margin: 2px 0; }
nav.toc .miss { color: var(--muted); font-size: 0.85em; }
main { min-width: 0; }
section { padding-top: 8px; margin-bottom: 28px; }
h2 { font-size: 1.35rem; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin: 28px 0 12px; }
h3 { font-size: 1.06rem; margin: 20px 0 8px; }
p, li { max-width: 80ch; }
a { color: var(--res); }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.86em; }
pre { background: var(--panel); padding: 10px 12px; border-radius: 6px; overflow: auto; max-height: 360px; }
.answer { background: #eef4fb; border-left: 4px solid var(--res); padding: 12px 16px; border-radius: 6px; margin: 16px 0; }
.answer p { margin: 0; max-width: none; }
.answer ul { margin: 6px 0; }
.answer li { max-width: none; }
.answer .muted { font-size: 0.88rem; }
.answer .label { font-weight: 600; }
.missing { background: #fff7e6; border-left: 4px solid var(--mid); padding: 10px 14px; border-radius: 6px; }
.eq { background: var(--panel); padding: 0 6px; border-radius: 4px; white-space: nowrap; font-family: "Cambria Math", "STIX Two Math", serif; }
figure { margin: 16px 0 20px; }
figure img { display: block; width: auto; height: auto; max-width: 100%; }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 6px; max-width: 95ch; }
.scroll { overflow-x: auto; margin: 8px 0 16px; }
.tall { max-height: 420px; overflow-y: auto; }
table { border-collapse: collapse; font-size: 0.9rem; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; position: sticky; top: 0; }
td.n { text-align: right; white-space: nowrap; }
table.cmp td { max-width: 46ch; }
.badge { display: inline-block; font-size: 0.75rem; font-weight: 600; padding: 1px 7px; border-radius: 10px;
         white-space: nowrap; }
.agrees { background: #e3f4ea; color: var(--ok); }
.contradicts { background: #fbe4e2; color: var(--bad); }
.partly { background: #fff1d6; color: var(--mid); }
.none { background: var(--panel); color: var(--muted); }
.v-exploding { color: var(--bad); font-weight: 600; }
.v-vanishing { color: #6a1b9a; font-weight: 600; }
.v-healthy { color: var(--ok); }
ol.findings li { margin: 8px 0; }
ol.findings .id { color: var(--muted); font-size: 0.78rem; font-family: ui-monospace, Menlo, Consolas, monospace; }
details { margin: 6px 0; }
details summary { cursor: pointer; color: var(--muted); font-size: 0.9rem; }
.plain { color: var(--plain); font-weight: 600; }
.res { color: var(--res); font-weight: 600; }
.muted { color: var(--muted); }
footer { grid-column: 1 / -1; color: var(--muted); font-size: 0.85rem; border-top: 1px solid var(--line); padding-top: 8px; }
@media print { nav.toc { display: none; } .layout { display: block; } }
"""
