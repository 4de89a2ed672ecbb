"""Log-probabilities in the two OpenAI shapes: the legacy completions one (`tokens`,
`token_logprobs`, `top_logprobs`, `text_offset`; what lm-evaluation-harness reads) and the chat
one (`content: [{token, logprob, bytes, top_logprobs}]`), from the backends' TokenLogprobs."""
from __future__ import annotations

from collections.abc import Callable

from tunelab.serve.backend import TokenLogprob
from tunelab.serve.schemas import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob


def completion_logprobs(tokens: list[TokenLogprob], shown: Callable[[int], str], visible: Callable[[int], str],
                        start: int = 0) -> CompletionLogprobs:
    """The legacy shape. `shown(token)`: how a token is listed (special tokens by name);
    `visible(token)`: what it adds to the choice's text (special tokens add nothing), for the
    offsets, which begin at `start`. A token's top_logprobs hold its alternatives and the token
    itself, so a greedy token's logprob equals the best value there."""
    offsets, position = [], start
    for token in tokens:
        offsets.append(position)
        position += len(visible(token.token))
    tops = []
    for token in tokens:
        if token.logprob is None:
            tops.append(None)
            continue
        top = {shown(alternative): value for alternative, value in token.top}
        top.setdefault(shown(token.token), token.logprob)
        tops.append(top)
    return CompletionLogprobs(tokens=[shown(t.token) for t in tokens], token_logprobs=[t.logprob for t in tokens],
                              top_logprobs=tops, text_offset=offsets)


def chat_logprobs(tokens: list[TokenLogprob], token_text: Callable[[int], str]) -> ChatLogprobs:
    def entry(token: int, logprob: float) -> dict:
        text = token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8", "replace"))}

    return ChatLogprobs(content=[
        ChatTokenLogprob(**entry(t.token, t.logprob), top_logprobs=[TopLogprob(**entry(a, v)) for a, v in t.top])
        for t in tokens if t.logprob is not None])


def label_logprobs(label: str, probabilities: dict[str, float], top: int) -> list[TokenLogprob]:
    """A classifier's answer as one 'token' (its label) with the labels as alternatives; the
    labels stand in for token ids through `labels.index`."""
    import math
    labels = list(probabilities)
    ranked = sorted(labels, key=probabilities.get, reverse=True)[:top]
    log = {name: math.log(max(probabilities[name], 1e-45)) for name in labels}
    return [TokenLogprob(labels.index(label), log[label], [(labels.index(name), log[name]) for name in ranked])]
