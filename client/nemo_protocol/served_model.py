"""The name the stack serves the model under unless told otherwise: NIM's name for Mistral NeMo 12B Instruct.

Clients send it as `model`; the repository, the gateway and the demo all default to this one value.
"""

DEFAULT_SERVED_MODEL_NAME = "mistralai/mistral-nemo-12b-instruct"
