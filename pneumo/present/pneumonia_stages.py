"""The four classic stages of (lobar) pneumonia: text for the app's page and a matplotlib timeline.

Written for the app's readers in plain words; the sources are listed in :data:`SOURCES`. The classifier does not
stage pneumonia; this content is background, not a model output.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from matplotlib.figure import Figure


@dataclass(frozen=True)
class Stage:
    """One stage: its name, typical timing (days from onset, untreated) and what happens."""

    name: str
    start_day: float
    end_day: float
    timing: str
    lung: str
    radiograph: str
    symptoms: str
    colour: str


STAGES: tuple[Stage, ...] = (
    Stage(
        name="Congestion",
        start_day=0,
        end_day=2,
        timing="The first day or so after the infection takes hold (about 24 hours).",
        lung=(
            "The small blood vessels in the walls of the air sacs (alveoli) widen and leak. The air sacs begin to "
            "fill with protein-rich fluid in which bacteria multiply; only a few white blood cells have arrived yet. "
            "The affected lobe is heavy, wet and dark red."
        ),
        radiograph=(
            "Often nearly normal. At most a faint, ill-defined haze over the affected area, easy to miss, because "
            "the air sacs still hold some air."
        ),
        symptoms=(
            "Sudden fever, chills, cough and faster breathing. In young children, fever and fast breathing may be "
            "the only signs."
        ),
        colour="#f2a7a7",
    ),
    Stage(
        name="Red hepatization",
        start_day=2,
        end_day=4,
        timing="Roughly days 2 to 3.",
        lung=(
            "White blood cells (neutrophils), red blood cells and strands of fibrin pack the air sacs. The lobe "
            "loses its air and becomes red, firm and solid, like liver (Greek hepar), which gives the stage its name."
        ),
        radiograph=(
            "A dense white area (consolidation) that fills a lobe or segment and stops at its fissure. Air-filled "
            "bronchi may show as dark branching lines inside it (air bronchograms), and the border of the heart or "
            "diaphragm next to it may disappear (silhouette sign)."
        ),
        symptoms=(
            "High fever, cough (in adults sometimes with rust-coloured sputum), chest pain on breathing in, "
            "shortness of breath. Children may breathe fast, grunt or draw in the lower chest wall."
        ),
        colour="#c62828",
    ),
    Stage(
        name="Grey hepatization",
        start_day=4,
        end_day=8,
        timing="Roughly days 4 to 7.",
        lung=(
            "The trapped red blood cells break down while fibrin and white blood cells remain. The lobe turns "
            "grey-brown and dry but is still solid."
        ),
        radiograph=(
            "The consolidation persists and looks the same as in red hepatization: an X-ray cannot tell the two "
            "stages apart."
        ),
        symptoms="Still unwell; with effective treatment the fever usually begins to fall during this period.",
        colour="#8e8e8e",
    ),
    Stage(
        name="Resolution",
        start_day=8,
        end_day=21,
        timing="From about day 8, over one to several weeks.",
        lung=(
            "Enzymes dissolve the exudate, scavenger cells (macrophages) clear the debris, and it is coughed up or "
            "drained by the lymphatics. The air sacs refill with air and usually recover their normal structure; "
            "occasionally scarring or pleural adhesions remain."
        ),
        radiograph=(
            "The white area fades gradually and patchily. Clearing on the X-ray lags behind clinical recovery, often "
            "by several weeks, so a child who is well may still have an abnormal film."
        ),
        symptoms="Fever settles and breathing eases; cough and tiredness can linger for weeks.",
        colour="#7cb342",
    ),
)

CAVEATS = (
    "The four stages describe classic lobar pneumonia (typically Streptococcus pneumoniae) as it runs without "
    "treatment; the timings are approximate and the stages overlap. Antibiotics shorten and blur the sequence. "
    "Bronchopneumonia (patchy, around the airways) and viral pneumonia, both common in children, do not follow "
    "this lobe-by-lobe pattern."
)

NOT_STAGED = (
    "The pneumo classifier does not stage pneumonia. It was trained only on NORMAL / PNEUMONIA labels and gives one "
    "probability that an image shows pneumonia-like changes; neither that number nor the Grad-CAM heatmap tells "
    "which stage, if any, a patient is in."
)

SOURCES: tuple[str, ...] = (
    "Kumar V, Abbas AK, Aster JC. Robbins and Cotran Pathologic Basis of Disease, 10th ed. Elsevier, 2020. "
    "Chapter 'The Lung': community-acquired bacterial pneumonia, lobar pneumonia.",
    "Jain V, Vashisht R, Yilmaz G, Bhardwaj A. Pneumonia Pathology. StatPearls Publishing, Treasure Island (FL). "
    "https://www.ncbi.nlm.nih.gov/books/NBK526116/",
    "Radiopaedia: Lobar pneumonia. https://radiopaedia.org/articles/lobar-pneumonia",
    "World Health Organization: Pneumonia in children (fact sheet). "
    "https://www.who.int/news-room/fact-sheets/detail/pneumonia",
)


def timeline_figure() -> Figure:
    """A timeline of the four stages with what the radiograph typically shows below it.

    Each stage gets the same width (the stages last from about a day to weeks, so a linear day axis would hide the
    short ones); the tick labels give the typical day at each boundary.
    """
    fig = Figure(figsize=(8, 2.5), layout="constrained")  # 8 in: its 9-point text stays >= 12 px on a laptop
    ax = fig.add_subplot()
    xray = (
        ("often normal,\nor a faint haze", 0, 1),
        ("dense consolidation of a lobe or segment,\nair bronchograms (same look in both stages)", 1, 3),
        ("opacity fades over\nweeks, lagging\nbehind recovery", 3, 4),
    )
    for k, s in enumerate(STAGES):
        ax.barh(1, 1, left=k, height=0.7, color=s.colour, edgecolor="white", lw=3)
        dark = s.colour in ("#c62828", "#8e8e8e", "#7cb342")
        ax.text(k + 0.5, 1, s.name.replace(" ", "\n"), ha="center", va="center", fontsize=10.5, weight="bold",
                color="white" if dark else "#222222")  # fmt: skip
    for text, a, b in xray:
        ax.barh(0, b - a, left=a, height=0.7, color="#eceff1", edgecolor="white", lw=3)
        ax.text((a + b) / 2, 0, text, ha="center", va="center", fontsize=9, color="#263238")
    ticks = [s.start_day for s in STAGES] + [STAGES[-1].end_day]
    labels = ["onset"] + [f"day {d:g}" for d in ticks[1:-1]] + ["weeks later"]
    ax.set_xticks(range(len(ticks)), labels, fontsize=9)
    ax.set_yticks([0, 1], ["Chest X-ray", "Lung"], fontsize=10)
    ax.set_xlabel("typical course without treatment (stages overlap; not to scale)", fontsize=9, color="#52606d")
    ax.set_xlim(-0.02, len(STAGES) + 0.02)
    ax.set_ylim(-0.5, 1.5)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    return fig


def timeline_png(dpi: int = 130) -> bytes:
    """The timeline as PNG bytes."""
    buf = io.BytesIO()
    timeline_figure().savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
