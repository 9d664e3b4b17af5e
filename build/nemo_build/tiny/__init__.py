"""The tiny NeMo-shaped test model (``nemo-build tiny-model``): the model (:mod:`.model`), the chat set it learns
by heart (:mod:`.chat`) and its training (:mod:`.train`)."""
