"""Decoder language models (fleet_agent.generate) on the zoo's tiny GPT, in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from jobs import make_case, settings

from fleet_agent import accuracy, generate, runtimes

ZOO = Path(__file__).resolve().parents[1] / "zoo"
GPT = ZOO / "tiny_gpt.onnx"
PROMPTS = ZOO / "tiny_gpt_prompts.npz"


@pytest.fixture(scope="module")
def session() -> runtimes.Session:
    return runtimes.open_session("onnxruntime", str(GPT), settings())


def test_the_decoder_knows_its_window_and_vocabulary(session):
    decoder = generate.Decoder(session)
    assert decoder.window == 128
    assert decoder.vocab == 96


def test_next_logits_read_the_last_real_position(session):
    decoder = generate.Decoder(session)
    prompts = np.load(PROMPTS)
    row, length = prompts["tokens"][3], int(prompts["lengths"][3])
    full = session.run({"tokens": row[None, :]})[0]
    np.testing.assert_array_equal(decoder.next_logits(row[:length]), full[0, length - 1])
    # Longer than the window: the last 128 tokens are what the model sees.
    long = np.arange(200) % 96
    np.testing.assert_array_equal(decoder.next_logits(long), decoder.next_logits(long[-128:]))


def test_figures_per_context_length(session):
    entries = generate.measure(
        session, settings(context_tokens=[16, 128], decode_tokens=4, generation_runs=3)
    )
    assert [e["context_tokens"] for e in entries] == [16.0, 128.0]
    for entry in entries:
        assert set(entry) == {
            "context_tokens",
            "ttft_ms",
            "prefill_tokens_per_s",
            "decode_tokens_per_s",
            "decode_tokens",
        }
        assert entry["ttft_ms"] > 0 and entry["decode_tokens_per_s"] > 0
        assert entry["decode_tokens"] == 4.0
        assert entry["prefill_tokens_per_s"] == pytest.approx(
            entry["context_tokens"] / (entry["ttft_ms"] / 1e3)
        )
        # How a decode step's cost compares with the prefill's is a timing figure, which
        # the machine's load can move either way: that is for bench/, not for a test.


def test_a_context_longer_than_the_window_is_refused(session):
    with pytest.raises(generate.GenerateError, match="context_tokens 200 is longer than the"):
        generate.measure(session, settings(context_tokens=[200]))


def test_a_model_that_is_not_a_decoder_is_refused():
    cnn = runtimes.open_session("onnxruntime", str(ZOO / "digits_cnn.onnx"), settings())
    with pytest.raises(generate.GenerateError, match=r"one input of token ids \[1, T\]"):
        generate.Decoder(cnn)


def test_next_token_accuracy_on_the_prompt_set(session, tmp_path):
    case = make_case(
        "gpt", GPT, dataset=str(PROMPTS), save_outputs=str(tmp_path / "ref.npy"), task="generate"
    )
    fields = accuracy.evaluate(session, case)
    assert fields["accuracy_samples"] == 32.0
    # The zoo measures 0.4862 over every position; the last positions alone are 32 samples.
    assert 0.25 < fields["accuracy_top1"] <= fields["accuracy_top5"] <= 1.0
    assert np.load(tmp_path / "ref.npy").shape == (32, 96)
