"""Figures: matplotlib without a display, fonts that draw every label (Chinese first), PNGs that carry their
labels. Every figure tricklab writes (confusion matrix, reliability diagram, ablation plot) goes through here,
so this is the one module that imports matplotlib.

matplotlib draws each character with the first font in `font.family` that has it (per-glyph fallback,
matplotlib >= 3.6). The list here is DejaVu Sans (matplotlib's own, Latin) followed by a CJK font, the
first that has the characters of the figure's texts, from:
  1. TRICKLAB_FONT: a font file (.ttf / .otf / .ttc) named by that environment variable;
  2. a CJK font installed on the machine and known to matplotlib (Noto Sans CJK, Source Han Sans, WenQuanYi,
     Microsoft YaHei, PingFang, SimHei, ...; e.g. `apt-get install fonts-noto-cjk`);
  3. Noto Sans SC from the PyPI package `pylopdf-fonts-zh-cn` (SIL Open Font License 1.1; installed with the
     `plots` extra, as matplotlib: 17 MB download, 20 MB installed), simplified and traditional Chinese.
matplotlib is optional (`pip install 'tricklab[plots]'`; `make demo` and `make test` install it): without it,
training, evaluation and reports run as usual and skip their PNG files (`available()`), with one note.
A label with a character no font has is never drawn as empty boxes: the axis shows numbers and a legend table
beside the plot maps each number to its label (characters no font has written as \\uXXXX), and a note says how
to get a font. Every PNG also carries its labels as text (PNG iTXt chunk `Labels`: JSON list), readable with
`PIL.Image.open(path).text["Labels"]`, whatever was drawn.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

LATIN = "DejaVu Sans"
# installed CJK families, most preferred first (simplified Chinese first: a Chinese-first tool)
KNOWN_CJK = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Micro Hei",
             "WenQuanYi Zen Hei", "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB", "Heiti SC", "SimHei",
             "Sarasa Gothic SC", "AR PL UKai CN", "AR PL UMing CN", "Droid Sans Fallback", "Noto Sans CJK TC",
             "Noto Sans TC", "Noto Sans CJK JP", "Noto Sans CJK KR", "Source Han Sans TC")
PACKAGED = "pylopdf_fonts_zh_cn"           # PyPI pylopdf-fonts-zh-cn: NotoSansSC-Regular.otf, SIL OFL 1.1
FONT_HINT = ("pip install pylopdf-fonts-zh-cn (Noto Sans SC, in tricklab's plots extra), apt-get install "
             "fonts-noto-cjk, or TRICKLAB_FONT=/path/to/font.ttf")
_noted: set[str] = set()


@dataclass(frozen=True)
class Fonts:
    """The fonts of one figure: matplotlib family names (fallback order) and the characters they have."""
    families: tuple[str, ...]
    chars: frozenset[int]

    def drawable(self, text: str) -> bool:
        return all(ord(ch) in self.chars or ch.isspace() for ch in text)

    def safe(self, text: str) -> str:
        """`text` with every character no font has written as \\uXXXX (drawn, never a box)."""
        return "".join(ch if ord(ch) in self.chars or ch.isspace() else f"\\u{ord(ch):04x}" for ch in text)


def available() -> bool:
    """Whether matplotlib is installed; without it, one note per process and the caller writes no PNG."""
    try:
        _matplotlib()
    except ImportError:
        if "matplotlib" not in _noted:
            print("note: plots skipped (confusion_matrix.png, reliability.png, ablation.png): matplotlib is not "
                  "installed; pip install 'tricklab[plots]' to get them", file=sys.stderr)
            _noted.add("matplotlib")
        return False
    return True


def _matplotlib() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    return matplotlib


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib import ft2font

    try:
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def packaged_font() -> Path | None:
    """Noto Sans SC of the PyPI package pylopdf-fonts-zh-cn, when installed."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGED)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "NotoSansSC-Regular.otf"
    return p if p.is_file() else None


def candidates() -> list[Path]:
    """CJK font files in order of preference (module doc): TRICKLAB_FONT, installed, packaged."""
    from matplotlib import font_manager

    out: list[Path] = []
    env = os.environ.get("TRICKLAB_FONT")
    if env and Path(env).is_file():
        out.append(Path(env))
    installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    out += [Path(installed[n]) for n in KNOWN_CJK if n in installed]
    pkg = packaged_font()
    if pkg is not None:
        out.append(pkg)
    return list(dict.fromkeys(out))


def choose_fonts(texts: Iterable[str], fonts: Sequence[Path] | None = None) -> Fonts:
    """DejaVu Sans, then the first candidate font that has every character of `texts` (or, if none has them
    all, every candidate that adds some), registered with matplotlib."""
    from matplotlib import font_manager

    _matplotlib()
    need = {ord(ch) for t in texts for ch in t if not ch.isspace()}
    chars = set(_charmap(font_manager.findfont(LATIN)))
    families = [LATIN]
    todo = need - chars
    pool = list(candidates() if fonts is None else fonts)
    full = [p for p in pool if todo and todo <= _charmap(str(p))]
    for p in full[:1] or pool:
        if not todo & _charmap(str(p)):
            continue
        font_manager.fontManager.addfont(str(p))
        families.append(font_manager.FontProperties(fname=str(p)).get_name())
        chars |= _charmap(str(p))
        todo -= chars
    return Fonts(tuple(dict.fromkeys(families)), frozenset(chars))


@contextlib.contextmanager
def pyplot(texts: Iterable[str], fonts: Sequence[Path] | None = None) -> Iterator[tuple[Any, Fonts]]:
    """(matplotlib.pyplot, Fonts) for a figure whose texts are `texts`: Agg backend, the fonts that draw them,
    mathtext off (a label such as `$5` stays text). rcParams are restored afterwards."""
    mpl = _matplotlib()
    import matplotlib.pyplot as plt

    f = choose_fonts(list(texts), fonts)
    with mpl.rc_context({"font.family": list(f.families), "text.parse_math": False, "axes.unicode_minus": False}):
        yield plt, f


def axis_labels(names: Sequence[str], fonts: Fonts) -> list[str]:
    """Tick labels for `names`: the names when every one can be drawn, else their numbers 1..n (see legend)."""
    if all(fonts.drawable(n) for n in names):
        return list(names)
    missing = sorted({ch for n in names for ch in n if not fonts.drawable(ch)})
    note = (f"note: no installed font has {''.join(missing[:8])}{'...' if len(missing) > 8 else ''}: plots number "
            f"their labels (legend table in the PNG); fix: {FONT_HINT}")
    if note not in _noted:
        _noted.add(note)
        print(note, file=sys.stderr)
    return [str(i + 1) for i in range(len(names))]


def layout(fig: Any, names: Sequence[str], ticks: Sequence[str], fonts: Fonts) -> None:
    """tight_layout; when the ticks are numbers, a table `number  label` in a right margin kept free for it."""
    numbered = list(ticks) != list(names)
    fig.tight_layout(rect=(0, 0, 0.72 if numbered else 1, 1))
    if numbered:
        lines = [f"{t:>3}  {fonts.safe(n)}" for t, n in zip(ticks, names)]
        fig.text(0.74, 0.95, "labels\n" + "\n".join(lines), va="top", ha="left", fontsize=8)


def save_png(fig: Any, path: Path, labels: Sequence[str], dpi: int = 110, root: Path | None = None) -> None:
    """Write the figure as PNG with its labels as text (iTXt `Labels`, JSON) and close it (atomically, never
    through a link out of `root`: runfiles.atomic_open)."""
    import matplotlib.pyplot as plt

    from ..runfiles import atomic_open

    with atomic_open(path, "wb", root) as f:
        fig.savefig(f, format="png", dpi=dpi, metadata={"Labels": json.dumps(list(labels), ensure_ascii=False)})
    plt.close(fig)


def png_labels(path: Path) -> list[str]:
    """The labels a tricklab PNG carries (save_png)."""
    from PIL import Image

    with Image.open(path) as im:
        return json.loads(im.text.get("Labels", "[]"))
