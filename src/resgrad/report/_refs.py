"""The papers the report compares against, cited as plain links to arXiv, and the figures it quotes from them."""

from __future__ import annotations

from html import escape

__all__ = ["PAPERS", "TRANSFORMER_PAPERS", "cite", "cite_text", "PUBLISHED"]

# key: (authors, year, title, arXiv id)
PAPERS: dict[str, tuple[str, int, str, str]] = {
    "he2015": ("He, Zhang, Ren, Sun", 2015, "Deep Residual Learning for Image Recognition", "1512.03385"),
    "he2016": ("He, Zhang, Ren, Sun", 2016, "Identity Mappings in Deep Residual Networks", "1603.05027"),
    "veit2016": ("Veit, Wilber, Belongie", 2016,
                 "Residual Networks Behave Like Ensembles of Relatively Shallow Networks", "1605.06431"),
    "philipp2018": ("Philipp, Song, Carbonell", 2018,
                    "Gradients explode - Deep Networks are shallow - ResNet explained", "1712.05577"),
    "balduzzi2017": ("Balduzzi et al.", 2017, "The Shattered Gradients Problem", "1702.08591"),
    "pennington2017": ("Pennington, Schoenholz, Ganguli", 2017,
                       "Resurrecting the sigmoid in deep learning through dynamical isometry", "1711.04735"),
    "greydanus2020": ("Greydanus", 2020, "Scaling down Deep Learning (MNIST-1D)", "2011.14439"),
    "xiong2020": ("Xiong et al.", 2020, "On Layer Normalization in the Transformer Architecture", "2002.04745"),
    "liu2020": ("Liu et al.", 2020, "Understanding the Difficulty of Training Transformers", "2004.08249"),
    "gromov2024": ("Gromov et al.", 2024, "The Unreasonable Ineffectiveness of the Deeper Layers", "2403.17887"),
    "men2024": ("Men et al.", 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than You Expect",
                "2403.03853"),
    "sun2024": ("Sun et al.", 2024, "Transformer Layers as Painters", "2407.09298"),
    "sun2025": ("Sun et al.", 2025, "The Curse of Depth in Large Language Models", "2502.05795"),
}

# Cited only by the Transformer section: a report without it lists the papers it listed before.
TRANSFORMER_PAPERS = ("xiong2020", "liu2020", "gromov2024", "men2024", "sun2024")

# Published figures used in comparisons, each with the paper and place it comes from. Errors are fractions.
PUBLISHED = {
    # He et al. 2015, Table 6: CIFAR-10 test error, option A ResNets.
    "he2015_table6": {20: 0.0875, 32: 0.0751, 44: 0.0717, 56: 0.0697, 110: 0.0643, 1202: 0.0793},
    # Veit et al. 2016, §5: effective paths of a 54-block ResNet-110 on CIFAR-10.
    "veit_window": (5, 17), "veit_blocks": 54, "veit_share": 0.0045,
    # Veit et al. 2016, §4: deleting 10 blocks leaves error around 0.2.
    "veit_delete10": 0.2,
}


def _short(key: str) -> str:
    authors, year, _, _ = PAPERS[key]
    if "," not in authors and "et al." not in authors:
        return f"{authors} {year}"  # a single author
    return f"{authors.split(',')[0].split(' et al.')[0]} et al. {year}"


def cite_text(key: str, where: str = "") -> str:
    """Plain text: ``He et al. 2015 (arXiv 1512.03385, §4)``."""
    arxiv = PAPERS[key][3]
    return f"{_short(key)} (arXiv {arxiv}{', ' + where if where else ''})"


def cite(key: str, where: str = "") -> str:
    """HTML: the same, with the arXiv id as a plain link to arxiv.org."""
    arxiv = PAPERS[key][3]
    link = f'<a href="https://arxiv.org/abs/{arxiv}">arXiv {arxiv}</a>'
    return f"{escape(_short(key))} ({link}{', ' + escape(where) if where else ''})"
