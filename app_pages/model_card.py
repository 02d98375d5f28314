"""Model card: intended use, data, architecture, measured metrics, ROC and confusion, threshold rule, limitations."""

from __future__ import annotations

import json

import streamlit as st

from app_pages.common import evaluation, model_or_stop
from pneumo import config
from pneumo.nets.lite import describe
from pneumo.present import evaluation as ev
from pneumo.present import modelcard
from pneumo.present.text import format_threshold, prevalence

loaded = model_or_stop()
meta = loaded.metadata
n_params = int(meta.get("parameters") or 0)  # the whole ensemble's, from its metadata
training = meta.get("training", {}) or {}
data = training.get("data", {}) or {}
settings = training.get("settings", {}) or {}


@st.cache_data(show_spinner=False)
def _evaluation_png(meta_json: str, split: str) -> bytes | None:
    fig = modelcard.evaluation_figure(json.loads(meta_json), split)
    return None if fig is None else modelcard.figure_png(fig)


@st.cache_data(show_spinner=False)
def _figure_png(name: str, meta_json: str) -> bytes | None:
    """A metadata figure of pneumo.present.modelcard ('training' or 'reliability') as PNG, drawn once per metadata."""
    fig = getattr(modelcard, f"{name}_figure")(json.loads(meta_json))
    return None if fig is None else modelcard.figure_png(fig)


st.title("Model card")
st.caption(
    f"Model **{meta.get('name', loaded.path.stem)}**, trained {str(meta.get('created', 'unknown'))[:10]}. Everything "
    f"on this page is read from its metadata file, `{loaded.path.with_suffix('.json').name}`."
)
val = (meta.get("metrics") or {}).get("validation", {})
EVAL = evaluation()
block = ev.primary(EVAL)
c = st.columns(5)
c[0].metric("Parameters", f"{n_params:,}" if n_params else "not recorded")
c[1].metric("Threshold", format_threshold(loaded.threshold))
if block:
    c[2].metric("Test AUC", f"{block['auc']:.3f}", help=f"official test split, {block['n']} images")
    c[3].metric("Test sensitivity", f"{block['sensitivity']:.1%}",
                help=f"{block['n_pneumonia']} pneumonia images of the official test split")  # fmt: skip
    c[4].metric("Test specificity", f"{block['specificity']:.1%}",
                help=f"{block['n_normal']} normal images of the official test split")  # fmt: skip
st.markdown(ev.headline(EVAL))

st.subheader("Independent evaluation")
if EVAL is None:
    st.warning(
        "This model file has **not yet been independently evaluated**. The maintainers score every landed model on "
        "sequestered sets; until they have scored this one (it is matched by the SHA-256 of the model file), only "
        "the optimistic validation figures below exist.",
        icon=":material/pending:",
    )
    previous = ev.previous_sentence(meta, ev.load_previous(meta))
    if previous:
        st.info(previous, icon=":material/history:")
else:
    st.markdown(
        f"Scored by {EVAL.get('evaluator', 'the maintainers')} on {EVAL.get('evaluated', '?')}, "
        f"{EVAL.get('protocol', '')}. 95 % intervals: AUC by bootstrap, sensitivity and specificity Wilson."
    )
    sets = EVAL.get("sets") or {}
    outside = ev.outside_keys(EVAL)
    st.markdown("**Within the intended use** (pediatric frontal radiographs)")
    st.table(ev.table_rows(EVAL))  # a static table wraps its text: nothing is cut at 1280 px
    st.markdown(
        "\n".join(f"- **{ev.set_label(k)}**: {ev.set_description(k, b)}." for k, b in sets.items() if k not in outside)
        + "\n\nECE = expected calibration error (10 bins): how far the probabilities are from observed frequencies. "
        f"A figure resting on fewer than {config.FEW_IMAGES} images reads 'too few images to mean much'."
    )
    if outside:  # apart and folded: these figures are not comparable with the ones above
        with st.expander(ev.OUTSIDE_TITLE, icon=":material/block:"):
            st.caption(
                "The scope gate refuses most of these images; the figures on the few it lets through rest on too few "
                "images to mean much, and scored all the same the model does no better than chance. They are here "
                "to show that the model must not be used on adults, not as a measure of how well it works."
            )
            st.table(ev.table_rows(EVAL, intended_use=False))
            st.markdown("\n".join(f"- **{ev.set_label(k)}**: {ev.set_description(k, sets[k])}." for k in outside))
    newer_gate = ev.gate_sentence(EVAL, loaded.gate.metadata if loaded.gate is not None else None)
    if newer_gate:
        st.info(newer_gate, icon=":material/history:")

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
- **Data set:** {modelcard.DATASET}.
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
input_px = loaded.classifier.image_size  # the classifier's input side
POOLING = "average pooling over the lung mask" if meta.get("channels") == 2 else "global average pooling"
st.markdown(
    f"""
A small convolutional network built for this project (`pneumo.training.networks.build_model`): grayscale input
{input_px} × {input_px}, rescaling and per-image standardisation inside the model, a stride-2 stem
convolution ({settings.get("stem_width", "?")} filters), {len(widths) if widths else "several"} blocks of
depthwise-separable convolutions (widths {", ".join(map(str, widths)) if widths else "?"}) with batch normalisation,
{POOLING}, dropout {settings.get("dropout", "?")} and one sigmoid output, P(pneumonia).
**{f"{n_params:,}" if n_params else "An unrecorded number of"} parameters in the model file** (with an ensemble, all
its members together: see below). Grad-CAM explains the layer
`{loaded.classifier.gradcam_layer}`.
"""
)
members = int(settings.get("members") or training.get("members") or 1)  # the training run's --members
if members > 1:
    st.markdown(
        f"The app runs an **ensemble of {members} such networks**, trained from different initialisations on the same "
        "split and merged into one model whose logit is the mean of theirs. Its head is again "
        + ("average pooling over the lung mask" if meta.get("channels") == 2 else "global average pooling")
        + " and one dense layer over the members' concatenated maps, so its heatmap is the mean of their maps. The "
        f"parameter count above ({n_params:,}) and the layer table below are the whole ensemble's: about "
        f"{n_params // members:,} per network."
    )
with st.expander("Layer by layer"):
    st.dataframe(
        meta.get("layers") or [],  # the file's layers, from its metadata (the app runs its TFLite copy)
        hide_index=True,
        width="stretch",
        column_config={"parameters": st.column_config.NumberColumn("Parameters", format="%d")},
    )
st.caption(
    f"How the app runs the networks: {describe(loaded)}. The TFLite copies (`.tflite` beside each `.keras`"
    " file, made by `python -m pneumo.training.export`) are made from these very files and checked by SHA-256 when"
    " they load (a stale copy is refused, not silently replaced); they give TensorFlow's answers to about 1e-5."
)

st.subheader("Anatomy: what the classifier sees")
lung_meta = loaded.lungs.metadata if loaded.lungs is not None else None
if lung_meta is None:
    st.markdown("This classifier reads the whole image: there is no lung segmentation in front of it.")
else:
    n_params = int(lung_meta.get("parameters", 0))
    finder = (
        f"the scope gate's lung head (`{loaded.lungs.path.name}`: one network of {n_params:,} parameters, "
        f"{lung_meta.get('input_size', '?')} px input, whose encoder also judges the scope, so the path runs two "
        "networks per image, not three)"
        if loaded.shared_lungs
        else f"a U-Net (`{loaded.lungs.path.name}`, {n_params:,} parameters, "
        f"{lung_meta.get('input_size', '?')} px input)"
    )
    st.markdown(
        f"""
Before the classifier runs, {finder} finds the lung fields on the 224 × 224 squash of the image. The classifier
then sees only the lungs: everything outside the lung mask grown by a few pixels is set to the mean grey and the
lungs' bounding box is squashed to {input_px} × {input_px}. Borders and text markers away from the lungs cannot
reach it, nor the neck and the abdomen while the mask is right; a mask that runs below the diaphragm lets some abdomen
in, and a lung field outlined too short leaves what lies below it out (the page then warns that one field was
outlined much shorter than the other). Post-processing: {lung_meta.get("post_processing", "not recorded")}.
"""
    )
    if meta.get("channels") == 2:
        st.markdown(
            "**Evidence inside the lungs by construction.** The mask itself (not grown) is the classifier's second "
            "input channel, and its last features are averaged over the lung cells only (masked average pooling: "
            "each cell weighted by its share of lung). A cell without lung adds nothing to the answer, so the "
            "heatmap is exactly zero outside the mask, and the map's lung-weighted sum plus the bias is the logit."
        )
    st.markdown("**Segmentation quality** (validation patients, Dice and IoU at 224 px against the V7 Labs masks)")
    st.table(modelcard.lung_rows(lung_meta))
    st.caption(
        "The reference masks are lung *fields* that include the region behind the heart; they are hand-drawn and "
        "imprecise in places (masks: V7 Labs, CC BY 4.0)."
    )
rob_rows = modelcard.robustness_rows(meta)
if rob_rows:
    rob = meta["robustness"]
    st.markdown(
        "**Robustness tests you can rerun** (`python -m pneumo.training.robustness`; "
        f"{rob.get('data', 'validation split')}, "
        f"threshold {format_threshold(float(rob.get('threshold', loaded.threshold)))}). Validation images are easier "
        "than new patients, but what changes when non-lung pixels change is a fair test of what the model reads."
    )
    st.table(rob_rows)
    sentence = modelcard.heatmap_sentence(meta)
    if sentence:
        st.markdown(sentence)
    deletion = modelcard.deletion_rows(meta)
    if deletion:
        st.markdown(
            "**Is the heatmap faithful? The deletion test** (same validation images): in the classifier's own input, "
            "the lung cells of the map with the most evidence for the image's class are greyed first (the grey is "
            "the image's mean inside its lungs), and P(pneumonia) is measured again; as many random lung cells are "
            "the control. A faithful map moves P away from the image's class faster than the control: down for "
            "PNEUMONIA images, up for NORMAL ones."
        )
        st.table(deletion)
        st.markdown(modelcard.deletion_sentence(meta))
        st.caption(
            "Greying is not neutral for this task: a flat grey patch looks like an opacity, so greying random cells "
            "of a pneumonia image can even raise P. Compare the two columns, not each with the value before."
        )
    reliability = _figure_png("reliability", json.dumps(meta, sort_keys=True))
    if reliability is not None:
        val = (meta.get("metrics") or {}).get("validation") or {}
        share = f"{val['n_pneumonia'] / val['n']:.0%}" if val.get("n") and "n_pneumonia" in val else "most"
        n_rel = sum(int(b["n"]) for b in ((meta.get("robustness") or {}).get("calibration") or {}).get("bins", []))
        c1, c2 = st.columns([2, 3])
        c1.image(reliability, width="stretch")
        c2.caption(
            "Reliability diagram: for each probability bin, the share of validation images that show pneumonia "
            f"(numbers: images per bin; the {n_rel} validation images with a reference lung mask, on which the "
            f"robustness figures are measured; the table's ECE is on all {val.get('n', '?')}). Points above the "
            "diagonal mean the model says less than it should "
            "(under-confident), points below more. The model was trained with class weights, as if half the images "
            f"showed pneumonia, while {share} of the validation images do. New patients differ again: see the "
            "independent evaluation, when there is one."
        )

st.subheader("Scope gate: images outside the intended use")
gate = loaded.gate
if gate is None:
    st.warning("No scope gate is installed beside this model: only the exact rules (colour, uniform, DICOM tags) run.")
else:
    gmeta = gate.metadata
    GATE_RULE = gmeta.get("threshold_rules", {}).get("in_scope", "not recorded")
    HEADS = len(gmeta.get("outputs", {})) or 2
    MIRROR_HEAD = "mirror" in gmeta.get("outputs", {})
    UNDO = (
        "Two heads undo a 90°/180°/270° turn or inverted grey levels, and a left-right mirror when the gate is sure "
        "(a right-sided heart is assumed to be a mirrored film, though true dextrocardia exists)"
        if MIRROR_HEAD
        else "One head undoes a 90°/180°/270° turn or inverted grey levels"
    )
    mv = (gmeta.get("metrics") or {}).get("mirror_validation") or {}
    if mv.get("mirrored") and "mirror_warn" in gmeta.get("thresholds", {}):
        m, u = mv["mirrored"], mv["upright"]
        UNDO += (
            f"; a film less surely mirrored (P(mirrored) from {gmeta['thresholds']['mirror_warn']:.2f}) is analysed as "
            f"it is with the warning that it may be mirrored. Of the {m['n']} validation films mirrored, "
            f"{m['flipped']:.1%} were flipped back and {m['warned_possibly_mirrored']:.1%} warned; of the same films "
            f"upright, {u['flipped']:.1%} were wrongly flipped and {u['warned_possibly_mirrored']:.1%} warned"
        )
    st.markdown(
        f"""
Before any result, every image passes exact rules (DICOM modality, body part and view; colour; uniform; size) and a
small {HEADS}-headed CNN (`pneumo_scope.keras`, {int(gmeta.get("parameters", 0)):,} parameters,
{gmeta.get("input_size", "?")} px input). {UNDO} (the result then says so); the kind head says whether the image is a
child's frontal chest radiograph, an adult's, a lateral view, another body part, or no radiograph at all. Its
threshold: {GATE_RULE}. An image outside the intended use gets no result unless asked for (app: "show anyway"; CLI:
`--force`).
"""
    )
    st.table(modelcard.scope_rows(gmeta))
    sentence = modelcard.orientation_sentence(gmeta)
    if sentence:
        st.markdown(sentence)
    st.markdown(
        f"""
**What it cannot catch.** The held-out images above come from the same collections the gate was trained on; adult
films, photographs and scans from other sources will be caught less often. It was not shown teenagers,
{"" if MIRROR_HEAD else "mirrored films, "}small rotations, oblique views without a DICOM header or heavy crops. The
children it refuses are mostly pneumonia films it takes for adults, so a refusal can hide a sick child: use "show
anyway" and look at the film yourself.
"""
    )

st.subheader("Validation figures (optimistic)")
CHOSE = (meta.get("validation_split") or {}).get("chose", "the best epochs and the threshold")
st.caption(
    "Measured on images drawn from the same pool as the training images: much easier than new patients. "
    f"This split also chose {CHOSE}, so its sensitivity at the threshold is a target that was met, and the design "
    "choices were compared on it. No figures from patients that chose nothing exist for this model: training used "
    "every patient of the training folder for either fitting or choosing. The only untouched figures are the "
    "independent ones on new patients, above."
)
rows = modelcard.metric_rows(meta)
if rows:
    st.table(modelcard.display_rows(rows))  # a static table wraps its text: nothing is cut at 1280 px
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

curves = _figure_png("training", json.dumps(meta, sort_keys=True))  # from the metadata: readable at any width
plot = loaded.path.parent / str((meta.get("files") or {}).get("plot", loaded.path.stem + "_training.png"))
if curves is not None or plot.is_file():
    st.subheader("Training curves")
    n_members = len((meta.get("training") or {}).get("member_histories") or []) or 1
    members = f"each of the {n_members} ensemble members" if n_members > 1 else "the network"
    settings = (meta.get("training") or {}).get("settings") or {}
    stopping = ("Each run stops once validation AUC stops improving." if settings.get("early_stopping", True)
                else f"Each run trains a fixed {settings.get('epochs', '?')} epochs and keeps the last.")  # fmt: skip
    if curves is not None:
        st.image(curves, width="stretch", caption=(
            f"Loss and AUC of {members} by epoch, on its training images (dotted) and on the validation split carved "
            "from train (solid; optimistic). " + stopping))  # fmt: skip
    else:
        st.image(str(plot), width="stretch", caption=(
            "ROC on the validation split carved from train (optimistic) and on the official val folder (16 images); "
            f"loss and AUC of {members} by epoch."))  # fmt: skip

st.subheader("Known limitations")
nih = ((EVAL or {}).get("sets") or {}).get("external_nih")
prev_nih = ((ev.load_previous(meta) or {}).get("sets") or {}).get("external_nih")
if nih:
    forced = nih.get("all_images_forced") or nih  # every image scored: what a user who ignores the refusal gets
    ADULTS = (
        f"on {forced['n']:,} radiographs of mostly adults from other hospitals (NIH ChestX-ray14, scored by the "
        f"maintainers) the scope gate refused {ev.refused_text(nih)}; forced through, its AUC on all of them was "
        f"{forced['auc']:.2f}, sensitivity {forced['sensitivity']:.0%} and specificity {forced['specificity']:.0%}: "
        "no better than chance. Do not use it on adults."
    )
elif prev_nih:
    ADULTS = (
        f"this model has not been measured on adults, but the previous model of this project was no better than "
        f"chance on {prev_nih['n']:,} radiographs of mostly adults from other hospitals (NIH ChestX-ray14, AUC "
        f"{prev_nih['auc']:.2f}). Do not use it on adults: the scope gate refuses the adult films it recognises."
    )
else:
    ADULTS = "how it does on adults or other hospitals' images has not been measured for this model."
CALIBRATION = (
    f"on new patients it is off by {block['ece']:.2f} on average (ECE, official test split, {block['n']} images)"
    if block and block.get("ece") is not None
    else "its calibration on new patients has not been measured"
)
prev = prevalence(meta)
PREVALENCE = f"{prev:.0%} of the training images show pneumonia:" if prev is not None else ""
st.markdown(
    f"""
- **Pediatric, single centre.** All images are of children aged 1-5 from one hospital; {ADULTS}
- **Labels are image-level.** The model has never seen where the pneumonia is; Grad-CAM is a coarse explanation and
  may highlight what lies inside the lung outline without being disease (ribs, the heart border, lines and tubes);
  text markers, the film's borders, the neck and the abdomen are outside what the classifier sees.
- **No stage, no cause.** It does not distinguish bacterial from viral pneumonia or stage the disease, and it knows
  only NORMAL and PNEUMONIA: other findings (effusion, masses, tubes) are outside its scope.
- **Validation is optimistic.** The validation split comes from the same pool of images as the training set and is
  much easier than new patients: on the official test split most of the loss is in specificity (normals called
  pneumonia). Quote the figures on new patients, not the validation figures.
- **Probabilities are not calibrated for new patients.** {PREVALENCE} the score is not a child's
  chance of pneumonia, and {CALIBRATION}.
- **Data-set quirks.** Images were squashed to a square; the public data set has known duplicates and label noise.
- **Not a medical device**, not validated for clinical use.
"""
)

st.subheader("How to retrain")
st.markdown("This model was trained with:")
st.code(modelcard.portable_command(training.get("command", "")), language="bash")
st.markdown(
    "Download the data set (doi:10.17632/rscbjbr9sj.2) so that `chest_xray/train/{NORMAL,PNEUMONIA}` exists, "
    "install `requirements-train.txt`, and run the command above with `<data folder>` pointing at `chest_xray` (and "
    "any other `<name>` at the folder of that name on your machine, e.g. the lung masks). The new `pneumo_cnn.keras` "
    "and `pneumo_cnn.json` (metrics, ROC, threshold) appear in the output folder. Point the app at another model "
    "with the environment variable `PNEUMO_MODEL`. A retrained model is not independently "
    "evaluated until the maintainers score it."
)
with st.expander("All training settings and versions"):
    st.json(modelcard.portable_settings(training) | {"versions": meta.get("versions", {})})
