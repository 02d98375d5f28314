"""Analyze page: upload chest X-rays (or pick a sample), see P(pneumonia), the label at a threshold and Grad-CAM."""

from __future__ import annotations

import io

import cv2
import numpy as np
import streamlit as st
from PIL import Image

from app_pages.common import analyze, model_or_stop, release_memory, show_disclaimer
from pneumo import analysis as an
from pneumo import config
from pneumo.inference import confidence_text, label_for
from pneumo.report import build_report

# Longest side of the images sent to the browser (the full-resolution overlay is a download).
DISPLAY_SIDE = 1200
ALL_SAMPLES = "all"  # the sample menu entry that analyses every sample at once
EXPLAIN_OPTIONS = ("Predicted class", *reversed(config.CLASS_NAMES))  # "Predicted class", "PNEUMONIA", "NORMAL"

st.title("Analyze a chest X-ray")
show_disclaimer()
loaded = model_or_stop()
default_t = loaded.threshold
val = loaded.metadata.get("metrics", {}).get("validation", {})


def _display(image: np.ndarray) -> np.ndarray:
    """Downscale uint8 (H, W) or (H, W, 3) for the browser so that the longest side is at most DISPLAY_SIDE."""
    h, w = image.shape[:2]
    scale = DISPLAY_SIDE / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _overlay_png(res: an.Analysis, cls: int, alpha: float):
    """A deferred download of the full-resolution overlay, recomputed on click from the cached analysis.

    The callable lives as long as the session: capturing the overlay itself would keep megabytes per session alive.
    """

    def make() -> bytes:
        data = _png(an.heatmap_overlay(res, cls, alpha, loaded.image_size))
        release_memory()
        return data

    return make


def _reset_threshold() -> None:
    st.session_state["threshold"] = default_t


# ---- operating point (sidebar) ----------------------------------------------------------------------------------
if "threshold" not in st.session_state:
    st.session_state["threshold"] = st.session_state.get("_threshold_keep", default_t)
with st.sidebar:
    st.subheader("Operating point")
    threshold = st.slider(
        "Decision threshold",
        min_value=0.01,
        max_value=0.99,
        step=0.01,
        key="threshold",
        help="Images with a probability of pneumonia at or above the threshold are labelled PNEUMONIA. "
        "Lower it to miss fewer pneumonias (more false alarms); raise it for fewer false alarms.",
    )
    st.session_state["_threshold_keep"] = threshold
    op = an.operating_point(loaded.metadata, threshold)
    if op is not None:
        n = f"{val['n']} images" if "n" in val else "images"
        st.markdown(
            f"On the model's validation split ({n}) this threshold gives\n\n"
            f"- **sensitivity {op.sensitivity:.1%}** (pneumonias found)\n"
            f"- **specificity {op.specificity:.1%}** (normals cleared)"
        )
    else:
        st.caption("The model's metadata has no validation operating point for this threshold.")
    if abs(threshold - default_t) > 1e-9:
        st.button(f"Reset to the model's threshold ({an.format_threshold(default_t)})", on_click=_reset_threshold)
    else:
        st.caption(
            f"This is the model's own threshold ({an.format_threshold(default_t)}), chosen on the validation split."
        )

# ---- input ------------------------------------------------------------------------------------------------------
source = st.radio(
    "Image source", ("Upload X-rays", "Try a sample image"), horizontal=True, key="source",
    label_visibility="collapsed",
)  # fmt: skip
items: list[tuple[str, bytes]] = []
if source == "Upload X-rays":
    files = st.file_uploader(
        "Chest X-rays: PNG, JPEG, DICOM (also BMP, TIFF); one or several",
        accept_multiple_files=True,
        key="uploads",
        help="Files are analysed in memory and never stored. DICOM files without a .dcm ending are recognised too.",
    )
    items = [(f.name, f.getvalue()) for f in files or []]
    if not items:
        st.info(
            "Upload one or more frontal chest radiographs, or choose **Try a sample image** above.",
            icon=":material/upload_file:",
        )
else:
    samples = an.list_samples()
    if not samples:
        st.error("No sample images found in assets/samples.")
    else:
        by_file = {s.file: s for s in samples}
        choice = st.selectbox(
            "Sample image (from Kermany et al. 2018, CC BY 4.0)",
            [*by_file, ALL_SAMPLES],
            format_func=lambda f: "All samples (results table)" if f == ALL_SAMPLES else by_file[f].title,
            key="sample",
        )
        chosen = samples if choice == ALL_SAMPLES else [by_file[choice]]
        items = [(s.file, s.path.read_bytes()) for s in chosen]
        st.caption(
            "Pediatric chest radiographs from Guangzhou Women and Children's Medical Center, published by Kermany, "
            "Zhang and Goldbaum (2018), doi:10.17632/rscbjbr9sj.2, CC BY 4.0; converted to 8-bit grayscale and "
            "resized. 'Seen in training' means the model learnt from that very image."
        )

if not items:
    st.stop()

with st.spinner("Analysing…"):
    results = [analyze(data, name, loaded) for name, data in items]


# ---- one image in detail ------------------------------------------------------------------------------------------
def show_detail(res: an.Analysis) -> None:
    """Result, Grad-CAM, facts and report downloads for one analysed file."""
    if res.error:
        st.error(f"**{res.name}** could not be read: {res.error}", icon=":material/error:")
        return
    if res.refusal:  # the refusal says everything; the plausibility warnings would repeat it
        st.error(res.refusal, icon=":material/block:")
        st.image(_display(res.pixels), caption=res.name, width=420)
        _facts(res)
        return
    for w in res.warnings:
        st.warning(w, icon=":material/help:")
    if res.doubtful:
        st.error(
            "This does not look like a chest radiograph, so the model's output would be meaningless and is not shown.",
            icon=":material/block:",
        )
        if not st.toggle("Show the result anyway (for curiosity only)", key=f"anyway_{res.digest}"):
            st.image(_display(res.pixels), caption=res.name, width=420)
            _facts(res)
            return
    p = float(res.probability)
    label = label_for(p, threshold)
    c1, c2, c3 = st.columns(3)
    c1.metric("Label at this threshold", label, help="PNEUMONIA when the probability is at or above the threshold.")
    c2.metric(
        "Probability of pneumonia", an.format_probability(p), help="The model's output for this image: P(pneumonia)."
    )
    c3.metric(
        "How sure", confidence_text(p, threshold).split(":")[0].capitalize(),
        help="Distance between the probability and the threshold on the log-odds scale: under 1 borderline, "
        "under 3 moderately confident, else confident.",
    )  # fmt: skip
    st.markdown(an.plain_verdict(p, threshold))
    _probability_bar(p, threshold)

    st.markdown("##### Where the model looked (Grad-CAM)")
    k1, k2 = st.columns([3, 2])
    choice = k1.radio(
        "Heatmap shows evidence for", EXPLAIN_OPTIONS, horizontal=True, key="explain",
        help="Grad-CAM highlights the regions whose features pushed the model towards the chosen class.",
    )  # fmt: skip
    alpha = k2.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="opacity")
    cls = an.explained_class(choice, p, threshold)
    shown = _display(res.pixels)  # (h, w) at most DISPLAY_SIDE: blend at that size, not at full resolution
    overlay = an.heatmap_overlay(res, cls, alpha, loaded.image_size, image=shown)  # (h, w, 3) uint8
    h, w = res.pixels.shape
    i1, i2 = st.columns(2)
    i1.image(shown, caption=f"Original, {w} × {h} px", width="stretch")
    i2.image(
        overlay, width="stretch",
        caption=f"Grad-CAM for {config.CLASS_NAMES[cls]} (red = strongest evidence; scaled to its own maximum)",
    )  # fmt: skip
    _facts(res)

    stem = res.name.rsplit(".", 1)[0] or "image"
    meta = loaded.metadata

    def _report(fmt: str, r=res, t=threshold, c=cls, a=alpha):
        def make() -> bytes:
            data = build_report(r, t, meta, target_class=c, alpha=a, fmt=fmt)
            release_memory()  # matplotlib leaves a few tens of MB of freed buffers
            return data

        return make

    with st.container(horizontal=True):
        st.download_button("Report (PDF)", _report("pdf"), f"{stem}_pneumo_report.pdf", "application/pdf",
                           on_click="ignore", icon=":material/picture_as_pdf:", key="dl_pdf")  # fmt: skip
        st.download_button("Report (PNG)", _report("png"), f"{stem}_pneumo_report.png", "image/png",
                           on_click="ignore", icon=":material/image:", key="dl_png")  # fmt: skip
        st.download_button("Overlay, full resolution", _overlay_png(res, cls, alpha), f"{stem}_gradcam.png",
                           "image/png", on_click="ignore", icon=":material/download:", key="dl_overlay")  # fmt: skip


def _facts(res: an.Analysis) -> None:
    """The display-safe image facts (for DICOM: modality, view position, size; never patient fields)."""
    st.caption(" · ".join(f"{k}: {v}" for k, v in res.facts.items()))


def _probability_bar(p: float, t: float) -> None:
    """A bar from 0 to 100 % filled to the probability, with a marker and a label at the threshold."""
    colour = "#c62828" if p >= t else "#2e7d32"
    shift = "0%" if t < 0.15 else "-100%" if t > 0.85 else "-50%"  # keep the label inside the bar's width
    st.html(
        f"""<div style="margin:2px 0 14px 0;font-family:sans-serif;font-size:12px;color:#52606d">
        <div style="position:relative;height:18px">
          <span style="position:absolute;left:{t * 100:.1f}%;transform:translateX({shift});white-space:nowrap">
            threshold {an.format_threshold(t, percent=True)}</span>
        </div>
        <div style="position:relative;height:16px;background:#e8ecf1;border-radius:8px">
          <div style="width:{p * 100:.1f}%;height:100%;background:{colour};border-radius:8px"></div>
          <div title="threshold" style="position:absolute;left:calc({t * 100:.1f}% - 1px);top:-4px;width:3px;
               height:24px;background:#1f2933"></div>
        </div>
        <div style="position:relative;height:16px">
          <span style="position:absolute;left:0">0%</span>
          <span style="position:absolute;right:0">100%</span>
        </div></div>"""
    )


# ---- several files: table + selection; one file: its detail ---------------------------------------------------------
if len(results) > 1:
    rows = an.results_rows(results, threshold)
    st.subheader(f"Results for {len(results)} files")
    st.dataframe(
        rows,
        hide_index=True,
        column_config={
            "file": st.column_config.TextColumn("File"),
            "probability": st.column_config.ProgressColumn(
                "P(pneumonia)", min_value=0.0, max_value=1.0, format="percent"
            ),
            "label": st.column_config.TextColumn(f"Label at {an.format_threshold(threshold)}"),
            "note": st.column_config.TextColumn("Notes", width="large"),
        },
    )
    st.download_button(
        "Download the table (CSV)", an.rows_to_csv(rows, threshold), "pneumo_results.csv", "text/csv",
        on_click="ignore", icon=":material/download:",
    )  # fmt: skip
    index = st.selectbox(
        "Show the detail of",
        range(len(results)),
        index=len(results) - 1,  # the newest upload: adding a file to the uploader shows that file
        format_func=lambda i: results[i].name,
        key="detail",
    )
    st.divider()
    st.subheader(results[index].name)
    show_detail(results[index])
else:
    st.subheader(results[0].name)
    show_detail(results[0])
