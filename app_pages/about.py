"""About: what pneumo is, the disclaimer, versions, privacy and links."""

from __future__ import annotations

import streamlit as st

import pneumo
from app_pages.common import model_metadata, model_path, show_disclaimer
from pneumo import config
from pneumo.present.modelcard import DATASET

st.title("About pneumo")
show_disclaimer()
st.markdown(
    """
pneumo is a **research and teaching demo**. It reads a pediatric chest X-ray and estimates the probability that it
shows pneumonia, with a Grad-CAM heatmap of the regions that drove the estimate. It was built to show how such a model
is trained, evaluated and explained, and where it fails, not to help care for patients.

**Privacy.** Uploaded files are processed in the server's memory and never written to disk or logged. To keep the
app fast, the analysis of a file is kept in memory, keyed by a hash of its bytes, for at most an hour. DICOM files:
only modality, view position and image size are read for display; patient name, ID and birth date are never shown or
stored. Reports are generated on your request and sent only to your browser.
"""
)
path = model_path()
meta = model_metadata()
created = "no model file found"
if meta:
    created = f"{meta.get('name', path.stem)}, trained {str(meta.get('created', 'unknown'))[:10]}"
st.markdown(f"**Version.** pneumo {pneumo.__version__}; model: {created}.")
with st.container(horizontal=True):
    st.page_link("app_pages/model_card.py", label="Model card: data, measured figures, limitations",
                 icon=":material/description:")  # fmt: skip
    st.page_link("app_pages/analyze.py", label="Analyze an X-ray", icon=":material/search:")
    if config.REPOSITORY_URL:
        st.page_link(config.REPOSITORY_URL, label="Source code and README", icon=":material/code:")
if not config.REPOSITORY_URL:
    st.caption("Source code: the pneumo repository (README.md explains set-up, training and deployment).")
st.markdown(
    f"""
**Links**
- Data: {DATASET}, [doi:10.17632/rscbjbr9sj.2](https://doi.org/10.17632/rscbjbr9sj.2).
- Kermany DS et al. (2018). *Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning.*
  Cell 172(5):1122-1131, [doi:10.1016/j.cell.2018.02.010](https://doi.org/10.1016/j.cell.2018.02.010).
- Selvaraju RR et al. (2017). *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization.*
  ICCV 2017, [arXiv:1610.02391](https://arxiv.org/abs/1610.02391).
- Built with [Streamlit](https://streamlit.io), [Keras](https://keras.io) and [TensorFlow](https://www.tensorflow.org).

**Licence.** Code MIT; sample images CC BY 4.0 (see `assets/samples/ATTRIBUTION.md`).
"""
)
