"""Log probs, the stock clients (tritonclient's end-to-end gRPC requests, the OpenAI SDK through the gateway,
nemo_client) and client cancellation, through the `pytorch` variant."""

from tests.integration.test_client import (
    batch_metrics,
    client,
    test_closing_or_dropping_streams_cancels_them_on_the_server,
    test_tool_call_then_run_tools_round_trip,
)
from tests.integration.test_completions import (
    sdk,
    test_echo_and_logprobs_on_token_ids_as_lm_eval_asks,
    test_the_ensemble_takes_the_stock_inputs_and_returns_the_stock_outputs,
    test_the_stock_end_to_end_grpc_client_s_requests_work,
    tokenizer,
)
from tests.integration.test_direct_path import (
    direct,
    test_logprobs_are_the_same_on_both_paths_whole_and_streamed,
    through_chat,
)

__all__ = [
    "batch_metrics",
    "client",
    "direct",
    "sdk",
    "test_closing_or_dropping_streams_cancels_them_on_the_server",
    "test_echo_and_logprobs_on_token_ids_as_lm_eval_asks",
    "test_logprobs_are_the_same_on_both_paths_whole_and_streamed",
    "test_the_ensemble_takes_the_stock_inputs_and_returns_the_stock_outputs",
    "test_the_stock_end_to_end_grpc_client_s_requests_work",
    "test_tool_call_then_run_tools_round_trip",
    "through_chat",
    "tokenizer",
]
