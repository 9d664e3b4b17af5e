"""Operations on top of the build: `nemo-serve` (the Triton launcher), `make demo` and `make gpu-check`.

Imports only go down: this package uses nemo_build, nemo_client and nemo_protocol; nothing below it imports it.
"""
