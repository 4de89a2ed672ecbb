"""Request and response bodies of the HTTP API: the OpenAI chat/completions/models shapes that
existing clients send and parse, tunelab's classification bodies, and the OpenAI error shape.

Requests forbid unknown fields, so a client relying on a feature tunelab does not offer (tools,
penalties, suffix) hears so in a 400 instead of getting an answer that silently ignored it. Every
string field is checked to be encodable text (JSON can carry lone UTF-16 surrogates, which are
not): such a request is a 400 naming the field, never a failure further in.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

MAX_CHOICES = 8
MAX_STOP_SEQUENCES = 4
MAX_PROMPTS = 32
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # no ':' (it names a task: ID:TASK)
MAX_LOGPROBS = 20  # alternatives per token (vLLM's default ceiling; OpenAI's legacy API allowed 5)


def _encodable(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"); they are not text, and tokenizers and SQLite
    # would fail on them far from the request: refuse them here, as a 400
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone UTF-16 surrogate such as \\ud800)") from None
    return text


def _whole_number(value):
    # JSON Schema counts 2.0 as an integer; strict validation would not, so 2.0 becomes 2 (a bool
    # stays a bool and is refused: true is not a number)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Text = Annotated[str, AfterValidator(_encodable)]


class Integer:
    """`Integer[low, high]`: an int in [low, high] that also takes 2.0 for 2 (bounds inside the
    type, so the OpenAPI schema shows them as minimum/maximum)."""

    def __class_getitem__(cls, bounds):
        low, high = bounds
        return Annotated[int, Field(ge=low, le=high), BeforeValidator(_whole_number)]


StopText = Annotated[str, Field(min_length=1), AfterValidator(_encodable)]
TokenId = Integer[0, None]  # the OpenAPI schema states the served model's vocabulary as its maximum


class Strict(BaseModel):
    # no unknown fields, and no coercion: `"seed": true` or `"n": "2"` is an error, as the schema says
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(Strict):
    type: Literal["text"] = Field(description="Only text parts are supported.")
    text: Text = Field(description="The text of this part.")


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"] = Field(description="Author of the message.")
    content: Text | list[TextPart] = Field(description="The message text, or a list of text parts.")
    name: Text | None = Field(None, description="Accepted for compatibility; not shown to the model.")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(Strict):
    include_usage: bool = Field(False, description="Send a last chunk with the token usage of the request.")


class SamplingFields(Strict):
    model: Text = Field(description="Served model or adapter id (see GET /v1/models); `ID:TASK` names the task "
                                    "of a multi-task run too.")
    task: Text | None = Field(None, description="Task of a multi-task run whose input prefix applies (see the "
                                                "`tasks` of GET /v1/models).")
    max_tokens: Integer[1, None] | None = Field(None, description="Most tokens to generate (the server caps it).")
    temperature: float | None = Field(
        None, ge=0, le=2, description="0: greedy and cacheable; default: the model's generation config.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass (with temperature > 0).")
    n: Integer[1, MAX_CHOICES] = Field(1, description="Choices to generate for each prompt.")
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_SEQUENCES)] | None = Field(
        None, description="Up to 4 strings that end the generation.")
    seed: Integer[0, 2**53 - 1] | None = Field(None, description="Seed for sampling; same seed, same answer.")
    stream: bool = Field(False, description="Send the answer as server-sent events ending with [DONE].")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    user: Text | None = Field(None, description="End-user id; with a canary on, the key that keeps this user on "
                                               "one version.")

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: Integer[1, None] | None = Field(None, description="Newer name of max_tokens.")
    logprobs: bool = Field(False, description="Return each generated token's log-probability.")
    top_logprobs: Integer[0, MAX_LOGPROBS] | None = Field(
        None, description="Most likely alternatives to return per token (with logprobs: true).")

    def max_tokens_fields(self) -> dict[str, int | None]:
        return {"max_tokens": self.max_tokens, "max_completion_tokens": self.max_completion_tokens}

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def top_logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


Prompt = Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)] | \
    Annotated[list[TokenId], Field(min_length=1)] | \
    Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1, max_length=MAX_PROMPTS)]


class CompletionRequest(SamplingFields):
    prompt: Text | Prompt = Field(
        description="Prompt text, a list of prompts (one choice set each), the token ids of one prompt, or a list "
                    "of token-id prompts.")
    echo: bool = Field(False, description="Put the prompt before the completion in the text (and its tokens in "
                                          "logprobs).")
    logprobs: Integer[0, MAX_LOGPROBS] | None = Field(
        None, description="Return each token's log-probability and this many most likely alternatives.")

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: its text, or its token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(item, int) for item in self.prompt):
            return [list(self.prompt)]
        return list(self.prompt)

    def max_tokens_fields(self) -> dict[str, int | None]:
        return {"max_tokens": self.max_tokens}

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs


class ClassifyRequest(Strict):
    text: Text = Field(description="Text to classify.")
    model: Text | None = Field(None, description="Served model id (default: the served model); `ID:TASK` names "
                                                 "the task of a multi-task run too.")
    task: Text | None = Field(None, description="Task of a multi-task run whose input prefix applies.")
    explain: bool = Field(False, description="Also return the predicted label's token attributions "
                                             "(Integrated Gradients: about 30 forward passes of extra work).")
    user: Text | None = Field(None, description="End-user id; with a canary on, the key that keeps this user on "
                                               "one version.")


class FeedbackRequest(Strict):
    id: Text = Field(min_length=1, description="The `id` of an earlier response (chat, completion, classify).")
    label: Text | None = Field(None, description="The correct label (classification).")
    corrected: Text | None = Field(None, description="A corrected answer (generative).")
    rating: float | None = Field(
        None, ge=-1, le=5, description="Thumbs (+1 up, -1 down) or stars (1 to 5); rating_scale says which.")
    rating_scale: Literal["thumbs", "stars"] | None = Field(
        None, description="thumbs or stars (default: thumbs for +1/-1, stars otherwise).")
    preferred: Text | None = Field(None, description="An answer preferred to the one served (a DPO pair with it).")
    comment: Text | None = Field(None, description="Free text.")
    annotator: Text | None = Field(None, description="Who gave the feedback.")


class FeedbackReceipt(BaseModel):
    id: str = Field(description="The response the feedback is about.")
    object: Literal["feedback"] = "feedback"
    stored: bool = Field(description="Queued for the prediction log's feedback table, joined to its request.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChatLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str = Field(description="Version of the model that answered.")
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy completions shape: one entry per token, the prompt's first (with echo)."""
    tokens: list[str]
    token_logprobs: list[float | None] = Field(description="None for the prompt's first token.")
    top_logprobs: list[dict[str, float] | None] = Field(description="The most likely tokens and the chosen one.")
    text_offset: list[int] = Field(description="Where each token starts in the choice's text.")


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str = Field(description="Version of the model that answered.")
    choices: list[CompletionChoice]
    usage: Usage


class TokenAttribution(BaseModel):
    token: str = Field(description="The word as it appears in `text` (word pieces merged).")
    start: int = Field(description="Character offset in `text` where the word starts.")
    end: int = Field(description="Character offset in `text` just after the word.")
    score: float = Field(description="Contribution, in nats, to the predicted label's log-odds: positive pushes "
                                     "towards the label, negative away from it.")


class Classification(BaseModel):
    id: str
    object: Literal["classification"] = "classification"
    created: int
    model: str
    model_version: str = Field(description="Version of the model that answered.")
    label: str
    confidence: float = Field(description="Probability of the predicted label.")
    probabilities: dict[str, float] = Field(description="Probability of every label.")
    explanation: list[TokenAttribution] | None = Field(
        None, description="With `explain: true`: every word of the text (up to the model's length) with its "
                          "attribution to the predicted label, in text order.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tunelab"
    root: str = Field(description="The run this id serves (its directory's name, never a path).")
    parent: str | None = Field(None, description="For an adapter: the served base model id.")
    version: str = Field(description="Version of the run this id serves (an adapter: the served model's).")
    task: str = Field(description="generative or classification.")
    tasks: list[str] = Field(default_factory=list, description="Tasks of a multi-task run (name one with `task`).")
    context_length: int | None = Field(None, description="Prompt plus generated tokens, at most (None: not known "
                                                         "until it is loaded).")
    loaded: bool = Field(True, description="Loaded now; a registered id that is not is loaded by its first request.")


class RegisterModelRequest(Strict):
    id: Text = Field(pattern=MODEL_ID_PATTERN, description="The model id clients will name: 1-128 letters, digits, "
                                                           "'.', '_' or '-', starting with a letter or digit.")
    path: Text = Field(description="A run directory on the server: a LoRA adapter of the served model's base "
                                   "(served on it), or any other run (served as a model of its own).")


class DeletedModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    model_version: str | None = None
