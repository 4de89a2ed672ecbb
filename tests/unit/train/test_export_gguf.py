"""`tunelab export RUN --format gguf`: a tiny Llama run (full fine-tune and LoRA) written as GGUF
with llama.cpp's gguf package, read back by transformers' GGUF reader and compared with the run
on its 50 test prompts; the Ollama Modelfile's template rendered against the chat template; and
the refusals (non-Llama model, unknown quant, missing files) that leave nothing behind."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from run_helpers import chat, train_config, write_prepared
from tiny_models import build_tiny_llama, make_task_examples
from tunelab.errors import TunelabError
from tunelab.export import gguf as gguf_export
from tunelab.train.run import run as train

TOKENIZER = Path(__file__).resolve().parents[2] / "assets" / "tiny-chat-tokenizer"


@pytest.fixture(scope="module", autouse=True)
def no_memory_preflight():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tunelab.train.run.preflight_memory", lambda *args, **kwargs: None)
        yield


def copy_task(records: list[dict]) -> list[dict]:
    """The word-reversal records of tiny_models turned into "answer with the word itself"."""
    return [chat(r["messages"][0]["content"], r["messages"][0]["content"]) for r in records]


def prepared(root: Path, records: list[dict], test: list[dict]) -> Path:
    """train/val and a 50-record test split, as `data prepare` writes them."""
    data = write_prepared(root / "data", records, test[:8])
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return data


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """A 2-layer Llama (hidden 128) fully fine-tuned to copy a word: ~250 steps, and its greedy
    answers on 50 held-out words differ from prompt to prompt and are decisive, as a trained
    model's are (a random or barely trained model's answers are the same token on every prompt,
    or flip at near-ties that f16 rounding decides)."""
    from transformers import AutoTokenizer
    root = tmp_path_factory.mktemp("gguf-full")
    base = build_tiny_llama(root / "base", AutoTokenizer.from_pretrained(TOKENIZER), hidden=128, layers=2, heads=4,
                            max_positions=128)
    train_words = make_task_examples(2000, seed=0)
    held_out = make_task_examples(50, seed=1, exclude={r["messages"][0]["content"] for r in train_words})
    data = prepared(root, copy_task(train_words), copy_task(held_out))
    train(train_config(base, root / "run", data=str(data), method="full", epochs=4, lr=1e-3, batch_size=32,
                       max_length=32, logging_steps=50))
    return root / "run"


@pytest.fixture(scope="module")
def lora_run(full_run, tmp_path_factory) -> Path:
    """A LoRA adapter on the copying model, trained to reverse the word instead: the merge changes
    the answers, so a GGUF file without the adapter folded in would fail the comparison."""
    root = tmp_path_factory.mktemp("gguf-lora")
    data = prepared(root, make_task_examples(1000, seed=2), make_task_examples(50, seed=1))
    train(train_config(full_run, root / "run", data=str(data), method="lora", epochs=1, lr=5e-3, batch_size=32,
                       max_length=32, logging_steps=50, lora={"r": 16, "alpha": 32}))
    return root / "run"


def answers_of(model, tokenizer, conversations, eos: int) -> list[list[int]]:
    out = []
    with torch.inference_mode():
        for messages in conversations:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=gguf_export.MAX_NEW_TOKENS, eos_token_id=eos, pad_token_id=eos)
            out.append(generated[0, ids.shape[1]:].tolist())
    return out


def held_out_conversations(run_dir: Path) -> list[list[dict]]:
    rows = [json.loads(line) for line in (Path(run_dir).parent / "data" / "test.jsonl").read_text().splitlines()]
    return [r["messages"][:-1] for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_f16_gguf_reads_back_with_the_runs_greedy_answers_on_its_50_test_prompts(kind, full_run, lora_run):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = full_run if kind == "full" else lora_run
    result = gguf_export.run(run_dir)

    out = run_dir / "gguf"
    assert result.out_dir == out
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "manifest.json", "model-f16.gguf"]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no stage or scratch left
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "export" and manifest["config"] == {"format": "gguf", "quant": "f16"}
    assert manifest["source_run"] == str(run_dir.resolve()) and manifest["checks_passed"] is True
    greedy = manifest["checks"]["greedy"]
    assert greedy["prompt_source"] == "test" and greedy["prompts"] == 50 and greedy["agreement"] == 1.0
    assert (manifest["merge_check"] is not None) == (kind == "lora")

    # checked independently: transformers' GGUF reader against the run itself (PEFT for the adapter)
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    read_tokenizer = AutoTokenizer.from_pretrained(out, gguf_file="model-f16.gguf")
    assert read_tokenizer.chat_template == tokenizer.chat_template
    run_model = (AutoPeftModelForCausalLM if kind == "lora" else AutoModelForCausalLM).from_pretrained(
        str(run_dir)).eval()
    read_model = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-f16.gguf", dtype=torch.float32).eval()
    conversations = held_out_conversations(run_dir)
    assert len(conversations) == 50
    expected = answers_of(run_model, tokenizer, conversations, tokenizer.eos_token_id)
    assert answers_of(read_model, read_tokenizer, conversations, tokenizer.eos_token_id) == expected
    assert len({tuple(a) for a in expected}) >= 40  # the answers depend on the prompt: the comparison has teeth
    if kind == "lora":  # and the adapter is in the file: the base alone answers otherwise
        base = AutoModelForCausalLM.from_pretrained(full_run).eval()
        changed = sum(a != b for a, b in zip(answers_of(base, tokenizer, conversations, tokenizer.eos_token_id),
                                             expected))
        assert changed >= 10, changed


@pytest.mark.slow
def test_q8_0_reports_its_agreement_rate(full_run, tmp_path, capsys):
    result = gguf_export.run(full_run, quant="q8_0", out_dir=tmp_path / "q8", min_agreement=0.0)

    manifest = json.loads((tmp_path / "q8" / "manifest.json").read_text())
    greedy = manifest["checks"]["greedy"]
    with capsys.disabled():
        print(f"\nq8_0 greedy agreement with the run: {greedy['same_answers']}/{greedy['prompts']} "
              f"= {greedy['agreement']:.3f}")
    assert greedy["prompts"] == 50 and 0.0 <= greedy["agreement"] <= 1.0
    assert f"{greedy['agreement']:.0%}" in result.message
    import gguf
    reader = gguf.GGUFReader(str(tmp_path / "q8" / "model-q8_0.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"


@pytest.mark.slow
def test_q8_0_below_the_agreement_floor_is_refused(full_run, tmp_path):
    with pytest.raises(TunelabError, match=r"greedy answer on only \d+ of 50 test prompts.*nothing was written"):
        gguf_export.run(full_run, quant="q8_0", out_dir=tmp_path / "q8", min_agreement=1.01)
    assert list(tmp_path.iterdir()) == []


def test_the_modelfile_carries_the_template_and_stop_token(tiny_llama, tmp_path):
    gguf_export.run(tiny_llama, out_dir=tmp_path / "g")
    text = (tmp_path / "g" / "Modelfile").read_text()
    assert text.startswith("FROM ./model-f16.gguf\n")
    assert 'PARAMETER stop "<|end|>"' in text
    go = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "spell lamp"},
                {"role": "assistant", "content": "l a m p"}, {"role": "user", "content": "spell \"river\""}]
    from tunelab.export import go_template
    rendered = go_template.render(go, {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]})
    assert rendered == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|user|>\nspell \"river\"<|end|>\n<|assistant|>\n")


def test_q4_k_m_is_refused_in_one_sentence(tiny_llama, tmp_path):
    with pytest.raises(TunelabError, match=r"q4_k_m is not available: the gguf package can only dequantize Q4_K"):
        gguf_export.run(tiny_llama, quant="q4_k_m", out_dir=tmp_path / "q4")
    assert list(tmp_path.iterdir()) == []


def test_unknown_quant_is_refused(tiny_llama, tmp_path):
    with pytest.raises(TunelabError, match=r"unknown GGUF quant type 'q3'.*f16, q8_0"):
        gguf_export.run(tiny_llama, quant="q3", out_dir=tmp_path / "q3")
    assert list(tmp_path.iterdir()) == []


def test_a_bert_classifier_is_refused(tiny_bert_dir, tmp_path):
    records = [{"text": f"{['bad', 'fine', 'great'][i % 3]} {i}", "label": ["neg", "neu", "pos"][i % 3]}
               for i in range(9)]
    data = write_prepared(tmp_path / "data", records, records[:3])
    train(train_config(tiny_bert_dir, tmp_path / "run", data=str(data), max_steps=1))
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(TunelabError, match="GGUF export is for Llama-family causal LMs, and this run is a "
                                           "classifier of type 'bert'"):
        gguf_export.run(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused_before_converting(tmp_path):
    from tiny_models import build_task_tokenizer
    model_dir = build_tiny_llama(tmp_path / "model", build_task_tokenizer(tmp_path / "tokenizer"), hidden=32, layers=1)
    with pytest.raises(TunelabError, match=r"tokenizer \(BPE model, pre-tokenizer None\) is not a byte-level BPE"):
        gguf_export.run(model_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "tokenizer"] and not (model_dir / "gguf").exists()


@pytest.mark.parametrize("missing, message", [("model.safetensors", "has no weights"),
                                              ("tokenizer.json", "has no tokenizer"),
                                              ("config.json", "has no config.json")])
def test_a_run_with_missing_files_is_refused(tiny_llama, tmp_path, missing, message):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_llama, run_dir, ignore=shutil.ignore_patterns("gguf", "checkpoints"))
    (run_dir / missing).unlink()
    with pytest.raises(TunelabError, match=message):
        gguf_export.run(run_dir)
    assert not (run_dir / "gguf").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_output_directory_that_is_not_an_export_is_left_alone(tiny_llama, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(TunelabError, match="already exists and is not an earlier export"):
        gguf_export.run(tiny_llama, out_dir=taken)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_a_failed_read_back_leaves_an_earlier_export_in_place(full_run, tmp_path, monkeypatch):
    gguf_export.run(full_run, out_dir=tmp_path / "g")
    before = (tmp_path / "g" / "model-f16.gguf").read_bytes()
    # a broken writer: the Q rows left in transformers' layout, so llama.cpp's rotary pairs are wrong
    monkeypatch.setattr(gguf_export, "_permute", lambda weights, heads: weights)
    with pytest.raises(TunelabError, match=r"greedy answer on only \d+ of 50 .*nothing was written"):
        gguf_export.run(full_run, out_dir=tmp_path / "g")
    assert (tmp_path / "g" / "model-f16.gguf").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


@pytest.mark.slow
@pytest.mark.parametrize("kind, quant", [("full", "f16"), ("lora", "f16"), ("full", "q8_0")])
def test_llama_cpp_reads_the_file_with_the_runs_greedy_answers(kind, quant, full_run, lora_run, tmp_path, capsys):
    """Optional: llama.cpp itself (llama-cpp-python, which compiles llama.cpp from source, so it
    is not a dependency) loads the file, tokenizes the prompts as the run's tokenizer does and
    answers them greedily as the run does (f16: every answer; q8_0, where llama.cpp also
    quantizes activations: the agreement is printed and must reach the export's floor)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = full_run if kind == "full" else lora_run
    gguf_export.run(run_dir, quant=quant, out_dir=tmp_path / "g")
    llm = llama_cpp.Llama(model_path=str(tmp_path / "g" / f"model-{quant}.gguf"), n_ctx=128, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    conversations = held_out_conversations(run_dir)
    run_model = (AutoPeftModelForCausalLM if kind == "lora" else AutoModelForCausalLM).from_pretrained(str(run_dir))
    expected = answers_of(run_model.eval(), tokenizer, conversations, tokenizer.eos_token_id)
    same = 0
    for messages, answer in zip(conversations, expected):
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        assert tokens == tokenizer(prompt, add_special_tokens=False).input_ids
        got = []
        for token in llm.generate(tokens, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            got.append(token)
            if token == tokenizer.eos_token_id or len(got) == gguf_export.MAX_NEW_TOKENS:
                break
        same += got == answer
    with capsys.disabled():
        print(f"\nllama.cpp {kind} {quant}: greedy answers equal the run's on {same}/{len(expected)} prompts")
    assert same / len(expected) >= gguf_export.MIN_AGREEMENT[quant]
