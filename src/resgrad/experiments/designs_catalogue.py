"""The designs of the designs experiment: names, families, papers and claims, one line for a bad name.

Every design is a registry name: ``resgrad.nets.designs.DESIGNS`` (where this resgrad has it)
and the built-in twins (pre-LN, post-LN, no skip; the He et al. 2015 BN ResNet and its plain
twin). A design's family is DESIGNS', or read from its registered input contract (a sequence
model is a Transformer, a conv net a CNN).
"""

from __future__ import annotations

import difflib
from typing import Any

from ..nets.registry import contract_of

__all__ = ["BUILTIN", "TRANSFORMER_DEFAULT", "CNN_DEFAULT", "known_designs", "catalogue", "family", "check_designs",
           "available", "model_name"]

# The designs every resgrad has (nets/transformer.py, nets/he2015.py), with the claim each is
# measured against; resgrad.nets.designs.DESIGNS adds the newer ones where it exists.
BUILTIN: dict[str, dict[str, str]] = {
    "preln": {"family": "transformer", "paper": "Xiong et al. 2020", "arxiv": "2002.04745",
              "claim": "pre-LN's weight gradient is about the same in every layer at initialisation"},
    "postln": {"family": "transformer", "paper": "Xiong et al. 2020", "arxiv": "2002.04745",
               "claim": "post-LN's weight gradients grow toward the output at initialisation"},
    "noskip": {"family": "transformer", "paper": "He and Hofmann 2023", "arxiv": "2302.10322",
               "claim": "a transformer without skip connections needs about 5x the iterations to reach the same "
                        "loss; its tokens' representations collapse toward one (Noci et al. 2022)"},
    "resnet": {"family": "cnn", "paper": "He et al. 2015", "arxiv": "1512.03385",
               "claim": "with identity skips the deeper net trains at least as well as the shallower one"},
    "plain": {"family": "cnn", "paper": "He et al. 2015", "arxiv": "1512.03385",
              "claim": "the deeper plain net has a higher training error than the shallower one (degradation)"},
}
TRANSFORMER_DEFAULT = ("preln", "postln", "noskip", "deepnorm", "periln", "lns", "mixln", "rezero", "dyt", "hc",
                       "hc-dynamic", "mhc")
CNN_DEFAULT = ("plain", "resnet", "fixup", "skipinit", "nf")

def _designs_table() -> dict[str, Any]:
    try:
        from ..nets.designs import DESIGNS  # designs beyond the built-in twins, where this resgrad has them
    except ImportError:
        return {}
    return dict(DESIGNS)


def _field(entry: Any, name: str, default: str = "") -> str:
    v = entry.get(name, default) if isinstance(entry, dict) else getattr(entry, name, default)
    return "" if v is None else str(v)


def known_designs() -> list[str]:
    """Every design name: the built-in twins and ``resgrad.nets.designs.DESIGNS``."""
    return list(dict.fromkeys([*BUILTIN, *_designs_table()]))


def catalogue(names: tuple[str, ...]) -> list[dict[str, str]]:
    """name, family, paper, arxiv and claim of each design."""
    table = _designs_table()
    out = []
    for n in names:
        if n in table:
            e = table[n]
            fam = _field(e, "family") or family(n)
            out.append({"name": n, "family": "cnn" if fam.lower() in ("cnn", "conv", "resnet") else "transformer",
                        "title": _field(e, "title") or n, "paper": _field(e, "paper"), "arxiv": _field(e, "arxiv"),
                        "claim": _field(e, "claim"), "streams": int(getattr(e, "streams", 1) or 1)})
        elif n in BUILTIN:
            out.append({"name": n, "title": n, "streams": 1, **BUILTIN[n]})
        else:
            out.append({"name": n, "title": n, "family": family(n), "paper": "", "arxiv": "", "claim": "", "streams": 1})
    return out


def family(name: str) -> str:
    """"transformer" (a sequence model) or "cnn" (a conv net): DESIGNS' family, else the registered input contract."""
    table = _designs_table()
    if name in table and _field(table[name], "family") in ("transformer", "cnn"):
        return _field(table[name], "family")
    kind = contract_of(name).kind
    if kind == "sequence":
        return "transformer"
    if kind == "conv":
        return "cnn"
    raise ValueError(f"design {name!r} is a {kind} model, neither a Transformer nor a CNN; choose from "
                     f"{', '.join(known_designs())}")


def check_designs(names: tuple[str, ...]) -> None:
    """One line for an unknown design (with the close matches) or one that is not a Transformer or CNN.

    A design is a name of DESIGNS (or a built-in twin), or a registered family without a depth
    (``preresnet``); a name with a depth (``periln2``) is a model, not a design.
    """
    known = known_designs()
    for n in names:
        ok = n in known
        if not ok and not any(ch.isdigit() for ch in n):
            try:
                contract_of(n)
                ok = True
            except ValueError:
                pass
        if not ok:
            close = difflib.get_close_matches(n, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"designs: unknown design {n!r}; {hint}known: {', '.join(known)}")
        family(n)


def available(names: tuple[str, ...]) -> tuple[str, ...]:
    """The names this resgrad can build (the default lists name designs of resgrad.nets.designs)."""
    table = _designs_table()
    out = []
    for n in names:
        if n not in table:
            try:
                contract_of(n)
            except ValueError:
                continue
        out.append(n)
    return tuple(out)


def model_name(design: str, depth: int) -> str:
    """The registry name of ``design`` at ``depth`` (``mhc-24``, ``nf-resnet56``; ``resnet20``)."""
    try:
        from ..nets.designs import DESIGNS
        from ..nets.designs import model_name as _name
    except ImportError:
        DESIGNS, _name = {}, None
    if _name is not None and design in DESIGNS:
        return _name(design, depth)
    return f"{design}-{depth}" if family(design) == "transformer" else f"{design}{depth}"
