"""pneumo's Streamlit app: ``streamlit run app.py`` (also the entry point on Streamlit Community Cloud).

Only navigation lives here; each page is a script in app_pages/ that wires widgets to pneumo functions.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the server log

import streamlit as st  # noqa: E402
from starlette.formparsers import MultiPartParser  # noqa: E402

from pneumo import config  # noqa: E402

# Streamlit's upload route parses uploads with Starlette, which spools any file over 1 MB to a temporary file on disk.
# Keep every accepted upload (at most maxUploadSize) in memory instead: uploads are never written to disk.
MultiPartParser.spool_max_size = (config.APP_MAX_UPLOAD_MB + 1) * 1024 * 1024

# a local favicon: Material-icon or emoji favicons are fetched from a CDN, which offline installations cannot reach
FAVICON = config.ASSETS_DIR / "favicon.png"
st.set_page_config(page_title="pneumo: chest X-ray demo", page_icon=str(FAVICON), layout="wide")

# The default page is served at "/"; its url_path is only an internal name, so "/analyze" gets its own hidden page
# that sends the visitor to the start page (a link or bookmark to /analyze must not say "Page not found").
analyze = st.Page("app_pages/analyze.py", title="Analyze", icon=":material/search:", url_path="start", default=True)


def _to_analyze() -> None:
    st.switch_page(analyze)


pages = [
    analyze,
    st.Page("app_pages/stages.py", title="Four stages", icon=":material/timeline:", url_path="stages"),
    st.Page("app_pages/model_card.py", title="Model card", icon=":material/description:", url_path="model-card"),
    st.Page("app_pages/about.py", title="About", icon=":material/info:", url_path="about"),
    st.Page(_to_analyze, title="Analyze", url_path="analyze", visibility="hidden"),
]
page = st.navigation(pages)
# Streamlit leaves 6rem above every page; 2.5rem keeps a result's heatmap on the first screen at 1280x800
st.html("<style>[data-testid='stMainBlockContainer']{padding-top:2.5rem}</style>")
st.sidebar.caption("Research demo, not a medical device.")
from app_pages.common import start_janitor, start_warm_up, track_session  # noqa: E402

track_session()  # the session's end then hands its memory back to the operating system
try:
    page.run()
finally:  # also when the page ends with st.stop() (the Analyze page before any upload)
    start_warm_up()  # after the first page has painted: load the models in the background, once per process
    start_janitor()  # memory housekeeping, once per process
