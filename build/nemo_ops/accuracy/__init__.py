"""``nemo-accuracy`` (``python -m nemo_ops.accuracy``): the seed's accuracy claims measured through a deployment.

lm-eval's ``local-completions`` model sends every request to the gateway's ``/v1/completions``, tokenizing through
the gateway (``tokenizer_backend=remote``: its ``/tokenize``, ``/detokenize`` and ``/tokenizer_info`` serve the
Tekken file, so nothing is downloaded from the Hugging Face hub). Loglikelihood tasks (multiple choice) need the
prompt's log probabilities (``echo`` + ``logprobs``), which a GPU deployment returns only from an engine built with
``gather_context_logits`` (the ``-eval`` profiles); generation tasks need nothing more than a completion.

``run`` measures one deployment on the seed's Table 1 tasks (or local task files) and keeps every sample's score;
``report`` writes the table beside the seed's figures, and with an FP8 and a BF16 run the FP8 − BF16 difference of
each task with its 95% confidence interval from the paired per-sample scores (paired bootstrap).
"""
