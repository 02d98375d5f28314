"""Training (needs the ``train`` extra: TensorFlow, Keras, scikit-learn): the networks (:mod:`.networks`), data and
augmentation, the three trainers (``train``, ``train_lungs``, ``train_scope``), robustness measurements, the TFLite
export (:mod:`.export`) and the reference Grad-CAM. The app and the CLI never import this package."""
