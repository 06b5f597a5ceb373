"""Decoder language models: time to first token, prefill and decode speed per context length.

A case is a decoder when the controller sends ``"task": "generate"`` (the suite declares the
model ``architecture: decoder``). Such a model takes token ids ``[1, T]`` (int) as its one
input and returns logits ``[1, T, vocab]`` (or ``[1, vocab]`` for the last position). ``T``
is either dynamic (the prompt is fed as it is) or fixed, as in exports without a KV cache
(``zoo/tiny_gpt.onnx``: 128): the prompt then sits left-aligned in a zero-padded window, and
causal attention keeps the padding from touching the positions that matter.

For each length L in ``context_tokens``, on seeded random tokens:
- ``ttft_ms``: one forward pass over L tokens and the pick of the first new token (prefill),
  the median of ``generation_runs`` after two untimed runs;
- ``prefill_tokens_per_s`` = L / ttft;
- ``decode_tokens_per_s``: ``decode_tokens`` greedy steps after the prompt, each a forward
  pass over everything so far (sliding the window once it is full), tokens per second, the
  median over ``generation_runs``.
Models without a KV cache recompute the whole window at every step, and a fixed window costs
the same at every L: the figures show what this export of the model costs, not what the
architecture could do with a cache.
"""

import time
from typing import List, Optional

import numpy as np

from fleet_agent import runtimes
from fleet_agent.protocol import GenerationEntry, Settings


class GenerateError(Exception):
    """The model or the settings do not fit the decoder protocol (message says why)."""


_WARMUP_RUNS = 2


class Decoder:
    def __init__(self, session: runtimes.Session) -> None:
        if len(session.inputs) != 1 or len(session.inputs[0][1]) != 2:
            raise GenerateError(
                "a decoder model takes one input of token ids [1, T]; this one takes {}".format(
                    ", ".join("{}{}".format(n, list(s)) for n, s, _ in session.inputs)
                )
            )
        name, shape, dtype = session.inputs[0]
        if not np.issubdtype(dtype, np.integer):
            raise GenerateError(
                "a decoder model takes integer token ids; {} is {}".format(
                    name, np.dtype(dtype).name
                )
            )
        self.session = session
        self.window: Optional[int] = shape[1]
        self.dtype = dtype
        self.vocab = int(self.session.run(self._feed(np.zeros(1, dtype=np.int64)))[0].shape[-1])

    def _feed(self, tokens: np.ndarray) -> runtimes.Feed:
        if self.window is None:
            ids = tokens[None, :]
        else:
            ids = np.zeros((1, self.window), dtype=np.int64)
            ids[0, : len(tokens)] = tokens
        return self.session.make_feed([ids])

    def next_logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits for the token after ``tokens`` (the last ``window`` of them)."""
        if self.window is not None and len(tokens) > self.window:
            tokens = tokens[-self.window :]
        logits = self.session.run(self._feed(tokens))[0]
        row: np.ndarray = logits[0, len(tokens) - 1] if logits.ndim == 3 else logits[0]
        return row

    def measure(self, context: int, decode_tokens: int, runs: int, seed: int) -> GenerationEntry:
        if self.window is not None and context > self.window:
            raise GenerateError(
                "context_tokens {} is longer than the model's fixed context of {} tokens".format(
                    context, self.window
                )
            )
        prompt = np.random.default_rng(seed).integers(0, self.vocab, size=context)
        clock = time.perf_counter_ns
        ttft: List[float] = []
        for i in range(_WARMUP_RUNS + runs):
            t0 = clock()
            int(np.argmax(self.next_logits(prompt)))
            if i >= _WARMUP_RUNS:
                ttft.append((clock() - t0) / 1e9)
        rates: List[float] = []
        for _ in range(runs):
            tokens = list(prompt)
            t0 = clock()
            for _ in range(decode_tokens):
                tokens.append(int(np.argmax(self.next_logits(np.asarray(tokens)))))
            rates.append(decode_tokens / ((clock() - t0) / 1e9))
        first = float(np.median(ttft))
        return {
            "context_tokens": float(context),
            "ttft_ms": first * 1e3,
            "prefill_tokens_per_s": context / first,
            "decode_tokens_per_s": float(np.median(rates)),
            "decode_tokens": float(decode_tokens),
        }


def measure(session: runtimes.Session, settings: Settings) -> List[GenerationEntry]:
    """One entry per context length in ``settings["context_tokens"]``."""
    decoder = Decoder(session)
    return [
        decoder.measure(
            context,
            settings["decode_tokens"],
            settings["generation_runs"],
            seed=settings["seed"],
        )
        for context in settings["context_tokens"]
    ]
