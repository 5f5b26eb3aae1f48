"""Shared CLI pieces: figures are written atomically and closed."""

from resgrad.cli._common import pyplot, save_figure


def test_save_figure_writes_atomically_and_closes(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "sub" / "fig.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["fig.png"]  # no temp file left behind
    assert not plt.fignum_exists(fig.number)
    svg = save_figure(plt.subplots()[0], tmp_path / "fig.svg", tight=True)
    assert svg.read_text().lstrip().startswith("<?xml")
