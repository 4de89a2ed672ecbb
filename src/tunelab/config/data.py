"""`data:`: what `tunelab data prepare` and `tunelab data augment` do to records."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunelab.config.base import Section


DataFormat = Literal[
    "auto", "chat", "sharegpt", "alpaca", "prompt_completion", "preference", "openai_preference", "classification",
    "prompts"
]
PiiType = Literal["email", "phone", "credit_card", "iban", "us_ssn", "ip_address"]
ALL_PII_TYPES: list[str] = ["email", "phone", "credit_card", "iban", "us_ssn", "ip_address"]

class CleanConfig(Section):
    nfc: bool = Field(True, description="Normalise text to Unicode NFC.")
    whitespace: bool = Field(
        True,
        description="Normalise whitespace: CRLF to LF, odd spaces to plain ones, zero-width "
        "characters removed, trailing spaces and runs of blank lines trimmed (indentation kept).",
    )
    strip_html: bool = Field(False, description="Strip HTML tags and unescape entities.")


class PiiConfig(Section):
    mode: Literal["redact", "drop", "keep"] = Field(
        "redact",
        description="redact: replace with typed placeholders like <EMAIL>; drop: reject the "
        "record; keep: leave it, but still count it in the report.",
    )
    types: list[PiiType] = Field(
        default_factory=lambda: list(ALL_PII_TYPES), description="Kinds of PII to look for."
    )
    phone_region: str = Field(
        "US", description="Region assumed for phone numbers written without a +country code."
    )


class DedupConfig(Section):
    exact: bool = Field(True, description="Drop exact duplicates (after case and space folding).")
    near: bool = Field(True, description="Drop near duplicates found with MinHash LSH.")
    threshold: float = Field(
        0.8, gt=0, le=1, description="Word-shingle Jaccard similarity at which two records are near duplicates."
    )
    num_perm: int = Field(128, ge=16, description="MinHash permutations (more: slower, more exact).")
    shingle_words: int = Field(3, ge=1, description="Words per shingle for near-duplicate search.")


class SplitConfig(Section):
    val: float = Field(0.1, ge=0, lt=1, description="Share of records for the validation split.")
    test: float = Field(0.1, ge=0, lt=1, description="Share of records for the test split.")
    seed: int = Field(0, description="Seed of the content hash that assigns splits.")
    val_file: str | None = Field(None, description="Use this file as the validation split instead of splitting.")
    test_file: str | None = Field(None, description="Use this file as the test split instead of splitting.")

    @model_validator(mode="after")
    def _ratios_leave_training_data(self) -> "SplitConfig":
        if self.val + self.test >= 1:
            raise ValueError("split.val + split.test must be below 1 to leave training data")
        return self


AugmentEdit = Literal["synonym", "word_order", "punctuation", "casing", "entity_swap"]


class AugmentEndpointSettings(Section):
    url: str | None = Field(None, description="Base URL of an OpenAI-compatible API (e.g. http://127.0.0.1:8000/v1, a `tunelab serve`); None: no paraphrases or synthetic examples.")
    model: str = Field("default", description="Model name sent in each chat-completions request.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding the bearer token (unset or empty: none sent).")
    paraphrases: int = Field(1, ge=0, description="Paraphrases asked for per training record.")
    synthetic: int = Field(0, ge=0, description="New examples written from few-shot prompts (per label for classification, in all for chat).")
    shots: int = Field(5, ge=1, description="Training examples shown in each synthetic-example prompt.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of the endpoint.")
    max_tokens: int = Field(256, ge=1, description="Longest answer, in tokens.")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60, gt=0, description="Seconds to wait for one answer.")
    retries: int = Field(2, ge=0, description="Retries of a request that failed to connect, timed out or got 408/429/5xx.")
    max_unusable: float = Field(0.2, ge=0, le=1, description="Stop, writing nothing, when more than this share of answers is unusable (empty, the input repeated, unparsable).")


class AugmentConfig(Section):
    edits: list[AugmentEdit] = Field(
        default_factory=lambda: ["synonym", "word_order", "punctuation", "casing", "entity_swap"],
        description="Rule-based edits combined in each variant (user turns only for chat; entity swaps apply to the whole conversation, numbers only in classification texts).")
    variants: int = Field(2, ge=0, description="Rule-based variants per training record (each a different random combination of edits).")
    templates: bool = Field(True, description="Chat records: re-phrase the first user message with an instruction template in each variant.")
    synonym_rate: float = Field(0.15, gt=0, le=1, description="Share of a text's words the synonym edit replaces (at least one).")
    seed: int = Field(0, description="Seed of the edits and of the examples shown in synthetic-example prompts.")
    endpoint: AugmentEndpointSettings = Field(default_factory=AugmentEndpointSettings, description="Paraphrases and synthetic examples from an OpenAI-compatible endpoint.")


class DataConfig(Section):
    inputs: list[str] = Field(default_factory=list, description="Input files (.jsonl .json .csv .tsv .parquet), saved datasets directories, or example:sentiment; the command line's inputs replace these.")
    out_dir: str | None = Field(None, description="Output directory of `tunelab data prepare` (--out sets it).")
    format: DataFormat = Field("auto", description="Input format: auto (detected per file from the keys), chat, sharegpt, alpaca, prompt_completion, preference, openai_preference (OpenAI's DPO file: input, preferred_output, non_preferred_output), classification or prompts (chat records ending with the user's turn, for rft).")
    text_column: str = Field("text", description="Column with the text, for classification data.")
    label_column: str = Field("label", description="Column with the label, for classification data.")
    group_column: str | None = Field(
        None, description="Column copied to meta.group (fairness slices), for classification data."
    )
    labels: list[str] | None = Field(
        None, description="Declared label set; records with other labels are rejected. None: labels as found."
    )
    encoding: str = Field("utf-8", description="Text encoding of the input files.")
    max_chars: int = Field(100_000, gt=0, description="Reject records longer than this many characters.")
    max_tokens: int | None = Field(
        None, gt=0, description="Reject records longer than this many tokens of data.tokenizer."
    )
    tokenizer: str | None = Field(
        None, description="Tokenizer (hub id or local path) for token counts and the chat-template audit."
    )
    end_token: str | None = Field(
        None, description="End-of-turn token the template audit expects after each assistant turn (default: the EOS token)."
    )
    audit_sample: int = Field(500, gt=0, description="Conversations checked in depth by the chat-template audit.")
    min_class_examples: int = Field(10, ge=1, description="Warn when a label has fewer training examples than this.")
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Text cleaning.")
    pii: PiiConfig = Field(default_factory=PiiConfig, description="PII detection and handling.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Duplicate removal.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/val/test split.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Synthetic training examples (`tunelab data augment`).")
    num_proc: int | None = Field(
        None, ge=1, description="Worker processes for the per-record work (default: all cores); the output does not depend on it."
    )
    engine: Literal["local", "ray"] = Field(
        "local", description="Where the per-record work runs: local (this machine's cores) or ray (a Ray cluster); same output."
    )
    ray_address: str | None = Field(
        None, description="With engine ray: the cluster (auto, HOST:PORT or ray://HOST:10001); unset starts a local head on 127.0.0.1."
    )


# the training tasks and methods, declared once: the config types, the CLI's help and the
# memory estimator all read these
