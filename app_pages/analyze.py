"""Analyze page: upload chest X-rays (or pick a sample), see P(pneumonia), the label at a threshold and Grad-CAM.

The page reads its inputs, runs the (cached) analysis once per file, and hands the results to one fragment,
:func:`results_view`: moving the threshold or opacity slider, choosing the heatmap's class or selecting a table row
reruns only that fragment, from the cached analyses (no network, no re-reading of uploads).
"""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from app_pages.common import (
    analyze,
    display_png,
    evaluation,
    model_metadata,
    model_or_stop,
    model_path,
    overlay_display_png,
    png_bytes,
    release_memory,
    show_disclaimer,
)
from pneumo import config
from pneumo.pipeline import LABEL_ERROR, LABEL_OUT_OF_SCOPE
from pneumo.present import evaluation as ev
from pneumo.present import text as pr
from pneumo.present.table import display_rows, result_row, to_csv

ALL_SAMPLES = "all"  # the sample menu entry that analyses every sample at once
EXPLAIN_OPTIONS = ("Predicted class", *reversed(config.CLASS_NAMES))  # "Predicted class", "PNEUMONIA", "NORMAL"
NOTE_CHARS = 24  # longer notes show in the detail (the table never cuts text at 1280 px)
TABLE_ROW_PX = 35  # st.dataframe's row height: the table is made tall enough for all its rows
SEEN_IN_TRAINING: set[str] = set()  # sample files the model learnt from (their results are optimistic)

st.title("Analyze a chest X-ray")
show_disclaimer()
meta = model_metadata()  # the JSON only: the page paints before TensorFlow is imported
default_t = float(meta.get("threshold", config.DEFAULT_THRESHOLD))


def _percent(threshold: float) -> float:
    """A threshold (0..1) as the slider's percent (1..99), kept to 0.1 %."""
    return round(threshold * 100, 1)


def _reset_threshold() -> None:
    st.session_state["threshold_pct"] = _percent(default_t)


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
    files = list(files or [])
    items = [(f.name, f.getvalue()) for f in files[: config.APP_MAX_FILES]]
    if len(files) > config.APP_MAX_FILES:
        left_out = [f.name for f in files[config.APP_MAX_FILES :]]
        st.warning(
            f"This upload holds {len(files)} files; the app analyses at most {config.APP_MAX_FILES} at a time, so "
            f"only the first {config.APP_MAX_FILES} are analysed below. Not analysed ({len(left_out)}): "
            + ", ".join(pr.literal(n) for n in left_out)
            + ". Upload them in another round, or use the command-line tool for whole folders.",
            icon=":material/rule:",
        )
    if not items:
        st.info(
            "Upload one or more frontal chest radiographs, or choose **Try a sample image** above.",
            icon=":material/upload_file:",
        )
else:
    from pneumo.io.samples import list_samples

    samples = list_samples()
    if not samples:
        st.error("No sample images found in assets/samples.")
    else:
        by_file = {s.file: s for s in samples}
        choice = st.selectbox(
            "Sample image (from Kermany et al. 2018, CC BY 4.0)",
            [*by_file, ALL_SAMPLES],
            format_func=lambda f: "All samples (results table)" if f == ALL_SAMPLES else by_file[f].title,
            key="sample",
            help="Pediatric chest radiographs from Guangzhou Women and Children's Medical Center, published by "
            "Kermany, Zhang and Goldbaum (2018), doi:10.17632/rscbjbr9sj.2, CC BY 4.0; converted to 8-bit grayscale "
            "and resized. 'Seen in training' means the model learnt from that very image: its result is optimistic.",
        )
        chosen = samples if choice == ALL_SAMPLES else [by_file[choice]]
        items = [(s.file, s.path.read_bytes()) for s in chosen]
        SEEN_IN_TRAINING.update(s.file for s in chosen if s.split == "training")

if not model_path().exists():
    model_or_stop()  # explains the missing model and stops
if not items:
    st.stop()

loaded = model_or_stop()
meta = loaded.metadata
default_t = loaded.threshold
with st.spinner("Analysing…"):
    results = [analyze(data, name, loaded) for name, data in items]
EVALUATION = evaluation()


# ---- pieces of the result view --------------------------------------------------------------------------------------
def operating_point_panel(threshold: float) -> None:
    """Threshold slider, reset, the optimistic validation figures and the independent figures on new patients."""
    st.markdown("**Operating point**")
    st.slider(
        "Decision threshold",
        min_value=1.0,
        max_value=99.0,
        step=1.0,
        format="%g%%",  # in percent, like the probability: one scale on the whole page
        key="threshold_pct",
        help="Images with a probability of pneumonia at or above the threshold are labelled PNEUMONIA. "
        "Lower it to miss fewer pneumonias (more false alarms); raise it for fewer false alarms.",
    )
    if abs(threshold - default_t) > 1e-9:
        st.button(f"Reset to the model's threshold ({pr.format_threshold(default_t)})", on_click=_reset_threshold)
    else:
        st.caption(f"The model's own threshold ({pr.format_threshold(default_t)}), chosen on the validation split.")
    block = ev.primary(EVALUATION)
    if block is None:
        st.warning(ev.headline(None), icon=":material/pending:")
    else:
        at = float(block.get("threshold", default_t))
        note = ""
        if abs(threshold - at) > 1e-9:
            note = f" At {pr.format_threshold(threshold)} they are not known."
        st.success(ev.headline(EVALUATION) + note, icon=":material/verified:")
    op = pr.operating_point(meta, threshold)
    val = (meta.get("metrics") or {}).get("validation") or {}
    if op is not None:
        st.caption(
            f"Validation split, optimistic (drawn from the training pool; {val.get('n', '?')} images) at "
            f"{pr.format_threshold(op.threshold)}: sensitivity {pr.format_interval(op.sensitivity, op.sensitivity_ci)}"
            f", specificity {pr.format_interval(op.specificity, op.specificity_ci)}. {pr.VALIDATION_CAVEAT}"
        )
    else:
        st.caption("The model's metadata has no validation operating point for this threshold.")


def probability_bar(v: pr.Verdict) -> None:
    """A 0-100 % scale split at the threshold into a NORMAL and a PNEUMONIA zone, with a marker at the probability.

    Nothing is 'filled': the zone the marker stands in is the label, so bar, label and number always agree.
    """
    p, t = v.probability, v.threshold
    shift = "0%" if p < 0.12 else "-100%" if p > 0.88 else "-50%"
    # the zone names sit at the threshold line, on its two sides, wherever the threshold is (pinned to the bar's
    # ends when the line is too close to one for the text to be centred on it)
    at = f"left:{t * 100:.1f}%;transform:translateX(-50%)"
    if t < 0.25 or t > 0.75:
        at = "left:0" if t < 0.25 else "right:0"
    cut = pr.format_threshold(t)
    st.html(
        f"""<div style="margin:4px 0 10px 0;font-family:sans-serif;font-size:12px;color:#37474f">
        <div style="position:relative;height:18px">
          <span style="position:absolute;left:{p * 100:.1f}%;transform:translateX({shift});white-space:nowrap;
               font-weight:700;color:{v.colour}">{pr.format_probability(p)}</span></div>
        <div style="position:relative;height:18px;border-radius:4px;overflow:visible;display:flex">
          <div style="width:{t * 100:.1f}%;background:#e3efe4;border-radius:4px 0 0 4px"></div>
          <div style="flex:1;background:#f8e1e1;border-radius:0 4px 4px 0"></div>
          <div title="threshold" style="position:absolute;left:calc({t * 100:.1f}% - 1px);top:-3px;width:2px;
               height:24px;background:#37474f"></div>
          <div title="probability" style="position:absolute;top:1px;width:14px;height:14px;border-radius:7px;
               left:clamp(0px, calc({p * 100:.1f}% - 9px), calc(100% - 18px));
               background:{v.colour};border:2px solid white;box-shadow:0 0 0 1px {v.colour}"></div>
        </div>
        <div style="position:relative;height:18px;margin-top:3px">
          <span style="position:absolute;{at};white-space:nowrap">
            <span style="color:{pr.COLOURS["NORMAL"]}">NORMAL &#9664;</span> {cut}
            <span style="color:{pr.COLOURS["PNEUMONIA"]}">&#9654; PNEUMONIA</span></span></div></div>"""
    )


def colour_bar_html(cls: int) -> str:
    """The heatmap's colour bar for class ``cls`` as HTML (no image: crisp at any size, nothing per user to serve),
    its gradient read from the overlay's own colour table (warm for PNEUMONIA, cool for NORMAL)."""
    from pneumo.explain.draw import heat_css_stops

    name = config.CLASS_NAMES[cls]
    return f"""<div style="font-size:0.8rem;color:#31333f">
      <div style="height:12px;border-radius:3px;background:linear-gradient(to right, {heat_css_stops(cls)})"></div>
      <div style="display:flex;justify-content:space-between"><span>0: no evidence</span>
      <span>1: typical {name} peak or more</span></div></div>"""


def result_panel(res, threshold: float) -> None:
    """The model's output first and plainly (P(pneumonia), the threshold and its side, in ordinary type: no label
    headline, which would read like a diagnosis), where it lies relative to the threshold, and what it means."""
    v = pr.verdict(float(res.probability), threshold)
    odd = pr.is_out_of_scope(res)  # an image outside the intended use shown on request: the line says it means nothing
    # the report's own sentence (pneumo.present.text.model_output_line); plain text, nothing in it is markdown
    st.markdown(pr.model_output_line(v.probability, threshold, default_t, out_of_scope=odd))
    badge = {"NORMAL": "green", "PNEUMONIA": "red"}[v.label] if v.position != "near" else "orange"
    badges = f":{badge}-badge[{v.position_text}]"
    if odd:  # no "near the threshold" talk for an image the model was not made for
        badges = ":red-badge[:material/report: Outside intended use: the number means nothing]"
    st.markdown(
        badges,
        help=f"Where the probability lies relative to the threshold on the log-odds scale: 'near' within "
        f"{pr.NEAR_LOGIT:g}, 'far' beyond {pr.FAR_LOGIT:g}, 'clearly' in between. It says nothing about how "
        "often the model is right: see the figures on new patients. PNEUMONIA side: the probability is at or "
        "above the threshold; NORMAL side: below it.",
    )
    if not odd and v.caution:
        st.markdown(v.caution)
    probability_bar(v)
    block = ev.primary(EVALUATION)
    st.caption(
        pr.probability_meaning(
            meta,
            block.get("ece") if block else None,
            "official test split" if block else "",
            out_of_scope=pr.is_out_of_scope(res),
        )  # fmt: skip
    )


def downloads(res, threshold: float, cls: int, alpha: float, outline: bool = True) -> None:
    """Reports and the overlay at the analysed resolution, made on request for the current settings.

    A click on 'Create the report' is a normal rerun that carries the current slider values, so the files always
    match what is on screen; the downloads are plain bytes (no deferred callables, which a rerun revokes).
    """
    from pneumo.explain.draw import result_overlay
    from pneumo.present.report import build_report

    with st.container(horizontal=True):
        reference = st.text_input(
            "Image reference on the report (optional)", max_chars=config.REPORT_REFERENCE_CHARS, key="report_ref",
            help="Printed on the report instead of the file name, e.g. a study number you choose. File names often "
            "hold a patient's name or record number, so the report leaves the file name off unless you ask for it.",
        )  # fmt: skip
        show_name = st.checkbox("Print the file name on the report", value=False, key="report_name")
    key = (res.digest, round(threshold, 4), cls, round(alpha, 3), outline, reference, show_name)
    bundle = st.session_state.get("_bundle")
    if st.button("Create the report (PDF, PNG) and the overlay image", icon=":material/description:",
                 key="make_report"):  # fmt: skip
        with st.spinner("Creating the report…"):
            when = datetime.now(UTC)
            args = {"target_class": cls, "alpha": alpha, "when": when, "evaluation": EVALUATION, "outline": outline,
                    "reference": reference, "show_name": show_name}  # fmt: skip
            bundle = {
                "key": key,
                "pdf": build_report(res, threshold, meta, fmt="pdf", **args),
                "png": build_report(res, threshold, meta, fmt="png", **args),
                "overlay": png_bytes(overlay := result_overlay(res, meta, cls, alpha, outline)),
                "overlay_size": f"{overlay.shape[1]} × {overlay.shape[0]}",  # what it is, not "full resolution"
            }
            st.session_state["_bundle"] = bundle
            release_memory()
    if not bundle or bundle["key"] != key:
        st.caption("The report shows the result at the current threshold, heatmap class and opacity.")
        return
    stem = pr.download_stem(res.name)  # no markup, path or control characters
    with st.container(horizontal=True):
        st.download_button("Report (PDF)", bundle["pdf"], f"{stem}_pneumo_report.pdf", "application/pdf",
                           on_click="ignore", icon=":material/picture_as_pdf:", key="dl_pdf")  # fmt: skip
        st.download_button("Report (PNG, 200 dpi)", bundle["png"], f"{stem}_pneumo_report.png", "image/png",
                           on_click="ignore", icon=":material/image:", key="dl_png")  # fmt: skip
        st.download_button(f"Overlay ({bundle['overlay_size']} px)", bundle["overlay"], f"{stem}_gradcam.png",
                           "image/png", on_click="ignore", icon=":material/download:", key="dl_overlay",
                           help=f"At display size: at most {config.DISPLAY_MAX_SIDE} px on the long side, like the "
                           "page and the report.")  # fmt: skip


def facts(res) -> None:
    """The display-safe image facts (for DICOM: modality, view position, size; never patient fields)."""
    st.caption(" · ".join(f"{k}: {pr.literal(v)}" for k, v in res.facts.items()))  # values come from the file


def show_detail(res, threshold: float) -> None:
    """Result, Grad-CAM, facts and report downloads for one analysed file."""
    if res.error:
        st.error(f"{pr.literal(res.name)} could not be read: {pr.literal(res.error)}", icon=":material/error:")
        return
    if pr.is_out_of_scope(res):
        # the most specific reason and at most one remark, not every code the checks raised
        why = " ".join(["This image is outside the intended use (frontal chest X-rays of children aged 1 to 5).",
                        *pr.refusal_sentences(res.warnings)])  # fmt: skip
        st.error(f"{why} On such images the model's output means nothing.", icon=":material/block:")
        if not st.toggle("Show the result anyway (for curiosity only)", key=f"anyway_{res.digest}"):
            st.image(display_png(res.digest, res), caption=pr.literal(res.name), width=420)  # captions are markdown
            facts(res)
            return
        st.error("**Outside intended use.** The result below is shown on request only; it means nothing clinically.",
                 icon=":material/report:")  # fmt: skip
    left, right = st.columns(2, gap="large")  # the image and its heatmap beside the verdict: one screen at 1280x800
    with right:  # filled first: the verdict reaches the browser before the image is encoded and sent
        if not pr.is_out_of_scope(res):
            for w in pr.warning_sentences(res.warnings):
                st.warning(w, icon=":material/help:")
        result_panel(res, threshold)
        if not pr.is_out_of_scope(res):  # the operating point and its figures say nothing about such an image
            with st.container(border=True):
                operating_point_panel(threshold)
    with left:
        cls, alpha, outline = heatmap_panel(res, threshold)
    facts(res)
    downloads(res, threshold, cls, alpha, outline)


def heatmap_panel(res, threshold: float) -> tuple[int, float, bool]:
    """The heatmap over the radiograph (or the radiograph alone), its colour bar and its controls below them; returns
    the explained class, the opacity and whether the lung outline is drawn. Only the image in view is encoded and
    sent (a radio, not tabs: tabs would encode and send both images on every change)."""
    from pneumo.explain.cam import explained_class, faint_note, scale_words

    view = st.radio("View", ("Heatmap", "Radiograph"), horizontal=True, key="view", label_visibility="collapsed")
    slot = st.empty()  # filled once the controls below are read
    pooled = meta.get("channels") == 2  # the classifier averages its features over the lung mask only
    where = (
        "The classifier averages its features over the lung mask only, so evidence outside the outline counts for "
        "nothing and the map is drawn inside it only; each cell's heat is its exact share of the model's answer. "
        if pooled
        else "The classifier sees only the lung fields grown by a small margin, so the map lies within that margin "
        "(softened at its edge); it can reach a little past the drawn outline. "
    )
    choice = st.radio(
        "Heatmap (class activation map) shows evidence for", EXPLAIN_OPTIONS, horizontal=True, key="explain",
        help="The class activation map (CAM; for this head Grad-CAM gives the same or a close map) highlights the "
        "regions whose features pushed the model towards the chosen class. " + where + "The outline often "
        "includes the lung behind the heart, and with it much of the heart shadow (on other films it follows the "
        "left heart border), so heat over the "
        "heart shadow may come from that lung or from the heart itself: the map cannot tell them apart. It is "
        "coarse (about 15 px at 224) and shows what the network used, not the extent of disease.",
    )  # fmt: skip
    k1, k2 = st.columns([3, 2], vertical_alignment="bottom")
    alpha = k1.slider("Heatmap opacity", 0, 100, 45, 5, format="%d%%", key="opacity") / 100.0  # in percent
    outline_help = (
        "The lung fields the segmentation model found: the classifier sees only these (grown by a few pixels); "
        "everything outside them is greyed out before it reads the image. Like the masks it learnt from, the left "
        "field often includes the lung behind the heart; on some films it follows the left heart border instead."
    )
    outline = k2.toggle("Lung outline", value=True, key="outline", disabled=res.lung_mask is None, help=outline_help)
    cls = explained_class(choice, float(res.probability), threshold)
    h, w = res.pixels.shape  # the app keeps display-size pixels (the file's own size is in the facts)
    enlarged = ", shown enlarged" if max(h, w) < 600 else ""
    faint = faint_note(res, meta, cls)
    with slot.container():
        if view == "Heatmap":
            st.image(
                overlay_display_png(res.digest, cls, round(alpha, 3), bool(outline), res, meta), width="stretch",
                caption=f"Heatmap of {scale_words(meta, cls)}." + (f" {faint}" if faint else ""),
            )  # fmt: skip
            st.html(colour_bar_html(cls))
        else:
            st.image(
                overlay_display_png(res.digest, cls, 0.0, bool(outline), res, meta), width="stretch",
                caption=f"The radiograph as analysed, at display size ({w} × {h} px{enlarged}); the networks read "
                "it squashed to 224 px",
            )  # fmt: skip
    return cls, alpha, bool(outline)


def _heading(name: str) -> str:
    """A file's name as literal markdown (never interpreted), marked when the model learnt from that very image."""
    return pr.literal(name) + (" · seen in training: optimistic result" if name in SEEN_IN_TRAINING else "")


def _short_note(row: dict) -> str:
    """A table note that fits its column at 1280 px; the full text is in the detail and the CSV."""
    if row["file"] in SEEN_IN_TRAINING:
        return "seen in training"
    note = row["note"]
    if len(note) <= NOTE_CHARS:
        return note
    if row["label"] == LABEL_ERROR:
        return "unreadable: open the row"
    if row["label"] == LABEL_OUT_OF_SCOPE:
        return "refused: open the row"
    count = max(int(row.get("n_warnings", 1)), 1)
    return f"{count} warning{'s' if count > 1 else ''}: open the row"


@st.fragment
def results_view() -> None:
    """Everything that depends on the sliders: reruns alone when one of them moves."""
    if "threshold_pct" not in st.session_state:
        st.session_state["threshold_pct"] = st.session_state.get("_threshold_keep", _percent(default_t))
    st.session_state["_threshold_keep"] = float(st.session_state["threshold_pct"])
    threshold = float(st.session_state["threshold_pct"]) / 100.0
    if len(results) == 1:
        st.markdown(f"#### {_heading(results[0].name)}")  # the uploader shows the name too: a smaller heading
        show_detail(results[0], threshold)
        return
    rows = display_rows(results, threshold)
    st.subheader(f"Results for {len(results)} files")
    labels = [r["label"] for r in rows]
    unread, refused = labels.count(LABEL_ERROR), labels.count(LABEL_OUT_OF_SCOPE)
    if unread or refused:  # said above the table, where it is seen, not left for a scroll through the rows
        parts = [f"{len(rows) - unread - refused} analysed"]
        parts += [f"**{refused} outside the intended use** (no result)"] if refused else []
        parts += [f"**{unread} could not be read**"] if unread else []
        st.warning(" · ".join(parts) + ". Select a row to see why.", icon=":material/warning:")
    table = [
        {
            "file": r["file"],
            "P(pneumonia)": r["shown"],
            "label": r["label"],
            "position": r["position"].replace(" the threshold", ""),
            "notes": _short_note(r),
        }
        for r in rows
    ]
    event = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="table",
        height=TABLE_ROW_PX * (len(table) + 1) + 3,  # every row visible (an upload holds at most APP_MAX_FILES)
        column_config={
            "file": st.column_config.TextColumn("File", width=250),
            "P(pneumonia)": st.column_config.TextColumn("P(pneumonia)", width=100),
            "label": st.column_config.TextColumn(f"Label at {pr.format_threshold(threshold)}", width=110),
            "position": st.column_config.TextColumn("vs threshold", width=110),
            "notes": st.column_config.TextColumn("Notes", help="Full text in the detail (select the row) and the CSV"),
        },
    )
    st.download_button(
        "Download the table (CSV)", to_csv(result_row(r, threshold) for r in results), "pneumo_results.csv", "text/csv",
        on_click="ignore", icon=":material/download:",
    )  # fmt: skip
    selected = list(event.selection.rows) if event and event.selection else []
    answered = [i for i, r in enumerate(results) if not r.error and not pr.is_out_of_scope(r)]
    readable = answered or [i for i, r in enumerate(results) if not r.error] or [len(results) - 1]
    index = selected[0] if selected else readable[-1]  # the newest file with a result unless a row is selected
    st.caption("Select a row (click the box at its left) to show that file below." if not selected else
               "Showing the selected row; click it again to go back to the newest file with a result.")  # fmt: skip
    st.divider()
    st.subheader(_heading(results[index].name))
    show_detail(results[index], threshold)


results_view()
