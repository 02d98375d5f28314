"""Checks on a decoded image before and around the classifier: the scope gate (:mod:`.scope`) and the lung fields
(:mod:`.lungs`). Compute only: arrays in, arrays and codes out."""
