"""The four stages of pneumonia: background reading with a timeline; the classifier does not stage pneumonia."""

from __future__ import annotations

import streamlit as st

from pneumo.present import pneumonia_stages as stages


@st.cache_data(show_spinner=False)
def _timeline() -> bytes:
    return stages.timeline_png()


st.title("The four stages of pneumonia")
st.info(stages.NOT_STAGED, icon=":material/info:")
st.markdown(
    "Classic **lobar pneumonia** passes through four overlapping stages, named after what a pathologist sees in the "
    "lung. The timeline shows the typical course without treatment and what a chest X-ray usually shows along the way."
)
st.image(_timeline(), width="stretch")
st.caption(stages.CAVEATS)

for i, s in enumerate(stages.STAGES, start=1):
    with st.container(border=True):
        st.markdown(f"#### {i}. {s.name}")
        st.markdown(f"**When:** {s.timing}")
        c1, c2, c3 = st.columns(3)
        c1.markdown(f"**In the lung**\n\n{s.lung}")
        c2.markdown(f"**On the radiograph**\n\n{s.radiograph}")
        c3.markdown(f"**Symptoms**\n\n{s.symptoms}")

st.markdown("#### Sources")
st.markdown("\n".join(f"{i}. {src}" for i, src in enumerate(stages.SOURCES, start=1)))
