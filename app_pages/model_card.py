"""Model card: intended use, data, architecture, measured metrics, ROC and confusion, threshold rule, limitations."""

from __future__ import annotations

import json

import streamlit as st

from app_pages.common import model_or_stop
from pneumo import modelcard
from pneumo.analysis import format_threshold

loaded = model_or_stop()
meta = loaded.metadata
training = meta.get("training", {}) or {}
data = training.get("data", {}) or {}
settings = training.get("settings", {}) or {}


@st.cache_data(show_spinner=False)
def _evaluation_png(meta_json: str, split: str) -> bytes | None:
    fig = modelcard.evaluation_figure(json.loads(meta_json), split)
    return None if fig is None else modelcard.figure_png(fig)


st.title("Model card")
st.caption(
    f"Model **{meta.get('name', loaded.path.stem)}**, trained {str(meta.get('created', 'unknown'))[:10]}. Everything "
    f"on this page is read from its metadata file, `{loaded.path.with_suffix('.json').name}`."
)
val = (meta.get("metrics") or {}).get("validation", {})
c = st.columns(6)
c[0].metric("Parameters", f"{int(meta.get('parameters', loaded.model.count_params())):,}")
c[1].metric("Input", f"{loaded.image_size} px", help=f"{loaded.image_size} × {loaded.image_size} grayscale")
c[2].metric("Threshold", format_threshold(loaded.threshold))
for col, key, title, fmt in (
    (c[3], "auc", "Validation AUC", "{:.3f}"),
    (c[4], "sensitivity", "Val. sensitivity", "{:.1%}"),
    (c[5], "specificity", "Val. specificity", "{:.1%}"),
):
    if key in val:
        col.metric(title, fmt.format(val[key]), help="measured on the validation split at the stored threshold")

st.subheader("Intended use")
st.markdown(
    """
- **For:** teaching and research: showing how a small CNN separates normal from pneumonia on pediatric chest
  radiographs of one public data set, how its threshold trades sensitivity for specificity, and what Grad-CAM shows.
- **Not for:** diagnosis, triage, screening or any decision about a patient; adults; lateral views, CT or any other
  modality; images from other hospitals without new validation. It is **not a medical device**.
"""
)

st.subheader("Training data")
st.markdown(
    f"""
- **Data set:** {
        data.get(
            "dataset",
            "Kermany, Zhang, Goldbaum (2018), Chest X-Ray Images (Pneumonia), doi:10.17632/rscbjbr9sj.2, CC BY 4.0",
        )
    }.
  Pediatric (1-5 years) anterior-posterior chest radiographs from Guangzhou Women and Children's Medical Center,
  one centre; PNEUMONIA includes bacterial and viral cases.
- **Training images:** {data.get("train_images", "?")} ({data.get("train_normal", "?")} normal,
  {data.get("train_pneumonia", "?")} pneumonia).
- **Validation split:** {meta.get("validation_split", {}).get("rule", "not recorded")}
  ({meta.get("validation_split", {}).get("images", "?")} images).
- **Data fingerprint (SHA-256 over every training file's path and content):** `{
        data.get("fingerprint_sha256", "not recorded")
    }`
"""
)

st.subheader("Architecture")
widths = settings.get("widths")
st.markdown(
    f"""
A small convolutional network built for this project (`pneumo.model.build_model`): grayscale input
{loaded.image_size} × {loaded.image_size}, rescaling and per-image standardisation inside the model, a stride-2 stem
convolution ({settings.get("stem_width", "?")} filters), {len(widths) if widths else "several"} blocks of
depthwise-separable convolutions (widths {", ".join(map(str, widths)) if widths else "?"}) with batch normalisation,
global average pooling, dropout {settings.get("dropout", "?")} and one sigmoid output, P(pneumonia).
**{int(meta.get("parameters", loaded.model.count_params())):,} parameters.** Grad-CAM explains the layer
`{loaded.gradcam_layer}`.
"""
)
with st.expander("Layer by layer"):
    lines: list[str] = []
    loaded.model.summary(print_fn=lambda s, **_: lines.append(s), line_length=100)
    st.code("\n".join(lines), language=None)

st.subheader("Measured performance")
rows = modelcard.metric_rows(meta)
if rows:
    st.dataframe(
        rows,
        hide_index=True,
        column_config={
            "data": st.column_config.TextColumn("Measured on"),
            "images": st.column_config.TextColumn("Images"),
            "ROC AUC": st.column_config.NumberColumn(format="%.3f"),
            "accuracy": st.column_config.NumberColumn("Accuracy", format="percent"),
            "sensitivity": st.column_config.NumberColumn("Sensitivity", format="percent"),
            "specificity": st.column_config.NumberColumn("Specificity", format="percent"),
            "ECE": st.column_config.NumberColumn(format="%.3f"),
            "threshold": st.column_config.NumberColumn("Threshold", format="%.2f"),
        },
    )
    splits_here = list((meta.get("metrics") or {}).keys())
    st.markdown(
        "\n".join(f"- **{modelcard.split_label(s)}**: {modelcard.split_description(s)}." for s in splits_here)
        + "\n\nSensitivity = share of pneumonia images labelled PNEUMONIA; specificity = share of normal images "
        "labelled NORMAL, both at the threshold shown; ECE = expected calibration error of the probabilities."
    )
else:
    st.warning("The metadata contains no metrics.")
splits = [s for s in ("validation", "test", "official_val") if s in (meta.get("metrics") or {})]
tabs = st.tabs([modelcard.split_label(s) for s in splits]) if splits else []
for tab, split in zip(tabs, splits, strict=True):
    with tab:
        png = _evaluation_png(json.dumps(meta, sort_keys=True), split)
        st.caption(f"Measured on the {modelcard.split_label(split).lower()}: {modelcard.split_description(split)}.")
        if png:
            st.image(png, width="stretch")
        else:
            st.caption("No curves stored for this split.")

st.subheader("Threshold rule")
st.markdown(meta.get("threshold_rule", "Not recorded."))
st.markdown(
    f"The stored threshold is **{format_threshold(loaded.threshold)}**: probability ≥ threshold → PNEUMONIA. "
    "The Analyze page lets you move it and shows the validation sensitivity and specificity that go with each value."
)

plot = loaded.path.parent / str((meta.get("files") or {}).get("plot", loaded.path.stem + "_training.png"))
if plot.is_file():
    st.subheader("Training curves")
    st.image(str(plot), width="stretch")

st.subheader("Known limitations")
st.markdown(
    """
- **Pediatric, single centre.** All images are of children aged 1-5 from one hospital; performance on adults or on
  other hospitals' scanners and protocols is unknown and probably worse.
- **Labels are image-level.** The model has never seen where the pneumonia is; Grad-CAM is a coarse explanation and
  may highlight shortcuts (text markers, borders, devices) rather than lung.
- **No stage, no cause.** It does not distinguish bacterial from viral pneumonia or stage the disease, and it knows
  only NORMAL and PNEUMONIA: other findings (effusion, masses, tubes) are outside its scope.
- **Validation is optimistic.** The validation split comes from the same pool of images as the training set and is
  much easier than new patients: on the data set's separate test folder, comparable models score clearly lower, with
  most of the loss in specificity (normals called pneumonia). Expect lower figures than those above.
- **Data-set quirks.** Images were squashed to a square; the public data set has known duplicates and label noise.
- **Not a medical device**, not validated for clinical use.
"""
)

st.subheader("How to retrain")
st.markdown("This model was trained with:")
st.code(training.get("command", "python -m pneumo.train --data <chest_xray folder> --out models/"), language="bash")
st.markdown(
    "Download the data set (doi:10.17632/rscbjbr9sj.2) so that `chest_xray/train/{NORMAL,PNEUMONIA}` exists, run "
    "the command above, and the new `pneumo_cnn.keras` and `pneumo_cnn.json` (metrics, ROC, threshold) appear in the "
    "output folder. Point the app at another model with the environment variable `PNEUMO_MODEL`."
)
with st.expander("All training settings and versions"):
    st.json({k: training.get(k) for k in ("preset", "settings", "epochs_run", "best_epoch", "seconds", "machine")}
            | {"versions": meta.get("versions", {})})  # fmt: skip
