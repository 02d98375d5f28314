"""Presentation: wording and formats (:mod:`.text`), the PDF/PNG report (:mod:`.report`), the model card's tables and
figures (:mod:`.modelcard`), the stages of pneumonia (:mod:`.pneumonia_stages`) and the maintainers' evaluations
(:mod:`.evaluation`). No Streamlit here: the pages in app_pages/ only lay these out."""
