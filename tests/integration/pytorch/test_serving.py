"""test_serving's ensemble, chat, tools, stop words, cancellation and concurrency, through the `pytorch` variant."""

from tests.integration.test_serving import (
    batch_metrics,
    test_a_cancelled_queued_request_ends_while_the_batch_and_the_queue_go_on,
    test_cancellation_frees_the_batch_slots,
    test_chat_answers_from_the_trained_model,
    test_chat_stream_equals_the_completion_for_the_same_seed,
    test_ensemble_stop_words_end_the_text,
    test_ensemble_streams_the_same_text_it_returns_whole,
    test_sixteen_concurrent_streams_all_complete_correctly,
    test_stop_strings_cut_the_answer,
    test_tool_call_then_tool_result_conversation,
    tok,
)

__all__ = [
    "batch_metrics",
    "test_a_cancelled_queued_request_ends_while_the_batch_and_the_queue_go_on",
    "test_cancellation_frees_the_batch_slots",
    "test_chat_answers_from_the_trained_model",
    "test_chat_stream_equals_the_completion_for_the_same_seed",
    "test_ensemble_stop_words_end_the_text",
    "test_ensemble_streams_the_same_text_it_returns_whole",
    "test_sixteen_concurrent_streams_all_complete_correctly",
    "test_stop_strings_cut_the_answer",
    "test_tool_call_then_tool_result_conversation",
    "tok",
]
